"""The prediction log, in process on SQLite: what a row holds, texts only when asked, a full
queue drops and counts instead of blocking, a store that fails mid-serving is counted and
serving goes on, a store that cannot be opened stops the start with one line."""

import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from distrinews.runtime.prediction_store import FEEDBACK, PREDICTIONS, LogUnavailable, open_store
from distrinews.runtime.reference_profile import TextFeatures
from serving.__main__ import main
from serving.app import create_app
from serving.prediction_log import Answered, PredictionLog, now
from serving.settings import Settings


def rows_of(url: str) -> list[dict]:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(sa.select(PREDICTIONS))]
    engine.dispose()
    return rows


def logged(client: TestClient) -> dict[str, float]:
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == "distrinews_prediction_log_total"
    }


def test_each_prediction_is_written_with_its_ids_and_no_text(tmp_path, tiny_onnx, texts):
    url = f"sqlite:///{tmp_path}/log.db"
    settings = Settings(model=str(tiny_onnx), threads=1, prediction_log=url)
    with TestClient(create_app(settings)) as client:
        one = client.post("/predict", json={"text": texts[0]}, headers={"X-Request-ID": "r-1"})
        batch = client.post("/predict/batch", json={"texts": texts[1:4]})
    rows = sorted(rows_of(url), key=lambda r: (r["request_id"] != "r-1", r["position"]))
    assert len(rows) == 4, "written by the shutdown at the latest"
    first = rows[0]
    assert (first["request_id"], first["position"], first["text"]) == ("r-1", 0, None)
    assert first["prediction_id"] == one.json()["prediction_id"] == one.headers["x-prediction-id"]
    assert {r["prediction_id"] for r in rows[1:]} == {batch.json()["prediction_id"]}
    assert first["label"] == one.json()["label"]
    assert first["confidence"] == pytest.approx(one.json()["confidence"])
    assert json.loads(first["probabilities"]) == pytest.approx(one.json()["probabilities"])
    assert first["tokens"] > 2 and first["model_version"] is None  # a folder: no version
    batch_id = batch.headers["x-request-id"]
    assert [(r["request_id"], r["position"]) for r in rows[1:]] == [(batch_id, i) for i in range(3)]
    assert [r["label"] for r in rows[1:]] == [p["label"] for p in batch.json()["predictions"]]


def test_texts_are_written_only_when_the_operator_turns_it_on(tmp_path, tiny_onnx, texts):
    url = f"sqlite:///{tmp_path}/log.db"
    settings = Settings(model=str(tiny_onnx), threads=1, prediction_log=url, log_texts=True)
    with TestClient(create_app(settings)) as client:
        client.post("/predict", json={"text": texts[0]})
        assert logged(client)["dropped"] == 0
    assert [r["text"] for r in rows_of(url)] == [texts[0]]


def wait_for(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within 10 s"
        time.sleep(0.02)


def answered(n: int) -> Answered:
    rows = np.full((n, 2), 0.5)
    features = [TextFeatures(5, False, 0.0)] * n
    return Answered(now(), "r", "p", None, None, ("a", "b"), rows, features, None)


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path):
    url = f"sqlite:///{tmp_path}/log.db"
    counts: dict[str, int] = {"written": 0, "dropped": 0, "failed": 0}
    lock = threading.Lock()

    def count(outcome: str, n: int) -> None:
        with lock:
            counts[outcome] += n

    blocker = sa.create_engine(url, connect_args={"timeout": 30})
    log = PredictionLog(open_store(url), capacity=2, flush_seconds=0.05, counts=count)
    with blocker.connect() as held:
        held.exec_driver_sql("BEGIN EXCLUSIVE")  # the store stops taking writes
        log.add(answered(1))  # the writer takes it, and waits on the lock
        threading.Event().wait(0.3)
        for _ in range(10):
            log.add(answered(2))  # never blocks
        assert counts["dropped"] == 2 * 8, "two queued, eight dropped"
        held.exec_driver_sql("ROLLBACK")
    log.close()
    blocker.dispose()
    assert counts["written"] == 1 + 2 * 2 == len(rows_of(url))


def test_a_store_that_fails_while_serving_is_counted_and_serving_goes_on(
    tmp_path, tiny_onnx, texts, caplog
):
    url = f"sqlite:///{tmp_path}/log.db"
    settings = Settings(model=str(tiny_onnx), threads=1, prediction_log=url, log_flush_seconds=0.05)
    with TestClient(create_app(settings)) as client:
        client.post("/predict", json={"text": texts[0]})
        wait_for(lambda: logged(client)["written"] == 1)
        other = sa.create_engine(url)
        with other.begin() as connection:
            connection.exec_driver_sql("DROP TABLE predictions")  # the store loses its table
        other.dispose()
        for text in texts[1:6]:
            assert client.post("/predict", json={"text": text}).status_code == 200
        wait_for(lambda: logged(client)["failed"] == 5)
        counts = logged(client)
    assert (counts["failed"], counts["written"]) == (5, 1)
    errors = [r for r in caplog.records if "not written" in r.getMessage()]
    assert len(errors) == 1, "said once per outage, not per batch"


@pytest.mark.parametrize(
    "url",
    ["postgresql+psycopg://nobody@127.0.0.1:1/none", "sqlite:////no/such/folder/log.db", "x"],
)
def test_a_store_that_cannot_be_opened_stops_the_start_with_one_line(
    url, tiny_onnx, capsys, monkeypatch
):
    monkeypatch.setenv("DISTRINEWS_PREDICTION_LOG", url)
    assert main(["--model", str(tiny_onnx)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: prediction log") and "cannot be opened" in line
    with pytest.raises(LogUnavailable):
        open_store(url)


def test_a_replica_that_loses_the_race_to_create_the_tables_opens_the_store(tmp_path):
    """Another replica creates the tables between this one's check and its CREATE."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    races = []

    def the_other_replica_wins(*_args, **_kwargs) -> None:
        if not races:
            races.append(url)
            other = sa.create_engine(url)
            PREDICTIONS.create(other)
            other.dispose()

    sa.event.listen(PREDICTIONS, "before_create", the_other_replica_wins)
    try:
        engine = open_store(url)
    finally:
        sa.event.remove(PREDICTIONS, "before_create", the_other_replica_wins)
    assert races and set(sa.inspect(engine).get_table_names()) == {"predictions", "feedback"}
    engine.dispose()


def test_the_log_is_off_with_an_empty_setting(tmp_path, tiny_onnx, texts, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings(model=str(tiny_onnx), threads=1, prediction_log="")
    with TestClient(create_app(settings)) as client:
        assert client.post("/predict", json={"text": texts[0]}).status_code == 200
        assert logged(client) == {"written": 0, "dropped": 0, "failed": 0}
    assert list(Path(tmp_path).iterdir()) == []


def write_rows(url: str, days_old: int, predictions: int, feedback: int) -> None:
    """Predictions and feedback given `days_old` days ago, as a server wrote them."""
    engine = open_store(url)
    time = now() - timedelta(days=days_old)
    with engine.begin() as connection:
        rows = [r | {"time": time} for r in answered(predictions).records()]
        connection.execute(PREDICTIONS.insert(), rows)
        labels = [
            {"time": time, "request_id": "r", "prediction_id": f"{days_old}-{i}", "position": 0}
            | {"label": "a"}
            for i in range(feedback)
        ]
        connection.execute(FEEDBACK.insert(), labels)
    engine.dispose()


def row_ages(url: str) -> dict[str, list[int]]:
    """Per table, the age in whole days of each row."""
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        ages = {
            table.name: sorted(
                (now() - time.replace(tzinfo=now().tzinfo)).days
                for time in connection.execute(sa.select(table.c.time)).scalars()
            )
            for table in (PREDICTIONS, FEEDBACK)
        }
    engine.dispose()
    return ages


@pytest.mark.parametrize(("retention_days", "kept"), [(30, [0, 0, 10]), (0, [0, 0, 10, 40, 40])])
def test_the_server_deletes_predictions_and_feedback_older_than_the_retention_at_start(
    tmp_path, tiny_onnx, retention_days, kept
):
    """Issue 32, defect 14c: 0 keeps everything."""
    url = f"sqlite:///{tmp_path}/log.db"
    for days_old, count in ((40, 2), (10, 1), (0, 2)):
        write_rows(url, days_old, count, count)
    settings = Settings(
        model=str(tiny_onnx), threads=1, prediction_log=url, log_retention_days=retention_days
    )
    with TestClient(create_app(settings)):
        wait_for(lambda: row_ages(url)["predictions"] == kept)
    assert row_ages(url) == {"predictions": kept, "feedback": kept}


def test_the_retention_deletes_in_bounded_batches(tmp_path):
    url = f"sqlite:///{tmp_path}/log.db"
    write_rows(url, 40, 25, 12)
    engine = open_store(url)
    deletes: list[int] = []

    def count_deletes(_connection, cursor, statement, *_) -> None:
        if statement.startswith("DELETE"):
            deletes.append(cursor.rowcount)

    sa.event.listen(engine, "after_cursor_execute", count_deletes)
    log = PredictionLog(engine, capacity=10, flush_seconds=0.05, retention_days=30, prune_batch=10)
    wait_for(lambda: row_ages(url) == {"predictions": [], "feedback": []})
    log.close()
    assert deletes[:6] == [10, 10, 10, 2, 5, 0], "predictions and feedback, 10 at a time"
