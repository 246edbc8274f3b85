"""End to end: the real `mlflow run . -e train` with 2 torchrun processes (gloo)."""

import dataclasses
import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from devkit.mlflow_store import E2E_TRAINING, train_run
from devkit.processes import processes_mentioning
from distrinews.cli import parse_bool
from distrinews.config import (
    DataConfig,
    DistillConfig,
    FeedbackConfig,
    ModelConfig,
    TrainConfig,
)
from distrinews.mlflow_runs import git_commit
from distrinews.runtime.cpu import available_cpus
from distrinews.train import checkpoint
from distrinews.train.logged_models import logged_model_id


def test_exactly_one_finished_run_with_params_and_tags(trained_run, tiny_bert):
    store, experiment_id, _, result = trained_run
    # No warning that is not the user's to act on (PySpark's, imported by MLflow).
    assert "PySpark does not yet fully support" not in result.stderr
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
    # Tagged as classic ML: MLflow's UI opens it on the runs table, not the GenAI overview.
    kind = store.client.get_experiment(experiment_id).tags.get("mlflow.experimentKind")
    assert kind == "custom_model_development"
    params = run.data.params
    # Every setting is logged, those left at their defaults too (mlflow run
    # logs only the -P values it was given): the run says how it was trained.
    for group in (DataConfig(), TrainConfig()):
        for f in dataclasses.fields(group):
            if f.name not in E2E_TRAINING and f.name not in ("data", "output_dir"):
                default = getattr(group, f.name)
                parse = parse_bool if isinstance(default, bool) else type(default)
                assert parse(params[f.name]) == default, f.name
    # What the settings came to, beside them: 800 rows less the 5% validation share, ...
    effective = {k: params[k] for k in ("train_rows", "validation_rows", "test_rows")}
    assert effective == {"train_rows": "760", "validation_rows": "40", "test_rows": "200"}
    assert params["world_size"] == "2" and params["global_batch_size"] == "32"
    # Each rank takes its share of the cores, at least one.
    assert params["threads_per_process"] == str(max(1, available_cpus() // 2))
    assert params["compute_precision"] in ("bf16", "fp32")
    # Empty only where an optional setting was not used (no warm start, feedback, teacher).
    groups = (ModelConfig(), FeedbackConfig(), DistillConfig())
    unused = {f.name for group in groups for f in dataclasses.fields(group)}
    empty = {k for k, v in params.items() if v.strip("'\" ") == ""}
    optional = {"init_from", "feedback", "feedback_since", "feedback_until", "teacher"}
    assert empty == optional <= unused, "no other empty params"
    assert not {"experiment", "run_name"} & set(params)
    tags = run.data.tags
    assert tags["backend"] == "gloo" and tags["device"] == "cpu"
    assert tags["model"] == str(tiny_bert)
    assert tags["git_commit"] == git_commit() != "unknown"


def test_run_is_named_after_its_settings_in_its_experiment(trained_run, tiny_bert):
    store, experiment_id, _, _ = trained_run
    run = train_run(store, experiment_id)
    assert store.client.get_experiment(run.info.experiment_id).name == "e2e"
    assert run.info.run_name == f"{tiny_bert.name} lr1e-2 b16x2 e3"


def test_metrics_are_in_sections_with_epoch_and_samples_axes(trained_run):
    store, experiment_id, _, _ = trained_run
    run = train_run(store, experiment_id)
    keys = set(run.data.metrics)
    assert {"train/loss", "train/learning_rate", "val/accuracy", "val/best_accuracy"} <= keys
    assert {"test/accuracy", "test/macro_f1", "test/f1_sci_tech", "train/epoch"} <= keys
    sections = {key.split("/")[0] for key in keys if "/" in key}
    assert all("/" in key for key in keys) and sections <= {"train", "val", "test", "system"}, keys

    def history(key: str) -> dict[int, float]:
        return {m.step: m.value for m in store.client.get_metric_history(run.info.run_id, key)}

    epoch, seen = history("train/epoch"), history("train/samples_seen")
    step_metrics = history("train/loss").keys() | history("val/accuracy").keys()
    assert step_metrics <= epoch.keys() == seen.keys(), "an x value at every step metric's step"
    assert [epoch[s] for s in sorted(history("val/accuracy"))] == [1.0, 2.0, 3.0]
    # 760 rows an epoch, every one seen once per epoch over the two ranks.
    assert seen[max(seen)] == 3 * 760
    assert all(0 < epoch[s] <= 3 for s in epoch) and list(epoch.values()) == sorted(epoch.values())


def test_splits_are_logged_as_datasets(trained_run, small_data):
    store, experiment_id, _, _ = trained_run
    inputs = train_run(store, experiment_id).inputs.dataset_inputs
    logged = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in inputs
    }
    assert set(logged) == {"train", "validation", "test"}
    rows = {"train": 760, "validation": 40, "test": 200}
    for split, dataset in logged.items():
        assert dataset.name == f"{small_data.name}-{split}" and dataset.digest
        assert json.loads(dataset.profile)["num_rows"] == rows[split]
        assert json.loads(dataset.source)["uri"] == str(small_data)
        columns = {c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]}
        assert columns == {"text", "label"}
    assert len({d.digest for d in logged.values()}) == 3


def test_system_metrics_are_sampled(trained_run):
    store, experiment_id, _, _ = trained_run
    metrics = train_run(store, experiment_id).data.metrics
    assert 0 <= metrics["system/cpu_utilization_percentage"] <= 100
    assert metrics["system/system_memory_usage_megabytes"] > 0


def test_logged_model_has_its_test_metrics_and_an_input_example(trained_run, tiny_bert, small_data):
    store, experiment_id, _, _ = trained_run
    run = train_run(store, experiment_id)
    # The train run's model (an export run in this experiment logs an ONNX one too).
    (model,) = store.client.search_logged_models(
        [experiment_id], f"source_run_id = '{run.info.run_id}'"
    )
    assert model.name == f"{tiny_bert.name}-{small_data.name}"
    linked = {m.key: m for m in model.metrics if m.key.startswith("test/")}
    assert linked["test/accuracy"].value == run.data.metrics["test/accuracy"]
    assert {m.dataset_name for m in linked.values()} == {f"{small_data.name}-test"}
    assert {m.step for m in linked.values()} == {max(m.step for m in model.metrics)} != {0}
    mlflow.set_tracking_uri(store.uri)
    info = mlflow.models.get_model_info(f"models:/{model.model_id}")
    assert info.signature.inputs.to_dict() == [{"type": "string", "required": True}]
    assert info.saved_input_example_info["artifact_path"] == "input_example.json"
    # Its metadata names the model it came from, not a path on this machine.
    assert info.flavors["transformers"]["source_model_name"] == tiny_bert.name
    requirements = Path(model.artifact_location, "requirements.txt").read_text().split()
    assert [r.split("==")[0] for r in requirements] == [
        "mlflow",
        "torch",
        "transformers",
        "tokenizers",
    ]


def test_test_metrics_are_those_of_the_final_model(trained_run, small_data):
    """The logged test figures, recomputed here from the last checkpoint with scikit-learn."""
    store, experiment_id, output_dir, _ = trained_run
    run = train_run(store, experiment_id)
    metrics = run.data.metrics
    folder = checkpoint.latest_checkpoint(output_dir / run.info.run_id)
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
    assert metrics["test/accuracy"] == pytest.approx(accuracy_score(labels, predictions), abs=0.01)
    assert metrics["test/macro_f1"] == pytest.approx(
        f1_score(labels, predictions, average="macro"), abs=0.02
    )
    per_class = [metrics[f"test/f1_{name}"] for name in ("world", "sports", "business", "sci_tech")]
    assert metrics["test/macro_f1"] == pytest.approx(sum(per_class) / 4)


def test_metrics_curves_and_plots_are_logged(trained_run):
    store, experiment_id, _, _ = trained_run
    run = train_run(store, experiment_id)
    client = store.client
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    steps = [m.step for m in loss]
    assert steps == sorted(steps) and len(set(steps)) == len(steps) >= 4
    assert len(client.get_metric_history(run.info.run_id, "train/learning_rate")) == len(loss)
    assert all(
        m.value > 0 for m in client.get_metric_history(run.info.run_id, "train/samples_per_second")
    )
    val = client.get_metric_history(run.info.run_id, "val/accuracy")
    assert len(val) == 3, "one validation per epoch"
    best = client.get_metric_history(run.info.run_id, "val/best_accuracy")
    assert best[-1].value == max(m.value for m in val)
    assert len(client.get_metric_history(run.info.run_id, "val/macro_f1")) == 3
    # At the artifact root, where the UI's compare view finds them.
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "training_curves.png"} <= artifacts


def test_both_ranks_ended_with_identical_weights(trained_run):
    store, experiment_id, _, _ = trained_run
    metrics = train_run(store, experiment_id).data.metrics
    assert metrics["train/replica_weight_divergence"] == 0.0


def test_tiny_model_learned_something(trained_run):
    store, experiment_id, _, _ = trained_run
    run_id = train_run(store, experiment_id).info.run_id

    def values(key: str) -> list[float]:
        """In step order: the store returns a history in no set order."""
        history = store.client.get_metric_history(run_id, key)
        return [m.value for m in sorted(history, key=lambda m: m.step)]

    loss = values("train/loss")
    assert sum(loss[-3:]) / 3 < sum(loss[:3]) / 3 - 0.02, f"training loss falls: {loss}"
    val_loss = values("val/loss")
    assert val_loss[-1] < val_loss[0], f"validation loss falls: {val_loss}"


def test_logged_model_predicts_like_the_checkpoint(trained_run, small_data):
    store, experiment_id, output_dir, _ = trained_run
    run_id = train_run(store, experiment_id).info.run_id
    mlflow.set_tracking_uri(store.uri)
    texts = pd.read_parquet(small_data / "test.parquet")["text"].tolist()[:24]
    folder = checkpoint.latest_checkpoint(output_dir / run_id)
    assert folder is not None and folder.name == "epoch-3"
    reference = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    uri = f"models:/{logged_model_id(run_id)}"
    logged = mlflow.transformers.load_model(uri, return_type="components")
    inputs = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        expected = reference(**inputs).logits
        actual = logged["model"].eval()(**inputs).logits
    torch.testing.assert_close(actual, expected)
    predictions = mlflow.pyfunc.load_model(uri).predict(texts)
    expected_labels = [reference.config.id2label[i] for i in expected.argmax(-1).tolist()]
    assert list(predictions["label"]) == expected_labels


def test_no_orphan_processes(trained_run):
    _, _, output_dir, _ = trained_run
    assert processes_mentioning(str(output_dir)) == []


def test_rank0_alone_reports_progress(trained_run):
    _, _, _, result = trained_run
    assert "[rank 0]" in result.stderr and "[rank 1] " not in result.stderr
    assert "epoch 3/3" in result.stderr
    # Not a terminal: progress lines, not carriage-return bars.
    assert "\r" not in result.stderr


def test_evaluate_entry_point_scores_the_logged_model(trained_run, small_data):
    store, experiment_id, _, _ = trained_run
    source = train_run(store, experiment_id)
    result = store.mlflow_run("evaluate", "e2e", {"run_id": source.info.run_id, "data": small_data})
    assert result.returncode == 0, result.stderr[-3000:]
    (child,) = [r for r in store.runs(experiment_id) if r.data.tags.get("step") == "evaluate"]
    assert child.info.status == "FINISHED"
    assert child.info.run_name == f"evaluate {source.info.run_name}"
    assert child.data.tags["mlflow.parentRunId"] == source.info.run_id
    # Same model, same 200 test rows: the same accuracy (up to one borderline
    # text whose logits move with the batch's padding).
    accuracy = child.data.metrics["test/accuracy"]
    assert abs(accuracy - source.data.metrics["test/accuracy"]) <= 1 / 200
    # Linked to the model: its page lists the score beside the train run's.
    (model,) = store.client.search_logged_models(
        [experiment_id], f"source_run_id = '{source.info.run_id}'"
    )
    linked = [m for m in model.metrics if m.key == "test/accuracy"]
    assert {m.run_id for m in linked} == {source.info.run_id, child.info.run_id}
    artifacts = {a.path for a in store.client.list_artifacts(child.info.run_id)}
    assert "confusion_matrix.png" in artifacts
    assert store.client.get_run(source.info.run_id).data.metrics == source.data.metrics
