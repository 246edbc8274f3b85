"""End to end: `mlflow run . -e export` of a trained tiny model (and of an encoder without
its head): the run logged and linked, the version registered, int8 checked against PyTorch.

Where the step writes its folder: tests/unit/distrinews/export/test_step.py.
"""

import json

import onnx
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from devkit.mlflow_store import tracking_uri
from distrinews.runtime.labels import LABELS
from distrinews.runtime.model_source import ModelSource, local_model_folder
from distrinews.runtime.onnx_classifier import OnnxClassifier


def test_export_run_is_logged_and_linked(exported):
    store, train_run_id, folder, _ = exported
    (run,) = store.client.search_runs(
        [store.client.get_run(train_run_id).info.experiment_id], "tags.step = 'export'"
    )
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == run.data.tags["source_run_id"] == train_run_id
    # It says what it is and where it came from.
    train_name = store.client.get_run(train_run_id).info.run_name
    assert run.info.run_name.startswith(f"export {train_name} int8-")
    contexts = [t.value for d in run.inputs.dataset_inputs for t in d.tags]
    assert sorted(contexts) == ["test", "validation"]
    # Calibrated on the train run's own validation rows: its seed, its row count.
    train_params = store.client.get_run(train_run_id).data.params
    assert run.data.params["seed"] == train_params["seed"]
    assert run.data.params["validation_rows"] == train_params["validation_rows"]
    metrics = run.data.metrics
    for key in (
        "export/accuracy_pytorch_fp32",
        "export/accuracy_onnx_fp32",
        "export/accuracy_onnx_int8",
        "export/int8_agreement_with_pytorch",
        "export/latency_p50_ms_onnx_int8",
        "export/latency_p95_ms_pytorch_fp32",
        "export/size_mb_onnx_int8",
    ):
        assert key in metrics, key
    # fp32 ONNX is the same function as PyTorch: same accuracy to a text or so.
    assert (
        abs(metrics["export/accuracy_onnx_fp32"] - metrics["export/accuracy_pytorch_fp32"]) <= 0.01
    )
    assert metrics["export/size_mb_onnx_int8"] < metrics["export/size_mb_onnx_fp32"]
    assert sorted(p.name for p in folder.glob("*.onnx")) == ["model_optimized_quantized.onnx"]
    # An MLflow model of the run, registered as version 1 with its evidence.
    (version,) = store.client.search_model_versions("name = 'distrinews'")
    assert (str(version.version), version.run_id) == ("1", run.info.run_id)
    assert version.tags["source_run_id"] == train_run_id
    # The graph it made, in words, on the run and in the folder the server reads.
    graph = run.data.tags["quantization"]
    assert graph.startswith("dynamic int8 (") and "weights; O2 fusions" in graph
    assert json.loads((folder / "export_report.json").read_text())["quantization"] == graph
    assert version.tags["test_accuracy_int8"] == f"{metrics['export/accuracy_onnx_int8']:.4f}"
    # Its latency says on which CPU; its size how many layers (the tiny BERT's 2).
    assert "vCPUs" in version.tags["latency_cpu"] and version.tags["layers"] == "2"
    check_calibration(store, run, version, folder)
    with tracking_uri(store.uri):
        model_folder = local_model_folder(ModelSource(f"models:/distrinews/{version.version}"))
    files = {"config.json", "tokenizer.json", "export_report.json", "calibration.json"}
    assert files | {"reference_profile.json"} <= {p.name for p in model_folder.iterdir()}


def check_calibration(store, run, version, folder) -> None:
    """A temperature fitted, its ECE logged, tagged and drawn; the profile beside it."""
    metrics = run.data.metrics
    for key in ("ece_test", "ece_test_uncalibrated", "ece_validation", "temperature"):
        assert key in json.loads((folder / "export_report.json").read_text()), key
    assert 0 <= metrics["export/ece_test"] <= 1 and metrics["export/temperature"] > 0
    assert version.tags["ece"] == f"{metrics['export/ece_test']:.4f}"
    calibration = json.loads((folder / "calibration.json").read_text())
    assert calibration["temperature"] == metrics["export/temperature"]
    artifacts = [a.path for a in store.client.list_artifacts(run.info.run_id, "calibration")]
    assert artifacts == ["calibration/reliability.png"]
    profile = json.loads((folder / "reference_profile.json").read_text())
    assert profile["split"] == "validation"
    assert profile["rows"] == int(run.data.params["validation_rows"])
    assert sum(profile["predicted_labels"].values()) == pytest.approx(1.0)
    # Fitted on the labelled validation rows and their short copies: a curve per band of
    # token counts, each monotone, a share right at each point.
    accuracy_map = profile["accuracy_map"]
    assert len(accuracy_map["curves"]) == len(accuracy_map["token_edges"]) + 1 >= 2
    for curve in accuracy_map["curves"]:
        shares = curve["accuracy"]
        assert all(0 <= a <= b <= 1 for a, b in zip(shares, shares[1:], strict=False))
    texts = json.loads((folder / "reference_texts.json").read_text())
    assert 0 < len(texts) == min(1000, profile["rows"]) and all(isinstance(t, str) for t in texts)


def test_a_pretrained_encoder_exports_with_a_new_head(
    mlflow_store, tiny_bert, small_data, tmp_path
):
    """`-P checkpoint=` of a model without the AG News head, e.g. the default one, to time it."""
    folder = tmp_path / "timing-model"
    mlflow_store.experiment("timing")
    result = mlflow_store.mlflow_run(
        "export",
        "timing",
        {
            "checkpoint": tiny_bert,
            "data": small_data,
            "output": folder,
            "latency_texts": 5,
            "max_eval_rows": 50,
            "max_accuracy_drop": 100,  # an untrained head: its accuracy means nothing
        },
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "new, untrained head" in result.stderr
    labels = json.loads((folder / "config.json").read_text())["id2label"]
    assert tuple(labels.values()) == LABELS
    # Registered for the record, flagged so that promote refuses it.
    (version,) = mlflow_store.client.search_model_versions("name = 'distrinews'")
    assert version.tags["untrained_head"] == "true"
    assert OnnxClassifier(folder, threads=1).logits(["a test"]).shape == (1, len(LABELS))


def test_matmuls_are_quantized(exported):
    _, _, folder, reference = exported
    graph = onnx.load(str(next(folder.glob("*.onnx")))).graph
    ops = [node.op_type for node in graph.node]
    # Each Linear layer's weight product runs in int8: one integer MatMul per
    # layer, except that a QAttention covers the query, key and value layers.
    int8_linear_products = ops.count("MatMulInteger") + ops.count("DynamicQuantizeMatMul")
    int8_linear_products += 3 * ops.count("QAttention")
    linear_layers = sum(
        isinstance(m, torch.nn.Linear)
        for m in AutoModelForSequenceClassification.from_pretrained(reference).modules()
    )
    assert ops.count("QAttention") == 2, "attention fused and quantized in both layers"
    assert int8_linear_products >= linear_layers
    assert "MatMul" not in ops or all(
        not node.input[1].endswith("weight") for node in graph.node if node.op_type == "MatMul"
    ), "no fp32 weight MatMul left"


def test_export_fails_when_int8_loses_accuracy(exported, mlflow_store, small_data, tmp_path):
    """A checkpoint whose int8 model is useless: a FAILED export run, exit 2, one error line.

    One pooler unit is switched off (weights and bias 0: its output is exactly
    0) and the classifier weight reading it set to 1000. PyTorch fp32 is
    unchanged but for that unit; per-tensor int8 must then use a scale of
    1000/127, which rounds every other classifier weight to 0, so int8
    predicts one class for every text.
    """
    _, _, _, reference = exported
    model = AutoModelForSequenceClassification.from_pretrained(reference)
    with torch.no_grad():
        model.bert.pooler.dense.weight[0].zero_()
        model.bert.pooler.dense.bias[0] = 0.0
        model.classifier.weight[0, 0] = 1000.0
    model.save_pretrained(tmp_path / "fragile")
    AutoTokenizer.from_pretrained(reference).save_pretrained(tmp_path / "fragile")
    experiment_id = mlflow_store.experiment("fragile")
    params = {"checkpoint": tmp_path / "fragile", "data": small_data, "latency_texts": 5}
    params["output"] = tmp_path / "output"
    result = mlflow_store.mlflow_run("export", "fragile", params | {"max_accuracy_drop": 0})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "int8 accuracy" in errors[0], result.stderr[-3000:]
    runs = [r for r in mlflow_store.runs(experiment_id) if r.data.tags.get("step") == "export"]
    assert [r.info.status for r in runs] == ["FAILED"]
    metrics = runs[0].data.metrics
    assert metrics["export/accuracy_onnx_int8"] < metrics["export/accuracy_pytorch_fp32"]
    assert "int8 accuracy" in runs[0].data.tags["error"]
    assert not (tmp_path / "output").exists()
