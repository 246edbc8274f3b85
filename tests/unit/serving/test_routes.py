"""The server's routes and validation, in process (FastAPI TestClient) on a tiny int8 model.

The model is real (the export step's own int8 conversion of an untrained tiny
BERT), so every answer can be checked against running it directly (the `client`
and `local` fixtures: conftest.py); the end-to-end chain from a training run
lives in tests/integration/test_serving.py.
"""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from distrinews.runtime.labels import LABELS
from serving.app import create_app
from serving.inference import WARM_UP_TEXTS
from serving.settings import Settings


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


def test_ready_means_warm_at_the_models_typical_lengths_and_its_longest(tiny_onnx_profiled):
    settings = Settings(model=str(tiny_onnx_profiled), threads=1)
    with TestClient(create_app(settings)) as client:  # returns once the lifespan is done
        assert client.get("/ready").status_code == 200
        warm_up = client.get("/model").json()["warm_up"]
    assert warm_up["inferences"] == 2 * (WARM_UP_TEXTS + 1), "each text twice"
    lengths = warm_up["token_lengths"]
    assert lengths[-1] == 64, "the longest the model takes"
    # Drawn from the reference profile of real news texts (their lengths vary).
    assert len(lengths) >= 4 and lengths[0] < 48


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
    assert response.status_code == 200, response.text
    assert len(local.tokenizer.encode(text).ids) == local.max_length == 64
    # Answered as its first 64 tokens: 62 words and the two special tokens.
    first_tokens = "market " * 62
    assert len(local.tokenizer.encode(first_tokens).ids) == 64
    expected = client.post("/predict", json={"text": first_tokens}).json()
    assert response.json()["label"] == expected["label"]
    assert response.json()["probabilities"] == pytest.approx(expected["probabilities"])
