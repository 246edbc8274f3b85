"""End to end: the real `mlflow run . -e train` with 2 torchrun processes (gloo)."""

import dataclasses

import mlflow
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distrinews import checkpoint
from distrinews.config import DataConfig, TrainConfig, parse_bool
from distrinews.runtime.cpu import available_cpus
from distrinews.tracking import git_commit
from tests.helpers import E2E_TRAINING, processes_mentioning, train_run

pytestmark = pytest.mark.integration


def test_exactly_one_finished_run_with_params_and_tags(trained_run, tiny_bert):
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
    params = run.data.params
    # Every setting is logged, those left at their defaults too (mlflow run
    # logs only the -P values it was given): the run says how it was trained.
    for group in (DataConfig(), TrainConfig()):
        for f in dataclasses.fields(group):
            if f.name not in E2E_TRAINING and f.name not in ("data", "output_dir"):
                default = getattr(group, f.name)
                parse = parse_bool if isinstance(default, bool) else type(default)
                assert parse(params[f.name]) == default, f.name
    # Worked out by the pipeline, not passed: 800 rows less the 5% validation share.
    assert params["train_rows"] == "760"
    tags = run.data.tags
    assert tags["world_size"] == "2" and tags["backend"] == "gloo" and tags["device"] == "cpu"
    # Each rank takes its share of the cores, at least one.
    assert tags["threads_per_process"] == str(max(1, available_cpus() // 2))
    assert tags["model"] == str(tiny_bert)
    assert tags["git_commit"] == git_commit() != "unknown"


def test_test_metrics_are_those_of_the_final_model(trained_run, small_data):
    """The logged test figures, recomputed here from the last checkpoint with scikit-learn."""
    store, experiment_id, output_dir, _ = trained_run
    metrics = train_run(store, experiment_id).data.metrics
    folder = checkpoint.latest_checkpoint(output_dir)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    test = pd.read_parquet(small_data / "test.parquet")
    with torch.no_grad():
        inputs = tokenizer(
            test["text"].tolist(),
            padding=True,
            truncation=True,
            max_length=128,
            return_tensors="pt",
        )
        predictions = model(**inputs).logits.argmax(-1).numpy()
    labels = test["label"].to_numpy()
    # Up to a borderline text or two, whose logits move with the batch's padding.
    assert metrics["test_accuracy"] == pytest.approx(accuracy_score(labels, predictions), abs=0.01)
    assert metrics["test_macro_f1"] == pytest.approx(
        f1_score(labels, predictions, average="macro"), abs=0.02
    )
    per_class = [metrics[f"test_f1_{name}"] for name in ("world", "sports", "business", "sci_tech")]
    assert metrics["test_macro_f1"] == pytest.approx(sum(per_class) / 4)


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
    assert len(client.get_metric_history(run.info.run_id, "val_macro_f1")) == 3
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
