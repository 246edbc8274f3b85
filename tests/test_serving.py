"""End to end: export a trained tiny model, serve it with a real uvicorn on 127.0.0.1, call it.

Route and validation tests run in process on a tiny model: test_serving_routes.py.
"""

import asyncio
import json
import time

import httpx
import numpy as np
import onnx
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from devkit.mlflow_store import tracking_uri
from devkit.servers import Server
from devkit.tiny_models import broken_copy
from distrinews.runtime.labels import LABELS
from distrinews.runtime.model_source import ModelSource, local_model_folder
from distrinews.runtime.onnx_classifier import OnnxClassifier

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(exported):
    store, _, folder, _ = exported
    server = Server(str(folder), store.env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


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
    (dataset,) = run.inputs.dataset_inputs
    assert [t.value for t in dataset.tags if t.key == "mlflow.data.context"] == ["test"]
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
    assert version.tags["test_accuracy_int8"] == f"{metrics['export/accuracy_onnx_int8']:.4f}"
    with tracking_uri(store.uri):
        model_folder = local_model_folder(ModelSource(f"models:/distrinews/{version.version}"))
    assert {"config.json", "tokenizer.json", "export_report.json"} <= {
        p.name for p in model_folder.iterdir()
    }


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


def test_server_agrees_with_the_models(server, exported, texts):
    _, _, folder, reference = exported
    responses = [httpx.post(f"{server.url}/predict", json={"text": t}, timeout=10) for t in texts]
    assert all(r.status_code == 200 for r in responses)
    served = [r.json()["label"] for r in responses]
    for body in (r.json() for r in responses):
        assert body["label"] == max(body["probabilities"], key=body["probabilities"].get)
        assert body["confidence"] == pytest.approx(max(body["probabilities"].values()))
        assert sum(body["probabilities"].values()) == pytest.approx(1.0)
    # Exactly the int8 model's answers, run in this process one text at a time
    # as the server does (dynamic int8 scales activations per batch).
    local = OnnxClassifier(folder)  # same threads as the server: same float sums
    assert served == [local.labels[int(local.logits([t]).argmax())] for t in texts]
    # And the PyTorch model's, up to int8 rounding on borderline texts.
    model = AutoModelForSequenceClassification.from_pretrained(reference).eval()
    tokenizer = AutoTokenizer.from_pretrained(reference)
    with torch.no_grad():
        logits = model(
            **tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        ).logits
    expected = [model.config.id2label[i] for i in logits.argmax(-1).tolist()]
    agreement = np.mean([a == b for a, b in zip(served, expected, strict=True)])
    print(f"int8 server agrees with PyTorch on {agreement:.0%} of {len(texts)} texts")
    assert agreement >= 0.85


def test_micro_batching_answers_each_request_with_its_own_rows(exported, texts):
    store, _, folder, _ = exported
    server = Server(str(folder), store.env, micro_batch_size=32, micro_batch_window_ms=20)
    try:
        server.wait_ready()

        async def concurrent() -> list[dict]:
            async with httpx.AsyncClient(timeout=30) as client:
                requests = [
                    client.post(f"{server.url}/predict", json={"text": t}) for t in texts[:16]
                ]
                return [r.json() for r in await asyncio.gather(*requests)]

        answers = asyncio.run(concurrent())
    finally:
        server.stop()
    local = OnnxClassifier(folder)  # same threads as the server: same float sums
    # Rows go back to the request that sent them: each answer is its own
    # text's (within int8 rounding, as the batch sets activation scales).
    for text, answer in zip(texts[:16], answers, strict=True):
        alone = local.probabilities([text])[0]
        assert (
            max(
                abs(answer["probabilities"][label] - p)
                for label, p in zip(local.labels, alone, strict=True)
            )
            < 0.05
        )


def test_serves_from_an_mlflow_runs_uri(exported, texts):
    store, train_run_id, folder, _ = exported
    (run,) = store.client.search_runs(
        [store.client.get_run(train_run_id).info.experiment_id], "tags.step = 'export'"
    )
    server = Server(f"runs:/{run.info.run_id}/onnx_model", store.env)
    try:
        server.wait_ready()
        label = httpx.post(f"{server.url}/predict", json={"text": texts[0]}).json()["label"]
        local = OnnxClassifier(folder)  # same threads as the server: same float sums
        assert label == local.labels[int(local.logits(texts[:1]).argmax())]
    finally:
        server.stop()


def test_a_bad_model_stops_the_server_fast_with_an_error(tiny_onnx, tmp_path):
    broken = broken_copy(tiny_onnx, tmp_path, "corrupt onnx")
    started = time.monotonic()
    server = Server(str(broken), {"PATH": "/usr/bin:/bin"})
    try:
        server.process.wait(timeout=60)
    finally:
        server.stop()
    assert server.process.returncode != 0
    assert time.monotonic() - started < 30
    assert "cannot load" in server.output()


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
