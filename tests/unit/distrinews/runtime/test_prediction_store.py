"""The prediction log's store on SQLite: a log written before prediction ids opens with the
new columns and indexes added, its feedback still joined to its predictions; one label per
prediction, a repeat replacing it. The same on PostgreSQL:
tests/integration/test_prediction_log_postgres.py."""

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from fastapi.testclient import TestClient

from distrinews.data.feedback import read_feedback
from distrinews.monitor.drift import read_window
from distrinews.runtime.prediction_store import (
    CHALLENGER,
    CHAMPION,
    FEEDBACK,
    PREDICTIONS,
    open_store,
    upsert_feedback,
)
from serving.app import create_app
from serving.feedback import stored_prediction
from serving.settings import Settings


def older_tables() -> sa.MetaData:
    """The tables as the servers before prediction ids created them."""
    metadata = sa.MetaData()
    sa.Table(
        "predictions",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("request_id", sa.String(128), nullable=False, index=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("model_name", sa.String(256)),
        sa.Column("model_version", sa.String(64)),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("probabilities", sa.Text, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("unknown_share", sa.Float, nullable=False),
        sa.Column("text", sa.Text),
    )
    sa.Table(
        "feedback",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("request_id", sa.String(128), nullable=False, index=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("text", sa.Text),
    )
    return metadata


def write_older_log(url: str) -> None:
    """An older server's log: two predictions (one under a request id reused later) and
    a label on the first."""
    old = older_tables()
    engine = sa.create_engine(url)
    old.create_all(engine)
    time = datetime(2026, 1, 5, tzinfo=timezone.utc)
    scores = {"confidence": 0.9, "probabilities": "{}", "tokens": 5, "unknown_share": 0.0}
    with engine.begin() as connection:
        for request_id, text in (("old-1", "Old story"), ("old-2", "Another story")):
            row = {"time": time, "request_id": request_id, "position": 0, "label": "World"}
            connection.execute(old.tables["predictions"].insert(), row | scores | {"text": text})
        label = {"time": time, "request_id": "old-1", "position": 0, "label": "Sports"}
        connection.execute(old.tables["feedback"].insert(), label)
    engine.dispose()


def schema_of(engine: sa.Engine) -> dict[str, set[str]]:
    inspector = sa.inspect(engine)
    return {
        table: {c["name"] for c in inspector.get_columns(table)}
        | {i["name"] for i in inspector.get_indexes(table)}
        for table in ("predictions", "feedback")
    }


def test_a_log_written_before_prediction_ids_opens_and_its_feedback_stays_joined(tmp_path):
    url = f"sqlite:///{tmp_path}/log.db"
    write_older_log(url)
    engine = open_store(url)
    schema = schema_of(engine)
    assert {"prediction_id", "ix_predictions_prediction_id"} <= schema["predictions"]
    assert {"prediction_id", "feedback_per_prediction"} <= schema["feedback"]
    engine.dispose()
    assert open_store(url).dialect.name == "sqlite", "opens again, with nothing to add"
    rows = read_feedback(url, None)
    assert rows[["label", "text"]].values.tolist() == [["Sports", "Old story"]]


def test_a_server_on_an_older_log_takes_a_label_by_request_id_and_replaces_the_old_one(
    tmp_path, tiny_onnx, texts
):
    url = f"sqlite:///{tmp_path}/log.db"
    write_older_log(url)
    settings = Settings(model=str(tiny_onnx), threads=1, prediction_log=url, feedback_token="t")
    with TestClient(create_app(settings)) as client:
        client.post("/predict", json={"text": texts[0]}, headers={"X-Request-ID": "old-2"})
        auth = {"Authorization": "Bearer t"}
        body = {"request_id": "old-1", "label": "Business"}
        answer = client.post("/feedback", json=body, headers=auth)
        assert answer.status_code == 200, answer.text
        assert answer.json()["prediction_id"] is None and answer.json()["replaced"] is True
        reused = client.post("/feedback", json=body | {"request_id": "old-2"}, headers=auth)
        assert reused.status_code == 409, "an older prediction and a new one share old-2"
    rows = read_feedback(url, None)
    assert rows[["label", "text"]].values.tolist() == [["Business", "Old story"]]


def test_one_label_per_prediction_the_latest_replacing_the_earlier(tmp_path):
    engine = open_store(f"sqlite:///{tmp_path}/log.db")
    given = {"request_id": "r", "prediction_id": "p" * 32, "position": 1, "text": None}
    replaced = []
    for label in ("World", "World", "Sports"):
        with engine.begin() as connection:
            row = given | {"time": datetime.now(timezone.utc), "label": label}
            replaced.append(upsert_feedback(connection, row))
    with engine.connect() as connection:
        labels = connection.execute(sa.select(FEEDBACK.c.label)).scalars().all()
    engine.dispose()
    assert replaced == [False, True, True] and labels == ["Sports"]


def test_a_request_also_scored_by_a_challenger_is_counted_and_trained_on_once(tmp_path):
    """A challenger's row beside the champion's under one prediction id (shadow scoring):
    the monitor, the retrain's feedback and /feedback's lookup each take the served row."""
    url = f"sqlite:///{tmp_path}/log.db"
    engine = open_store(url)
    time = datetime(2026, 3, 2, 12, tzinfo=timezone.utc)
    scores = {"confidence": 0.9, "probabilities": "{}", "tokens": 5, "unknown_share": 0.0}
    common = {"time": time, "request_id": "r-1", "prediction_id": "a" * 32, "position": 0}
    rows = [  # the challenger's first: a lookup that ignored the roles would find it
        {"model_version": "2", "label": "Sports", "role": CHALLENGER, "served": False},
        {"model_version": "1", "label": "World", "role": CHAMPION, "served": True},
    ]
    with engine.begin() as connection:
        for row in rows:
            values = common | scores | row | {"model_name": "m", "text": "Story"}
            connection.execute(PREDICTIONS.insert(), values)
        label = {"time": time, "request_id": "r-1", "prediction_id": "a" * 32, "position": 0}
        upsert_feedback(connection, label | {"label": "World", "text": None})
    found = stored_prediction(engine, "a" * 32, None, 0)
    engine.dispose()
    assert (found.version, found.predicted) == ("1", "World"), "the answer the client got"
    assert len(read_feedback(url, None)) == 1, "trained on once"
    predictions, feedback = read_window(url, time, time + timedelta(hours=1))
    assert predictions["model_version"].tolist() == ["1"], "counted once, as served"
    assert feedback["model_version"].tolist() == ["1"]
