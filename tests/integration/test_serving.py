"""End to end: serve an exported tiny model with a real uvicorn on 127.0.0.1, call it.

Route and validation tests run in process on a tiny model: tests/unit/serving/.
The export itself: test_export.py.
"""

import asyncio
import json
import time

import httpx
import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from devkit.servers import Server
from devkit.tiny_models import broken_copy
from distrinews.runtime.calibration import softmax
from distrinews.runtime.onnx_classifier import OnnxClassifier


@pytest.fixture(scope="module")
def server(exported):
    store, _, folder, _ = exported
    server = Server(str(folder), store.env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


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
    # The confidence served is the calibrated one: softmax(logits / T), T fitted at export.
    temperature = json.loads((folder / "calibration.json").read_text())["temperature"]
    assert temperature != 1.0 and local.temperature == temperature
    calibrated = softmax(local.logits([texts[0]]), temperature)
    assert responses[0].json()["confidence"] == pytest.approx(float(calibrated.max()), abs=1e-6)
    info = httpx.get(f"{server.url}/model").json()
    assert info["temperature"] == temperature
    assert info["reference_profile"] == json.loads((folder / "reference_profile.json").read_text())
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
