"""POST /feedback, in process on SQLite: the token first, then the body; the prediction
found (recent or in the store), the true label written, the live accuracy per version."""

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from distrinews.runtime.prediction_store import FEEDBACK
from serving.app import create_app
from serving.settings import Settings

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def settings_for(tmp_path, tiny_onnx, **more) -> Settings:
    url = f"sqlite:///{tmp_path}/log.db"
    return Settings(model=str(tiny_onnx), threads=1, prediction_log=url, **more)


def live_accuracy(client: TestClient) -> dict[str, tuple[float, float]]:
    samples = {
        (s.name, s.labels.get("model_version")): s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
    }
    return {
        version: (value, samples[("distrinews_live_accuracy_items", version)])
        for (name, version), value in samples.items()
        if name == "distrinews_live_accuracy"
    }


def feedback_rows(tmp_path) -> list[tuple]:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/log.db")
    with engine.connect() as connection:
        rows = [
            (r.request_id, r.position, r.label, r.text)
            for r in connection.execute(sa.select(FEEDBACK))
        ]
    engine.dispose()
    return rows


def test_without_a_token_there_is_no_route(tmp_path, tiny_onnx):
    with TestClient(create_app(settings_for(tmp_path, tiny_onnx))) as client:
        response = client.post("/feedback", json={"request_id": "a", "label": "World"})
        assert response.status_code == 404
        assert "/feedback" not in client.get("/openapi.json").json()["paths"]


def test_a_token_without_a_log_is_refused_at_start(tiny_onnx):
    with pytest.raises(ValidationError, match="PREDICTION_LOG"):
        Settings(model=str(tiny_onnx), feedback_token=TOKEN, prediction_log="")


def test_feedback_is_recorded_and_moves_the_live_accuracy(tmp_path, tiny_onnx, texts):
    settings = settings_for(tmp_path, tiny_onnx, feedback_token=TOKEN)
    with TestClient(create_app(settings)) as client:
        schema = client.get("/openapi.json").json()["components"]["schemas"]["FeedbackRequest"]
        assert schema["properties"]["label"]["enum"] == ["World", "Sports", "Business", "Sci/Tech"]
        predicted = client.post(
            "/predict", json={"text": texts[0]}, headers={"X-Request-ID": "req-1"}
        ).json()["label"]
        other = next(label for label in ("World", "Sports") if label != predicted)
        right = client.post(
            "/feedback", json={"request_id": "req-1", "label": predicted}, headers=AUTH
        )
        assert right.status_code == 200, right.text
        assert right.json() == {
            "request_id": "req-1",
            "position": 0,
            "label": predicted,
            "predicted": predicted,
            "model_version": "unregistered",
        }
        assert live_accuracy(client) == {"unregistered": (1.0, 1.0)}
        body = {"request_id": "req-1", "label": other, "text": texts[0]}
        assert client.post("/feedback", json=body, headers=AUTH).status_code == 200
        assert live_accuracy(client) == {"unregistered": (0.5, 2.0)}
    assert feedback_rows(tmp_path) == [
        ("req-1", 0, predicted, None),
        ("req-1", 0, other, texts[0]),
    ]


def test_a_prediction_from_before_a_restart_is_found_in_the_store(tmp_path, tiny_onnx, texts):
    settings = settings_for(tmp_path, tiny_onnx, feedback_token=TOKEN)
    with TestClient(create_app(settings)) as client:
        client.post("/predict/batch", json={"texts": texts[:3]}, headers={"X-Request-ID": "b-1"})
    with TestClient(create_app(settings)) as client:  # a new server: nothing recent
        body = {"request_id": "b-1", "position": 2, "label": "Sports"}
        assert client.post("/feedback", json=body, headers=AUTH).status_code == 200
        body["position"] = 3  # the batch had three texts
        assert client.post("/feedback", json=body, headers=AUTH).status_code == 404


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, {"request_id": "req-1", "label": "World"}, 401),
        ({"Authorization": "Bearer wrong"}, {"request_id": "req-1", "label": "World"}, 401),
        ({"Authorization": TOKEN}, {"request_id": "req-1", "label": "World"}, 401),
        ({}, {"nonsense": True}, 401),  # the token is checked before the body
        (AUTH, {"request_id": "nobody", "label": "World"}, 404),
        (AUTH, {"request_id": "req-1", "label": "Weather"}, 422),
        (AUTH, {"request_id": "req-1"}, 422),
        (AUTH, {"request_id": "bad id\n", "label": "World"}, 422),
        (AUTH, {"request_id": "req-1", "label": "World", "position": -1}, 422),
        (AUTH, {"request_id": "req-1", "label": "World", "position": False}, 422),
        (AUTH, {"request_id": "req-1", "label": "World", "text": "x" * 3000}, 413),
    ],
)
def test_bad_feedback_gets_a_4xx_and_records_nothing(
    tmp_path, tiny_onnx, texts, headers, body, status
):
    settings = settings_for(tmp_path, tiny_onnx, feedback_token=TOKEN, max_body_bytes=2000)
    with TestClient(create_app(settings)) as client:
        client.post("/predict", json={"text": texts[0][:100]}, headers={"X-Request-ID": "req-1"})
        response = client.post("/feedback", json=body, headers=headers)
        assert response.status_code == status, response.text
        if status == 422:  # FastAPI's shape, as the schema says: a list of errors
            assert isinstance(response.json()["detail"], list)
        assert live_accuracy(client) == {}
    assert feedback_rows(tmp_path) == []
