"""End to end: the real `mlflow run . -e train` with 2 torchrun processes (gloo)."""

import os
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distrinews import checkpoint
from pipelines.train import torchrun_command
from tests.conftest import REPO, MlflowStore, train_run

pytestmark = pytest.mark.integration

EXPECTED_PARAMS = {
    "model",
    "data",
    "epochs",
    "batch_size",
    "lr",
    "warmup_ratio",
    "weight_decay",
    "max_length",
    "grad_accum",
    "seed",
    "val_fraction",
    "max_train_rows",
    "max_eval_rows",
    "output_dir",
    "nproc",
    "train_rows",
}


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (orphan check)."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_exactly_one_finished_run_with_params_and_tags(trained_run):
    store, experiment_id, _, _ = trained_run
    # Other tests add evaluate and export runs to this experiment; any other
    # run (say, one per rank) would show up here.
    runs = [
        r
        for r in store.runs(experiment_id)
        if r.data.tags.get("step") not in ("evaluate", "export")
    ]
    assert len(runs) == 1, "one run, from rank 0, inside the run mlflow created"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert set(run.data.params) >= EXPECTED_PARAMS
    assert run.data.params["nproc"] == "2"
    tags = run.data.tags
    assert tags["world_size"] == "2" and tags["backend"] == "gloo" and tags["device"] == "cpu"
    assert tags["threads_per_process"] == "1", "2 ranks on 2 cores: one thread each"
    assert tags["model"].endswith(str(Path(tags["model"]).name))
    assert "git_commit" in tags


def test_metrics_curves_and_plots_are_logged(trained_run):
    store, experiment_id, _, _ = trained_run
    run = train_run(store, experiment_id)
    client = store.client
    loss = client.get_metric_history(run.info.run_id, "train_loss")
    steps = [m.step for m in loss]
    assert steps == sorted(steps) and len(set(steps)) == len(steps) >= 4
    assert len(client.get_metric_history(run.info.run_id, "learning_rate")) == len(loss)
    assert all(
        m.value > 0 for m in client.get_metric_history(run.info.run_id, "samples_per_second")
    )
    val = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert len(val) == 3, "one validation per epoch"
    best = client.get_metric_history(run.info.run_id, "best_val_accuracy")
    assert best[-1].value == max(m.value for m in val)
    metrics = run.data.metrics
    for key in (
        "test_accuracy",
        "test_macro_f1",
        "test_f1_world",
        "test_f1_sports",
        "test_f1_business",
        "test_f1_sci_tech",
        "val_macro_f1",
        "val_loss",
    ):
        assert 0.0 <= metrics[key] <= (10.0 if key.endswith("loss") else 1.0), key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/training_curves.png"} <= artifacts


def test_both_ranks_ended_with_identical_weights(trained_run):
    store, experiment_id, _, _ = trained_run
    assert train_run(store, experiment_id).data.metrics["replica_weight_divergence"] == 0.0


def test_tiny_model_learned_something(trained_run):
    store, experiment_id, _, _ = trained_run
    run_id = train_run(store, experiment_id).info.run_id
    loss = [m.value for m in store.client.get_metric_history(run_id, "train_loss")]
    assert sum(loss[-3:]) / 3 < sum(loss[:3]) / 3 - 0.02, "training loss falls"
    val_loss = [m.value for m in store.client.get_metric_history(run_id, "val_loss")]
    assert val_loss[-1] < val_loss[0], "validation loss falls"


def test_logged_model_predicts_like_the_checkpoint(trained_run, small_data):
    store, experiment_id, output_dir, _ = trained_run
    run_id = train_run(store, experiment_id).info.run_id
    mlflow.set_tracking_uri(store.uri)
    texts = pd.read_parquet(small_data / "test.parquet")["text"].tolist()[:24]
    folder = checkpoint.latest_checkpoint(output_dir)
    assert folder is not None and folder.name == "epoch-3"
    reference = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    logged = mlflow.transformers.load_model(f"runs:/{run_id}/model", return_type="components")
    inputs = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        expected = reference(**inputs).logits
        actual = logged["model"].eval()(**inputs).logits
    torch.testing.assert_close(actual, expected)
    predictions = mlflow.pyfunc.load_model(f"runs:/{run_id}/model").predict(texts)
    expected_labels = [reference.config.id2label[i] for i in expected.argmax(-1).tolist()]
    assert list(predictions["label"]) == expected_labels


def test_no_orphan_processes(trained_run):
    _, _, output_dir, _ = trained_run
    assert processes_mentioning(str(output_dir)) == []


def test_rank0_alone_reports_progress(trained_run):
    _, _, _, result = trained_run
    assert "[rank 0]" in result.stderr and "[rank 1] " not in result.stderr
    assert "epoch 3/3" in result.stderr  # tqdm


def test_evaluate_entry_point_logs_to_the_train_run(trained_run, small_data):
    store, experiment_id, _, _ = trained_run
    source = train_run(store, experiment_id)
    result = store.mlflow_run("evaluate", "e2e", {"run_id": source.info.run_id, "data": small_data})
    assert result.returncode == 0, result.stderr[-3000:]
    train_metrics = store.client.get_run(source.info.run_id).data.metrics
    # Same model, same 200 test rows: the same accuracy (up to one borderline
    # text whose logits move with the batch's padding).
    assert abs(train_metrics["evaluate_test_accuracy"] - train_metrics["test_accuracy"]) <= 1 / 200
    children = [r for r in store.runs(experiment_id) if r.data.tags.get("step") == "evaluate"]
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    assert "test_macro_f1" in children[0].data.metrics
    plots = {a.path for a in store.client.list_artifacts(source.info.run_id, "plots")}
    assert "plots/evaluate_confusion_matrix.png" in plots


def test_resume_continues_the_same_run_from_the_saved_epoch(tmp_path, tiny_bert, small_data):
    store = MlflowStore(tmp_path)
    experiment_id = store.experiment("resume")
    output_dir = tmp_path / "checkpoints"
    common = {
        "model": tiny_bert,
        "data": small_data,
        "batch_size": 16,
        "lr": 3e-3,
        "output_dir": output_dir,
        "log_every": 2,
    }
    first = store.mlflow_run("train", "resume", {"nproc": 2, "epochs": 1} | common)
    assert first.returncode == 0, first.stderr[-3000:]
    run_id = train_run(store, experiment_id).info.run_id
    before = store.client.get_metric_history(run_id, "val_accuracy")
    # As a torchrun restart does: plain torchrun, same output_dir, resume on.
    command = torchrun_command(2, epochs=2, resume="true", **common)
    result = subprocess.run(
        command, cwd=REPO, env=store.env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "resuming from" in result.stderr and "epoch-1" in result.stderr
    assert "epoch 1/2" not in result.stderr and "epoch 2/2" in result.stderr
    assert train_run(store, experiment_id).info.run_id == run_id, "the checkpoint's run continues"
    after = store.client.get_metric_history(run_id, "val_accuracy")
    assert len(after) == 2
    assert (after[0].step, after[0].value) == (before[0].step, before[0].value)
    assert after[1].step > before[0].step
    assert store.client.get_run(run_id).info.status == "FINISHED"
    assert checkpoint.latest_checkpoint(output_dir).name == "epoch-2"
