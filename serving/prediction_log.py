"""The durable prediction log's writer: every answered prediction (or a sampled share),
into the store of distrinews.runtime.prediction_store.

Requests never wait for the store: they put entries on a bounded queue, and one
background thread writes them in batches. A full queue drops the entry and counts it.
A store that fails while serving is logged once per outage and counted; serving goes on.
Closing (the server's shutdown, on SIGTERM) writes what is queued first.
"""

import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import sqlalchemy as sa

from distrinews.runtime.prediction_store import PREDICTIONS
from distrinews.runtime.reference_profile import TextFeatures

log = logging.getLogger("serving")


@dataclass(frozen=True)
class Answered:
    """One request's predictions, as the route hands them over (no work on the request
    path): the writer thread turns them into rows."""

    time: datetime
    request_id: str
    model_name: str | None
    model_version: str | None
    labels: tuple[str, ...]
    rows: np.ndarray  # class probabilities, one row per text
    features: list[TextFeatures]
    texts: list[str] | None  # only with DISTRINEWS_LOG_TEXTS

    def records(self) -> list[dict]:
        """One row of the predictions table per text."""
        return [
            {
                "time": self.time,
                "request_id": self.request_id,
                "position": position,
                "model_name": self.model_name,
                "model_version": self.model_version,
                "label": self.labels[int(row.argmax())],
                "confidence": float(row.max()),
                "probabilities": json.dumps(dict(zip(self.labels, map(float, row), strict=True))),
                "tokens": feature.tokens,
                "unknown_share": feature.unknown_share,
                "text": self.texts[position] if self.texts is not None else None,
            }
            for position, (row, feature) in enumerate(zip(self.rows, self.features, strict=True))
        ]


def now() -> datetime:
    return datetime.now(timezone.utc)


class PredictionLog:
    """A bounded queue of entries and the thread that writes them to `engine`."""

    def __init__(
        self,
        engine: sa.Engine,
        capacity: int,
        flush_seconds: float,
        sample: float = 1.0,
        counts: Callable[[str, int], None] = lambda outcome, predictions: None,
    ):
        """`counts(outcome, n)` is told of every prediction written, dropped or failed."""
        self.engine, self.sample, self.flush_seconds = engine, sample, flush_seconds
        self.queue: queue.Queue[Answered | None] = queue.Queue(maxsize=capacity)
        self.on_drop = lambda n: counts("dropped", n)
        self.on_error = lambda n: counts("failed", n)
        self.on_written = lambda n: counts("written", n)
        self.failing = False  # logged once per outage
        self.thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self.thread.start()

    def add(self, answered: Answered) -> None:
        """Queue one request's predictions (if sampled); never blocks: full means dropped."""
        if self.sample < 1.0 and random.random() >= self.sample:
            return
        try:
            self.queue.put_nowait(answered)
        except queue.Full:
            self.on_drop(len(answered.rows))

    def close(self, timeout: float = 30) -> None:
        """Write everything queued, then stop the writer."""
        self.queue.put(None)  # after the entries already queued
        self.thread.join(timeout)
        self.engine.dispose()

    def _run(self) -> None:
        while True:
            batch, stop = self._next_batch()
            if batch:
                self._write(batch)
            if stop:
                return

    def _next_batch(self) -> tuple[list[Answered], bool]:
        """What arrived within one flush interval of the first request (at most 1000)."""
        first = self.queue.get()
        if first is None:
            return [], True
        batch, deadline = [first], time.monotonic() + self.flush_seconds
        while len(batch) < 1000:
            try:
                entry = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if entry is None:
                return batch, True
            batch.append(entry)
        return batch, False

    def _write(self, batch: list[Answered]) -> None:
        records = [record for answered in batch for record in answered.records()]
        try:
            with self.engine.begin() as connection:
                connection.execute(PREDICTIONS.insert(), records)
        except Exception as err:  # the store went away: count, say so once, go on
            self.on_error(len(records))
            if not self.failing:
                log.error(
                    "prediction log: %d predictions not written (%s); serving goes on",
                    len(records),
                    " ".join(str(err).split())[:300],
                )
            self.failing = True
            return
        self.on_written(len(records))
        if self.failing:
            log.warning("prediction log: writing again")
        self.failing = False
