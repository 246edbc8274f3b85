"""What an operator sees of the in-process app: 500s with their request id, requests counted
under their route and method, request ids checked, the stages of a request timed."""

import re

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from serving.app import create_app
from serving.settings import Settings
from serving.stages import STAGES, stage_seconds


def test_an_unexpected_failure_is_a_500_with_the_request_id(tiny_onnx):
    # A real failure: the model's thread is shut down (as at server stop) while another
    # request is in hand (as under load), so this one's inference cannot be scheduled.
    settings = Settings(model=str(tiny_onnx), threads=1)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        app.state.batcher.executor.shutdown()
        app.state.batcher.in_hand = 1
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


def stage_counts(metrics_text: str) -> dict[str, float]:
    return {
        sample.labels["stage"]: sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == "distrinews_stage_duration_seconds_count"
    }


def test_with_stage_timing_each_stage_of_a_prediction_is_timed_once(tiny_onnx):
    settings = Settings(model=str(tiny_onnx), threads=1, stage_timing=True)
    with TestClient(create_app(settings)) as client:
        for text in ("one", "two", "three"):
            assert client.post("/predict", json={"text": text}).status_code == 200
        assert client.post("/predict", json={"text": ""}).status_code == 422
        counts = stage_counts(client.get("/metrics").text)
    assert counts == {stage: 3.0 for stage, *_ in STAGES}, "the 422 reached no prediction route"


def test_without_stage_timing_no_stage_is_recorded(client):
    assert client.post("/predict", json={"text": "one"}).status_code == 200
    assert stage_counts(client.get("/metrics").text) == {}


def test_a_stage_is_the_time_between_its_two_marks():
    marks = {"received": 1.0, "handler": 1.5, "inference": 1.75, "sent": 3.0}
    assert stage_seconds(marks) == {
        "request read, parse and validation": 0.5,
        "hop to the inference thread": 0.25,
    }
