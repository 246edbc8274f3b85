"""The server's routes and validation, in process (FastAPI TestClient) on a tiny int8 model.

The model is real (the export step's own int8 conversion of an untrained tiny
BERT), so every answer can be checked against running it directly; the
end-to-end chain from a training run lives in test_serving.py.
"""

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from devkit.processes import REPO
from devkit.tiny_models import broken_copy
from distrinews.errors import ModelFolderError
from distrinews.runtime.labels import LABELS
from distrinews.runtime.onnx_classifier import OnnxClassifier
from serving.app import create_app
from serving.inference import MicroBatcher, load_model
from serving.settings import Settings

LIMITS = {"max_batch_texts": 8, "max_text_chars": 2000, "max_body_bytes": 20_000}


@pytest.fixture(scope="module")
def client(tiny_onnx: Path):
    # One thread, here and in `local`: the same float sums, so the same answers.
    settings = Settings(model=str(tiny_onnx), threads=1, **LIMITS)
    with TestClient(create_app(settings)) as client:  # runs the lifespan: loads the model
        yield client


@pytest.fixture(scope="module")
def local(tiny_onnx: Path) -> OnnxClassifier:
    return OnnxClassifier(tiny_onnx, threads=1)


def test_predict_answers_with_the_models_probabilities(client, local, texts):
    for text in texts[:10]:
        response = client.post("/predict", json={"text": text})
        assert response.status_code == 200, response.text
        body = response.json()
        expected = local.probabilities([text])[0]
        assert list(body["probabilities"]) == list(LABELS)
        np.testing.assert_allclose(list(body["probabilities"].values()), expected, rtol=1e-6)
        assert body["label"] == LABELS[int(expected.argmax())]
        assert body["confidence"] == pytest.approx(expected.max())


def test_batch_answers_each_text_in_order(client, local, texts):
    response = client.post("/predict/batch", json={"texts": texts[:8]})
    assert response.status_code == 200, response.text
    labels = [p["label"] for p in response.json()["predictions"]]
    assert labels == [LABELS[i] for i in local.logits(texts[:8]).argmax(axis=1)]


def test_health_ready_model_and_docs(client, tiny_onnx):
    assert client.get("/health").json() == {"status": "healthy"}
    assert client.get("/ready").json() == {"ready": True}
    info = client.get("/model").json()
    assert info["labels"] == list(LABELS) and info["source"] == str(tiny_onnx)
    assert info["onnx_file"] == "model_optimized_quantized.onnx" and info["max_tokens"] == 64
    assert client.get("/docs").status_code == 200
    assert {"/predict", "/predict/batch"} <= set(client.get("/openapi.json").json()["paths"])


def test_not_ready_answers_503_until_the_model_is_loaded(tiny_onnx):
    # Without entering the client, the lifespan (which loads the model) has not run.
    client = TestClient(create_app(Settings(model=str(tiny_onnx))))
    assert client.get("/health").status_code == 200, "alive while loading"
    for method, path, body in (("GET", "/ready", None), ("POST", "/predict", {"text": "x"})):
        response = client.request(method, path, json=body)
        assert response.status_code == 503 and response.json()["detail"]


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
def test_bad_input_gets_a_4xx_with_a_message(client, case):
    kwargs, status = BAD_REQUESTS[case]
    response = client.post("/predict", **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    "body, status",
    [
        ({"texts": []}, 422),
        ({"texts": ["ok"] * 9}, 422),
        ({"texts": ["ok", ""]}, 422),
        ({"texts": ["ok", 5]}, 422),
        ({"texts": "not a list"}, 422),
    ],
)
def test_bad_batches_get_a_4xx(client, body, status):
    response = client.post("/predict/batch", json=body)
    assert response.status_code == status, response.text


def test_long_text_within_the_limit_is_truncated_not_refused(client, local):
    text = "market " * 280  # 1,960 characters: under the limit, far over 64 tokens
    response = client.post("/predict", json={"text": text})
    assert response.status_code == 200
    assert len(local.tokenizer.encode(text).ids) == local.max_length == 64


BAD_MODELS = {
    "missing folder": "does not exist",
    "corrupt onnx": "cannot load",
    "wrong labels": "names 2 classes",
}


@pytest.mark.parametrize("problem", list(BAD_MODELS))
def test_a_bad_model_stops_the_app_at_start_up(problem, tiny_onnx, tmp_path):
    broken = broken_copy(tiny_onnx, tmp_path, problem)
    with pytest.raises(ModelFolderError, match=BAD_MODELS[problem]):
        load_model(str(broken), threads=1, spinning=False)
    with pytest.raises(ModelFolderError), TestClient(create_app(Settings(model=str(broken)))):
        pass  # the lifespan raised: the server never answers


def test_bad_setting_is_one_error_line(tiny_onnx):
    result = subprocess.run(
        [sys.executable, "-m", "serving", "--model", str(tiny_onnx)],
        env={"PATH": "/usr/bin:/bin", "DISTRINEWS_THREADS": "many"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "threads" in result.stderr


def test_a_tokenizer_with_fixed_padding_is_not_padded(tiny_onnx, tmp_path, texts):
    """The packaged MiniLM's tokenizer.json pads every text to 128 tokens; serving must not."""
    padded = tmp_path / "model"
    shutil.copytree(tiny_onnx, padded)
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
    reference = OnnxClassifier(tiny_onnx, threads=1)
    np.testing.assert_allclose(classifier.logits(texts[:4]), reference.logits(texts[:4]), rtol=1e-5)


def test_an_unexpected_failure_is_a_500_with_the_request_id(tiny_onnx):
    # A real failure: the inference executor is shut down (as at server stop),
    # so the request cannot be scheduled and the route raises.
    settings = Settings(model=str(tiny_onnx), threads=1)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        app.state.batcher.executor.shutdown()
        response = client.post("/predict", json={"text": "x"}, headers={"X-Request-ID": "t-500"})
        assert response.status_code == 500
        assert response.headers["x-request-id"] == "t-500"
        assert "t-500" in response.json()["detail"]
        metrics = text_string_to_metric_families(client.get("/metrics").text)
    answered = {
        sample.labels["status"]: sample.value
        for family in metrics
        for sample in family.samples
        if sample.name == "distrinews_requests_total" and sample.labels["route"] == "/predict"
    }
    assert answered == {"500": 1.0}, "counted as the 500 it was"


def test_a_bad_model_is_one_error_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "serving", "--model", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 1
    assert result.stderr == f"error: model folder {tmp_path / 'missing'} does not exist\n"


def requests_counted(client) -> dict[tuple[str, str, str], float]:
    """distrinews_requests_total by (method, route, status)."""
    return {
        (sample.labels["method"], sample.labels["route"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == "distrinews_requests_total"
    }


def test_a_413_on_the_declared_length_is_counted_under_its_route(client):
    """Refused before routing (by its Content-Length), yet counted where it was going."""
    before = requests_counted(client)
    response = client.post(
        "/predict", content=b"x" * 30_000, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    after = requests_counted(client)
    assert after[("POST", "/predict", "413")] - before.get(("POST", "/predict", "413"), 0) == 1
    assert ("POST", "unmatched", "413") not in after


def test_an_unknown_method_is_counted_as_other(client):
    """Any token is a method to HTTP: the label takes a known few, or "other"."""
    before = requests_counted(client)
    assert client.request("BREW", "/health").status_code == 405
    after = requests_counted(client)
    assert after[("other", "/health", "405")] - before.get(("other", "/health", "405"), 0) == 1
    assert not [key for key in after if key[0] == "BREW"]


def test_a_request_id_with_a_trailing_newline_is_replaced(client):
    response = client.get("/health", headers={"X-Request-ID": "t-1\n"})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_a_micro_batch_holds_at_most_its_size_in_texts(local):
    """A request that would overflow the batch waits for the next; one over the size runs alone."""
    batch_sizes: list[int] = []

    async def send() -> None:
        batcher = MicroBatcher(
            local,
            max_texts=4,
            window_ms=200,
            observe=lambda _, tokens: batch_sizes.append(len(tokens)),
        )
        batcher.start()
        try:
            await asyncio.gather(*(batcher.probabilities([f"news {n}"] * n) for n in (3, 3, 1, 6)))
        finally:
            await batcher.stop()

    asyncio.run(send())
    assert sorted(batch_sizes) == [3, 4, 6]  # 3 | 3 + 1 | 6 alone
