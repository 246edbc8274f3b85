"""The prediction log of a real `python -m serving`: SIGTERM writes what is queued, kill -9
loses at most the last flush interval and leaves a store that opens."""

import os
import time

import httpx
import pytest
import sqlalchemy as sa

from devkit.servers import Server
from distrinews.runtime.prediction_store import PREDICTIONS

pytestmark = pytest.mark.timeout(120)


def logged_ids(url: str) -> list[str]:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        ids = [row.request_id for row in connection.execute(sa.select(PREDICTIONS.c.request_id))]
    engine.dispose()
    return ids


def send(server: Server, texts: list[str], prefix: str) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(len(texts))]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for request_id, text in zip(ids, texts, strict=True):
            response = client.post(
                "/predict", json={"text": text}, headers={"X-Request-ID": request_id}
            )
            assert response.status_code == 200
    return ids


def test_sigterm_writes_every_queued_prediction(tmp_path, tiny_onnx, texts):
    url = f"sqlite:///{tmp_path}/log.db"
    # A minute between writes: everything sent is still queued at SIGTERM.
    server = Server(str(tiny_onnx), dict(os.environ), prediction_log=url, log_flush_seconds=60)
    try:
        server.wait_ready()
        sent = send(server, texts[:30], "term")
        assert logged_ids(url) == [], "nothing written yet"
    finally:
        server.stop()  # SIGTERM
    # uvicorn shuts down gracefully, then re-raises the signal it caught: -15.
    assert "Application shutdown complete" in server.output(), server.output()[-2000:]
    assert sorted(logged_ids(url)) == sorted(sent)


def test_kill_9_loses_at_most_the_last_flush_interval(tmp_path, tiny_onnx, texts):
    url = f"sqlite:///{tmp_path}/log.db"
    server = Server(str(tiny_onnx), dict(os.environ), prediction_log=url, log_flush_seconds=0.2)
    try:
        server.wait_ready()
        early = send(server, texts[:20], "early")
        time.sleep(1.0)  # five flush intervals
        late = send(server, texts[20:25], "late")
        server.process.kill()
        server.process.wait(10)
    finally:
        server.stop()
    ids = logged_ids(url)  # the store opens
    assert set(early) <= set(ids) <= set(early) | set(late)
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    engine.dispose()
