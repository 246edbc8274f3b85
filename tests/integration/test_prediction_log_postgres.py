"""The prediction log on a real PostgreSQL (started by the test): two servers write one log,
feedback finds a prediction the other server made, the store vanishing mid-serving costs no
request, and the monitor step reads it back."""

import os
import time

import httpx
import mlflow
import pytest
import sqlalchemy as sa

from devkit.mlflow_store import tracking_uri
from devkit.postgres import Postgres
from devkit.servers import Server
from distrinews.config import MonitorConfig
from distrinews.monitor import run_monitor
from distrinews.runtime.prediction_store import FEEDBACK, PREDICTIONS

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def postgres():
    server = Postgres()
    try:
        yield server
    finally:
        server.close()


def count(url: str, table: sa.Table) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(sa.select(sa.func.count()).select_from(table)).scalar()
    engine.dispose()
    return rows


def test_two_replicas_share_one_log_and_the_monitor_reads_it(
    postgres, tiny_onnx_profiled, texts, mlflow_store
):
    settings = {"prediction_log": postgres.url, "feedback_token": "t", "log_flush_seconds": 0.1}
    replicas = [Server(str(tiny_onnx_profiled), dict(os.environ), **settings) for _ in range(2)]
    try:
        for replica in replicas:
            replica.wait_ready()
        for i, text in enumerate(texts[:20]):
            headers = {"X-Request-ID": f"pg-{i}"}
            response = httpx.post(
                f"{replicas[i % 2].url}/predict", json={"text": text}, headers=headers
            )
            assert response.status_code == 200
        time.sleep(1)  # both writers flushed
        # Feedback on a prediction the other replica made: found in the shared store.
        body = {"request_id": "pg-1", "label": "World"}
        response = httpx.post(
            f"{replicas[0].url}/feedback", json=body, headers={"Authorization": "Bearer t"}
        )
        assert response.status_code == 200, response.text
    finally:
        for replica in replicas:
            replica.stop()
    assert count(postgres.url, PREDICTIONS) == 20 and count(postgres.url, FEEDBACK) == 1
    cfg = MonitorConfig(store=postgres.url, since="1h", reference=str(tiny_onnx_profiled))
    with tracking_uri(mlflow_store.uri):
        mlflow.set_experiment("monitor")
        assert run_monitor(cfg).startswith("20 predictions, 1 feedback items")


def test_the_store_vanishing_mid_serving_costs_no_request(postgres, tiny_onnx_profiled, texts):
    server = Server(
        str(tiny_onnx_profiled),
        dict(os.environ),
        prediction_log=postgres.url,
        log_flush_seconds=0.1,
    )
    try:
        server.wait_ready()
        postgres.stop("immediate")  # a crash of the database server
        try:
            for text in texts[:20]:
                assert httpx.post(f"{server.url}/predict", json={"text": text}).status_code == 200
            deadline = time.monotonic() + 30
            while (
                'distrinews_prediction_log_total{outcome="failed"} 0.0'
                in httpx.get(f"{server.url}/metrics").text
            ):
                assert time.monotonic() < deadline, "no failed write counted"
                time.sleep(0.2)
        finally:
            postgres.start()
        assert httpx.get(f"{server.url}/health").status_code == 200
    finally:
        server.stop()
    errors = [line for line in server.output().splitlines() if "not written" in line]
    assert len(errors) == 1, server.output()[-3000:]
