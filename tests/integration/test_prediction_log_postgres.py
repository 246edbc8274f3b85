"""The prediction log on a real PostgreSQL (started by the test): two servers write one log,
feedback finds a prediction the other server made, the store vanishing mid-serving costs no
request, and the monitor step reads it back; a log written before prediction ids opens, and
a repeated label replaces the first."""

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
from distrinews.data.feedback import read_feedback
from distrinews.monitor.step import run_monitor
from distrinews.runtime.prediction_store import FEEDBACK, PREDICTIONS
from tests.unit.distrinews.runtime.test_prediction_store import write_older_log

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
        answers = []
        for i, text in enumerate(texts[:20]):
            headers = {"X-Request-ID": f"pg-{i}"}
            response = httpx.post(
                f"{replicas[i % 2].url}/predict", json={"text": text}, headers=headers
            )
            assert response.status_code == 200
            answers.append(response.json())
        time.sleep(1)  # both writers flushed
        # Feedback on a prediction the other replica made: found in the shared store.
        body = {"prediction_id": answers[1]["prediction_id"], "label": "World"}
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


def new_database(postgres: Postgres, name: str) -> str:
    """The URL of a new, empty database on the test's server."""
    admin = sa.create_engine(postgres.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return f"{postgres.url.rsplit('/', 1)[0]}/{name}"


def test_an_older_log_opens_and_a_repeated_label_replaces_the_first(postgres, tiny_onnx, texts):
    url = new_database(postgres, "older")
    write_older_log(url)  # tables without prediction ids, as an older server made them
    server = Server(str(tiny_onnx), dict(os.environ), prediction_log=url, feedback_token="t")
    auth = {"Authorization": "Bearer t"}
    try:
        server.wait_ready()
        answer = httpx.post(f"{server.url}/predict", json={"text": texts[0]}).json()
        body = {"prediction_id": answer["prediction_id"], "label": "World"}
        replaced = [
            httpx.post(f"{server.url}/feedback", json=body, headers=auth).json()["replaced"]
            for _ in range(3)
        ]
        body = {"request_id": "old-1", "label": "Business"}  # on the older server's prediction
        older = httpx.post(f"{server.url}/feedback", json=body, headers=auth)
    finally:
        server.stop()
    assert replaced == [False, True, True]
    assert older.status_code == 200 and older.json()["replaced"] is True, older.text
    rows = read_feedback(url, None)
    assert sorted(rows["label"]) == ["Business", "World"] and count(url, FEEDBACK) == 2
    assert rows.set_index("label").loc["Business", "text"] == "Old story"
