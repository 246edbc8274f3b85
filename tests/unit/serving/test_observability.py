"""What an operator sees of the in-process app: 500s with their request id, requests counted
under their route and method, request ids checked."""

import re

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from serving.app import create_app
from serving.settings import Settings


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
