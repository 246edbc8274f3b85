"""The durable prediction log's writer: every answered prediction (or a sampled share),
into the store of distrinews.runtime.prediction_store.

Requests never wait for the store: they put entries on a bounded queue, and one
background thread writes them in batches. A full queue drops the entry and counts it.
A store that fails while serving is logged once per outage and counted; serving goes on.
Closing (the server's shutdown, on SIGTERM) writes what is queued first.

With a retention (DISTRINEWS_LOG_RETENTION_DAYS), the same thread deletes what is older,
at start and then hourly, in bounded batches between its writes: a request's entry waits
for at most one batch of deletions.
"""

import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import sqlalchemy as sa

from distrinews.runtime.prediction_store import CHAMPION, PREDICTIONS, delete_before
from distrinews.runtime.reference_profile import TextFeatures

log = logging.getLogger("serving")

#: How often the retention is applied: rows live at most this much over their limit.
PRUNE_EVERY_SECONDS = 3600.0
#: Rows deleted per table in one transaction, which holds the store's write lock: 1000
#: took 20-40 ms on SQLite (AMD EPYC, 2 vCPUs; 5000 took 90 ms), how long a write may
#: wait behind it.
PRUNE_BATCH = 1000


@dataclass(frozen=True)
class Answered:
    """One request's predictions, as the route hands them over (no work on the request
    path): the writer thread turns them into rows."""

    time: datetime
    request_id: str  # the client's X-Request-ID, for correlation (clients reuse them)
    prediction_id: str  # the server's own id of the answer: what feedback names
    model_name: str | None
    model_version: str | None
    labels: tuple[str, ...]
    rows: np.ndarray  # class probabilities, one row per text
    features: list[TextFeatures]
    texts: list[str] | None  # only with DISTRINEWS_LOG_TEXTS
    role: str = CHAMPION  # or CHALLENGER: which model made these predictions
    served: bool = True  # whether the client got them (a shadow's: not)
    inference_ms: float | None = None

    def records(self) -> list[dict]:
        """One row of the predictions table per text."""
        return [
            {
                "time": self.time,
                "request_id": self.request_id,
                "prediction_id": self.prediction_id,
                "position": position,
                "model_name": self.model_name,
                "model_version": self.model_version,
                "label": self.labels[int(row.argmax())],
                "confidence": float(row.max()),
                "probabilities": json.dumps(dict(zip(self.labels, map(float, row), strict=True))),
                "tokens": feature.tokens,
                "unknown_share": feature.unknown_share,
                "text": self.texts[position] if self.texts is not None else None,
                "role": self.role,
                "served": self.served,
                "inference_ms": self.inference_ms,
            }
            for position, (row, feature) in enumerate(zip(self.rows, self.features, strict=True))
        ]


def now() -> datetime:
    return datetime.now(timezone.utc)


#: Most requests written in one transaction.
MAX_BATCH = 1000


class PredictionLog:
    """A bounded queue of entries and the thread that writes them to `engine` (and deletes
    what is older than `retention_days`, unless 0)."""

    def __init__(
        self,
        engine: sa.Engine,
        capacity: int,
        flush_seconds: float,
        sample: float = 1.0,
        counts: Callable[[str, int], None] = lambda outcome, predictions: None,
        retention_days: int = 0,
        prune_batch: int = PRUNE_BATCH,
    ):
        """`counts(outcome, n)` is told of every prediction written, dropped or failed."""
        self.engine, self.sample, self.flush_seconds = engine, sample, flush_seconds
        self.retention_days, self.prune_batch = retention_days, prune_batch
        self.prune_at = time.monotonic()  # at start, then hourly
        self.queue: queue.Queue[Answered | None] = queue.Queue(maxsize=capacity)
        self.on_drop = lambda n: counts("dropped", n)
        self.on_error = lambda n: counts("failed", n)
        self.on_written = lambda n: counts("written", n)
        self.failing = False  # logged once per outage
        self.closing = threading.Event()  # ends the writer's wait for an interval to fill
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
        self.closing.set()
        self.thread.join(timeout)
        self.engine.dispose()

    def _run(self) -> None:
        while True:
            batch, stop = self._next_batch()
            if batch:
                self._write(batch)
            if stop:
                return
            self._prune_if_due()

    def _next_batch(self) -> tuple[list[Answered], bool]:
        """What arrived within one flush interval of the first request (at most MAX_BATCH);
        none if the retention is due first."""
        try:
            first = self.queue.get(timeout=self._until_prune())
        except queue.Empty:
            return [], False
        if first is None:
            return [], True
        if self.queue.qsize() < MAX_BATCH - 1:
            # The interval's requests gather while this thread sleeps: waiting on the queue
            # instead would wake it at every request, and it would take the GIL from the
            # event loop just as the loop sends an answer.
            self.closing.wait(self.flush_seconds)
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                entry = self.queue.get_nowait()
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

    def _until_prune(self) -> float | None:
        """Seconds until the retention is due (None: never)."""
        if not self.retention_days:
            return None
        return max(0.0, self.prune_at - time.monotonic())

    def _prune_if_due(self) -> None:
        """One batch of deletions, if due: due again at once while older rows are left (the
        writes queued meanwhile go first), else in an hour."""
        if not self.retention_days or time.monotonic() < self.prune_at:
            return
        cutoff = now() - timedelta(days=self.retention_days)
        try:
            more = delete_before(self.engine, cutoff, self.prune_batch)
        except Exception as err:  # the store went away: the writes say so; try next hour
            log.error("prediction log: old rows not deleted (%s)", " ".join(str(err).split())[:300])
            more = False
        self.prune_at = time.monotonic() + (0 if more else PRUNE_EVERY_SECONDS)
