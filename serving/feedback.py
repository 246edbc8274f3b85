"""Labelled feedback: `POST /feedback` records the true label of a logged prediction, and a
live-accuracy gauge per model version follows the last feedback items.

The route exists only when DISTRINEWS_FEEDBACK_TOKEN is set, and answers only a request
that carries it as a bearer token. A prediction is found among those this server answered
recently (still queued for the log, perhaps) or in the prediction log's store.
"""

import asyncio
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator

import sqlalchemy as sa
from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from distrinews.runtime.prediction_store import FEEDBACK, PREDICTIONS, UNREGISTERED
from serving.prediction_log import now


class RecentPredictions:
    """The labels this server answered for its last `size` requests, by request id."""

    def __init__(self, size: int = 10_000):
        self.size = size
        self.answers: OrderedDict[str, tuple[str, tuple[str, ...]]] = OrderedDict()
        self.lock = threading.Lock()

    def remember(self, request_id: str, version: str | None, labels: tuple[str, ...]) -> None:
        with self.lock:
            self.answers[request_id] = (version or UNREGISTERED, labels)
            self.answers.move_to_end(request_id)
            while len(self.answers) > self.size:
                self.answers.popitem(last=False)

    def find(self, request_id: str, position: int) -> tuple[str, str] | None:
        """(model version, predicted label), if this server answered it recently."""
        with self.lock:
            found = self.answers.get(request_id)
        if found is None or position >= len(found[1]):
            return None
        return found[0], found[1][position]


class LiveAccuracy:
    """Per model version, the share of its last `window` feedback items it got right."""

    def __init__(self, registry: CollectorRegistry, window: int):
        self.window = window
        self.outcomes: dict[str, deque[bool]] = {}
        self.lock = threading.Lock()
        self.received = Counter(
            "distrinews_feedback",
            "Feedback items recorded, by whether the prediction was right",
            ["correct"],
            registry=registry,
        )
        registry.register(self)

    def add(self, version: str, correct: bool) -> None:
        with self.lock:
            self.outcomes.setdefault(version, deque(maxlen=self.window)).append(correct)
        self.received.labels(str(correct).lower()).inc()

    def collect(self) -> Iterator[Metric]:
        accuracy = GaugeMetricFamily(
            "distrinews_live_accuracy",
            "Share of the last feedback items whose prediction was right, by model version",
            labels=["model_version"],
        )
        items = GaugeMetricFamily(
            "distrinews_live_accuracy_items",
            "Feedback items behind distrinews_live_accuracy, by model version",
            labels=["model_version"],
        )
        with self.lock:
            windows = {version: list(outcomes) for version, outcomes in self.outcomes.items()}
        for version, outcomes in windows.items():
            accuracy.add_metric([version], sum(outcomes) / len(outcomes))
            items.add_metric([version], len(outcomes))
        yield accuracy
        yield items

    def describe(self) -> Iterator[Metric]:
        return iter(())


def check_token(credentials: HTTPAuthorizationCredentials | None, token: str) -> None:
    """401 unless the request carries `token` as its bearer token (compared in constant time)."""
    given = credentials.credentials if credentials is not None else ""
    if not secrets.compare_digest(given.encode(), token.encode()):
        raise HTTPException(
            401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )


def stored_prediction(engine: sa.Engine, request_id: str, position: int) -> tuple[str, str] | None:
    """(model version, predicted label) of a logged prediction, from the store."""
    query = sa.select(PREDICTIONS.c.model_version, PREDICTIONS.c.label).where(
        PREDICTIONS.c.request_id == request_id, PREDICTIONS.c.position == position
    )
    with engine.connect() as connection:
        row = connection.execute(query.limit(1)).first()
    return None if row is None else (row.model_version or UNREGISTERED, row.label)


def write_feedback(
    engine: sa.Engine, request_id: str, position: int, label: str, text: str | None
) -> None:
    with engine.begin() as connection:
        connection.execute(
            FEEDBACK.insert(),
            [
                {
                    "time": now(),
                    "request_id": request_id,
                    "position": position,
                    "label": label,
                    "text": text,
                }
            ],
        )


async def record_feedback(
    engine: sa.Engine,
    recent: RecentPredictions,
    live: LiveAccuracy,
    item: tuple[str, int, str, str | None],
) -> dict:
    """Find the prediction (404 if unknown), write the true label (503 if the store fails),
    count it for the live accuracy of the version that answered."""
    request_id, position, label, text = item
    try:
        found = recent.find(request_id, position) or await asyncio.to_thread(
            stored_prediction, engine, request_id, position
        )
        if found is None:
            raise HTTPException(
                404, f"no logged prediction with request id {request_id!r} at position {position}"
            )
        await asyncio.to_thread(write_feedback, engine, request_id, position, label, text)
    except sa.exc.SQLAlchemyError as err:
        raise HTTPException(503, "the prediction log is unavailable; retry later") from err
    version, predicted = found
    live.add(version, predicted == label)
    return {
        "request_id": request_id,
        "position": position,
        "label": label,
        "predicted": predicted,
        "model_version": version,
    }
