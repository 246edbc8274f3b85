"""Export a trained tiny model, serve it with a real uvicorn on 127.0.0.1, and call it."""

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distrinews.config import LABELS
from distrinews.onnx_classifier import OnnxClassifier
from tests.conftest import REPO, Server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(exported):
    store, _, folder, _ = exported
    server = Server(
        str(folder), store.env, max_batch_texts=8, max_text_chars=2000, max_body_bytes=20_000
    )
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
    assert run.data.tags["mlflow.parentRunId"] == train_run_id
    metrics = run.data.metrics
    for key in (
        "accuracy_pytorch_fp32",
        "accuracy_onnx_fp32",
        "accuracy_onnx_int8",
        "int8_agreement_with_pytorch",
        "latency_p50_ms_onnx_int8",
        "latency_p95_ms_pytorch_fp32",
        "size_mb_onnx_int8",
    ):
        assert key in metrics, key
    # fp32 ONNX is the same function as PyTorch: same accuracy to a text or so.
    assert abs(metrics["accuracy_onnx_fp32"] - metrics["accuracy_pytorch_fp32"]) <= 0.01
    assert metrics["size_mb_onnx_int8"] < metrics["size_mb_onnx_fp32"]
    artifacts = {
        Path(a.path).name for a in store.client.list_artifacts(run.info.run_id, "onnx_model")
    }
    assert {"config.json", "tokenizer.json", "export_report.json"} <= artifacts
    assert sorted(p.name for p in folder.glob("*.onnx")) == ["model_optimized_quantized.onnx"]


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


def test_batch_endpoint_matches_the_model(server, exported, texts):
    _, _, folder, _ = exported
    batch = httpx.post(f"{server.url}/predict/batch", json={"texts": texts[:8]}, timeout=10)
    assert batch.status_code == 200
    local = OnnxClassifier(folder)  # same threads as the server: same float sums
    expected = [local.labels[i] for i in local.logits(texts[:8]).argmax(axis=1)]
    assert [p["label"] for p in batch.json()["predictions"]] == expected


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


def test_health_ready_model_and_docs(server):
    assert httpx.get(f"{server.url}/health").json() == {"status": "healthy"}
    assert httpx.get(f"{server.url}/ready").json() == {"ready": True}
    info = httpx.get(f"{server.url}/model").json()
    assert info["labels"] == ["World", "Sports", "Business", "Sci/Tech"]
    assert info["quantization"].startswith("dynamic int8") and info["source_run_id"]
    assert httpx.get(f"{server.url}/docs").status_code == 200
    assert "/predict" in httpx.get(f"{server.url}/openapi.json").json()["paths"]


BAD_REQUESTS = {
    "empty text": ({"json": {"text": ""}}, 422),
    "whitespace only": ({"json": {"text": "   \n\t"}}, 422),
    "text not a string": ({"json": {"text": 123}}, 422),
    "text is null": ({"json": {"text": None}}, 422),
    "missing field": ({"json": {"body": "x"}}, 422),
    "malformed json": (
        {"content": b'{"text": "unterminated', "headers": {"content-type": "application/json"}},
        422,
    ),
    "json array": ({"json": ["text"]}, 422),
    "nul byte": ({"json": {"text": "a\x00b"}}, 422),
    "text over the length limit": ({"json": {"text": "word " * 1000}}, 422),
    "body over the size limit": ({"json": {"text": "x" * 30_000}}, 413),
    "wrong content type": (
        {
            "content": b"text=hello",
            "headers": {"content-type": "application/x-www-form-urlencoded"},
        },
        422,
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_a_4xx_with_a_message(server, case):
    kwargs, status = BAD_REQUESTS[case]
    response = httpx.post(f"{server.url}/predict", timeout=10, **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    assert httpx.get(f"{server.url}/health").status_code == 200


@pytest.mark.parametrize(
    "body, status",
    [
        ({"texts": []}, 422),
        ({"texts": ["ok"] * 9}, 413),
        ({"texts": ["ok", ""]}, 422),
        ({"texts": ["ok", 5]}, 422),
        ({"texts": "not a list"}, 422),
    ],
)
def test_bad_batches_get_a_4xx(server, body, status):
    response = httpx.post(f"{server.url}/predict/batch", json=body, timeout=10)
    assert response.status_code == status, response.text


def test_long_text_within_the_limit_is_truncated_not_refused(server):
    response = httpx.post(f"{server.url}/predict", json={"text": "market " * 280}, timeout=10)
    assert response.status_code == 200


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


@pytest.mark.parametrize("problem", ["missing folder", "corrupt onnx", "wrong labels"])
def test_bad_model_fails_fast(problem, exported, tmp_path):
    store, _, folder, _ = exported
    broken = tmp_path / "model"
    if problem != "missing folder":
        subprocess.run(["cp", "-r", str(folder), str(broken)], check=True)
    if problem == "corrupt onnx":
        next(broken.glob("*.onnx")).write_bytes(b"not an onnx model")
    if problem == "wrong labels":
        config = json.loads((broken / "config.json").read_text())
        config["id2label"] = {"0": "neg", "1": "pos"}
        (broken / "config.json").write_text(json.dumps(config))
    started = time.monotonic()
    server = Server(str(broken), store.env)
    server.process.wait(timeout=60)
    output = server.output()
    assert server.process.returncode != 0
    assert time.monotonic() - started < 30
    assert {
        "missing folder": "does not exist",
        "corrupt onnx": "cannot load",
        "wrong labels": "not the AG News labels",
    }[problem] in output


def test_bad_setting_is_one_error_line(exported):
    store, _, folder, _ = exported
    result = subprocess.run(
        [sys.executable, "-m", "serving", "--model", str(folder)],
        env=store.env | {"DISTRINEWS_THREADS": "many"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "threads" in result.stderr


def test_a_tokenizer_with_fixed_padding_is_not_padded(exported, tmp_path, texts):
    """The packaged MiniLM's tokenizer.json pads every text to 128 tokens; serving must not."""
    _, _, folder, _ = exported
    padded = tmp_path / "model"
    subprocess.run(["cp", "-r", str(folder), str(padded)], check=True)
    tokenizer_json = json.loads((padded / "tokenizer.json").read_text())
    tokenizer_json["padding"] = {
        "strategy": {"Fixed": 128},
        "direction": "Right",
        "pad_to_multiple_of": None,
        "pad_id": 0,
        "pad_type_id": 0,
        "pad_token": "[PAD]",
    }
    (padded / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    classifier = OnnxClassifier(padded, threads=1)
    assert len(classifier.tokenizer.encode("stocks rally").ids) == 4  # [CLS] stocks rally [SEP]
    reference = OnnxClassifier(folder, threads=1)
    np.testing.assert_allclose(classifier.logits(texts[:4]), reference.logits(texts[:4]), rtol=1e-5)
