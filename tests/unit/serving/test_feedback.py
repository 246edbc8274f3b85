"""POST /feedback, in process on SQLite: the token first, then the body; the prediction
found by its prediction id (recent or in the store), one true label per prediction written,
the live accuracy per version."""

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from distrinews.data.feedback import read_feedback
from distrinews.monitor.drift import read_window
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


def feedback_counted(client: TestClient) -> float:
    """distrinews_feedback_total, over both outcomes."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == "distrinews_feedback_total"
    )


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
        answers = [
            client.post("/predict", json={"text": text}, headers={"X-Request-ID": f"req-{i}"})
            for i, text in enumerate(texts[:2])
        ]
        predicted = [answer.json()["label"] for answer in answers]
        prediction_id = answers[0].json()["prediction_id"]
        body = {"prediction_id": prediction_id, "label": predicted[0]}
        right = client.post("/feedback", json=body, headers=AUTH)
        assert right.status_code == 200, right.text
        assert right.json() == {
            "prediction_id": prediction_id,
            "request_id": "req-0",
            "position": 0,
            "label": predicted[0],
            "predicted": predicted[0],
            "model_version": "unregistered",
            "replaced": False,
        }
        assert live_accuracy(client) == {"unregistered": (1.0, 1.0)}
        other = next(label for label in ("World", "Sports") if label != predicted[1])
        # An older client's body, with the request id alone: it names one request.
        body = {"request_id": "req-1", "label": other, "text": texts[1]}
        assert (
            client.post("/feedback", json=body, headers=AUTH).json()["prediction_id"]
            == (answers[1].json()["prediction_id"])
        )
        assert live_accuracy(client) == {"unregistered": (0.5, 2.0)}
    assert feedback_rows(tmp_path) == [
        ("req-0", 0, predicted[0], None),
        ("req-1", 0, other, texts[1]),
    ]


def test_feedback_labels_only_the_prediction_it_names_when_a_client_reuses_its_request_id(
    tmp_path, tiny_onnx, texts
):
    """Issue 32, defect 4: a retry under the same X-Request-ID is another prediction."""
    settings = settings_for(tmp_path, tiny_onnx, feedback_token=TOKEN, log_texts=True)
    with TestClient(create_app(settings)) as client:
        answers = [
            client.post("/predict", json={"text": text}, headers={"X-Request-ID": "retry-1"})
            for text in texts[:2]
        ]
        ids = [answer.json()["prediction_id"] for answer in answers]
        assert ids[0] != ids[1] and [a.headers["x-prediction-id"] for a in answers] == ids
        body = {"prediction_id": ids[0], "label": "Business"}
        assert client.post("/feedback", json=body, headers=AUTH).status_code == 200
        ambiguous = {"request_id": "retry-1", "label": "World"}
        refused = client.post("/feedback", json=ambiguous, headers=AUTH)
        assert refused.status_code == 409 and "prediction_id" in refused.json()["detail"]
        assert "\n" not in refused.json()["detail"]
    rows = read_feedback(f"sqlite:///{tmp_path}/log.db", None)
    assert rows[["label", "text"]].values.tolist() == [["Business", texts[0]]]


def test_a_repeated_feedback_replaces_the_earlier_label_and_counts_once(tmp_path, tiny_onnx, texts):
    """Issue 32, defect 5: a client retrying one POST /feedback, then correcting it."""
    settings = settings_for(tmp_path, tiny_onnx, feedback_token=TOKEN)
    start = datetime.now(timezone.utc) - timedelta(minutes=1)
    with TestClient(create_app(settings)) as client:
        client.post("/predict", json={"text": texts[0]}, headers={"X-Request-ID": "once"})
        predicted = client.post(
            "/feedback", json={"request_id": "once", "label": "World"}, headers=AUTH
        )
        wrong = next(
            label for label in ("World", "Sports") if label != predicted.json()["predicted"]
        )
        body = {"request_id": "once", "label": wrong}
        answers = [client.post("/feedback", json=body, headers=AUTH) for _ in range(3)]
        assert [a.status_code for a in answers] == [200] * 3
        assert live_accuracy(client) == {"unregistered": (0.0, 1.0)}
        assert feedback_counted(client) == 1
        assert [a.json()["replaced"] for a in answers] == [True] * 3
    assert feedback_rows(tmp_path) == [("once", 0, wrong, None)]
    url = f"sqlite:///{tmp_path}/log.db"
    _, feedback = read_window(url, start, datetime.now(timezone.utc))
    assert len(feedback) == 1, "the monitor counts one labelled prediction"


def test_a_prediction_from_before_a_restart_is_found_in_the_store(tmp_path, tiny_onnx, texts):
    settings = settings_for(tmp_path, tiny_onnx, feedback_token=TOKEN)
    with TestClient(create_app(settings)) as client:
        batch = client.post(
            "/predict/batch", json={"texts": texts[:3]}, headers={"X-Request-ID": "b-1"}
        )
    with TestClient(create_app(settings)) as client:  # a new server: nothing recent
        body = {"prediction_id": batch.json()["prediction_id"], "position": 2, "label": "Sports"}
        assert client.post("/feedback", json=body, headers=AUTH).status_code == 200
        body = {"request_id": "b-1", "position": 1, "label": "Sports"}
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
        (AUTH, {"prediction_id": "0" * 32, "label": "World"}, 404),
        (AUTH, {"label": "World"}, 422),  # names no prediction
        (AUTH, {"prediction_id": None, "label": "World"}, 422),
        (AUTH, {"prediction_id": "req-1", "label": "World"}, 422),  # not a prediction id
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


def test_bad_json_without_a_token_gets_401_before_the_body_is_read(tmp_path, tiny_onnx):
    """Issue 32, defect 14d: the token first, whatever the body; the body still documented."""
    settings = settings_for(tmp_path, tiny_onnx, feedback_token=TOKEN)
    headers = {"content-type": "application/json"}
    with TestClient(create_app(settings)) as client:
        refused = client.post("/feedback", content=b"{not json", headers=headers)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        malformed = client.post("/feedback", content=b"{not json", headers=headers | AUTH)
        assert malformed.status_code == 422
        schema = client.get("/openapi.json").json()
    body = schema["paths"]["/feedback"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].endswith("/FeedbackRequest")
    assert "409" in schema["paths"]["/feedback"]["post"]["responses"]


def test_a_settings_error_names_the_setting_but_never_the_token(monkeypatch, tiny_onnx):
    """Issue 32, defect 8, in process: what uvicorn --factory would print."""
    monkeypatch.setenv("DISTRINEWS_FEEDBACK_TOKEN", TOKEN)
    monkeypatch.setenv("DISTRINEWS_PREDICTION_LOG", "")
    with pytest.raises(ValidationError) as error:
        Settings(model=str(tiny_onnx))
    assert TOKEN not in str(error.value) and TOKEN not in repr(error.value)
    monkeypatch.setenv("DISTRINEWS_PREDICTION_LOG", "sqlite://")
    assert TOKEN not in repr(Settings(model=str(tiny_onnx)))
