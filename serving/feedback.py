"""Labelled feedback: `POST /feedback` records the true label of a logged prediction, and a
live-accuracy gauge per model version follows the last feedback items.

The route exists only when DISTRINEWS_FEEDBACK_TOKEN is set, and answers only a request
that carries it as a bearer token. A prediction is named by the `prediction_id` of its
answer (and a position in a batch); a body with only the client's `request_id` is taken
when that id names one logged request. It is found among those this server answered
recently (still queued for the log, perhaps) or in the prediction log's store. One label
per prediction: a repeat (a client's retry, a correction) replaces the earlier one, in
the store and in the gauge alike.
"""

import asyncio
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from pydantic import SecretStr

from distrinews.runtime.prediction_store import (
    CHALLENGER,
    CHAMPION,
    PREDICTIONS,
    UNREGISTERED,
    served_rows,
    upsert_feedback,
)
from serving.prediction_log import now


@dataclass(frozen=True)
class Scored:
    """One model's prediction for a text: its version, label and role."""

    version: str
    predicted: str
    role: str = CHAMPION


@dataclass(frozen=True)
class Found:
    """A logged prediction that feedback names: the one the client got, and any other
    model's for the same text (a challenger's in shadow, or the champion's beside a
    canary)."""

    prediction_id: str | None  # None: logged by an older server, before prediction ids
    request_id: str
    version: str
    predicted: str
    role: str = CHAMPION
    others: tuple[Scored, ...] = ()

    def by_role(self) -> dict[str, str]:
        """The label each role predicted."""
        return {self.role: self.predicted} | {other.role: other.predicted for other in self.others}


@dataclass(frozen=True)
class Given:
    """One feedback item, as the route hands it over."""

    prediction_id: str | None
    request_id: str | None
    position: int
    label: str
    text: str | None


class RecentPredictions:
    """The labels this server answered for its last `size` requests, by prediction id, and
    the prediction ids of each client request id among them."""

    def __init__(self, size: int = 10_000):
        self.size = size
        # prediction id -> request id, then (model version, labels, role) of the served
        # answer first and of a model that scored it in shadow after
        self.answers: OrderedDict[str, list] = OrderedDict()
        self.by_request: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def remember(
        self,
        prediction_id: str,
        request_id: str,
        version: str | None,
        labels: tuple[str, ...],
        role: str = CHAMPION,
        served: bool = True,
    ) -> None:
        """A request's answer (`served`), or another model's scores for it afterwards."""
        scored = (version or UNREGISTERED, labels, role)
        with self.lock:
            if not served:
                if prediction_id in self.answers:
                    self.answers[prediction_id].append(scored)
                return
            self.answers[prediction_id] = [request_id, scored]
            self.by_request.setdefault(request_id, []).append(prediction_id)
            while len(self.answers) > self.size:
                oldest, (its_request, *_) = self.answers.popitem(last=False)
                named = self.by_request[its_request]
                named.remove(oldest)
                if not named:
                    del self.by_request[its_request]

    def find(self, prediction_id: str, position: int) -> Found | None:
        """The prediction, if this server answered it recently."""
        with self.lock:
            answer = list(self.answers.get(prediction_id, ()))
        if not answer or position >= len(answer[1][1]):
            return None
        request_id, (version, labels, role), *others = answer
        also = tuple(Scored(v, their[position], r) for v, their, r in others)
        return Found(prediction_id, request_id, version, labels[position], role, also)

    def named(self, request_id: str) -> list[str]:
        """The prediction ids answered recently under the client's `request_id`."""
        with self.lock:
            return list(self.by_request.get(request_id, ()))


class LiveAccuracy:
    """Per model version, the share of its last `window` labelled predictions it got right;
    a prediction labelled again counts once, with its latest label. And per role, over the
    last `window` labelled texts that both the champion and a challenger scored: the two
    accuracies on the same texts."""

    def __init__(self, registry: CollectorRegistry, window: int):
        self.window = window
        # version -> (prediction id, position) -> right or not, oldest first
        self.outcomes: dict[str, OrderedDict[tuple[str, int], bool]] = {}
        # (prediction id, position) -> (champion right, challenger right), oldest first
        self.pairs: OrderedDict[tuple[str, int], tuple[bool, bool]] = OrderedDict()
        self.lock = threading.Lock()
        self.received = Counter(
            "distrinews_feedback",
            "Predictions labelled (a repeated label is not counted again), by whether the "
            "prediction was right",
            ["correct"],
            registry=registry,
        )
        registry.register(self)

    def add(self, version: str, key: tuple[str, int], correct: bool, replaced: bool) -> None:
        """Count the outcome of prediction `key`; one it had already replaces the earlier."""
        with self.lock:
            outcomes = self.outcomes.setdefault(version, OrderedDict())
            outcomes[key] = correct  # a repeat keeps its place in the window
            while len(outcomes) > self.window:
                outcomes.popitem(last=False)
        if not replaced:
            self.received.labels(str(correct).lower()).inc()

    def add_found(self, found: Found, key: tuple[str, int], label: str, replaced: bool) -> None:
        """Count a labelled prediction for every model that scored it (the served one in the
        feedback counter), and as a pair if both roles did."""
        self.add(found.version, key, found.predicted == label, replaced)
        for other in found.others:
            self.add(other.version, key, other.predicted == label, replaced=True)
        predicted = found.by_role()
        if {CHAMPION, CHALLENGER} <= predicted.keys():
            with self.lock:
                self.pairs[key] = (predicted[CHAMPION] == label, predicted[CHALLENGER] == label)
                while len(self.pairs) > self.window:
                    self.pairs.popitem(last=False)

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
            windows = {version: list(o.values()) for version, o in self.outcomes.items()}
            pairs = list(self.pairs.values())
        for version, outcomes in windows.items():
            accuracy.add_metric([version], sum(outcomes) / len(outcomes))
            items.add_metric([version], len(outcomes))
        yield accuracy
        yield items
        yield from self.paired(pairs)

    @staticmethod
    def paired(pairs: list[tuple[bool, bool]]) -> Iterator[Metric]:
        paired = GaugeMetricFamily(
            "distrinews_live_accuracy_paired",
            "Share right, by role, of the last labelled texts that both the champion and the "
            "challenger scored (the same texts for both)",
            labels=["role"],
        )
        if pairs:
            for column, role in enumerate((CHAMPION, CHALLENGER)):
                paired.add_metric([role], sum(p[column] for p in pairs) / len(pairs))
        yield paired
        yield GaugeMetricFamily(
            "distrinews_live_accuracy_paired_items",
            "Labelled texts behind distrinews_live_accuracy_paired",
            value=len(pairs),
        )

    def describe(self) -> Iterator[Metric]:
        return iter(())


def check_token(credentials: HTTPAuthorizationCredentials | None, token: SecretStr) -> None:
    """401 unless the request carries `token` as its bearer token (compared in constant time)."""
    given = credentials.credentials if credentials is not None else ""
    if not secrets.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise HTTPException(
            401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )


def stored_prediction(
    engine: sa.Engine, prediction_id: str | None, request_id: str | None, position: int
) -> Found | None:
    """A logged prediction, from the store: by its prediction id, or (None) the one an older
    server logged under `request_id`."""
    named = (
        PREDICTIONS.c.prediction_id == prediction_id
        if prediction_id is not None
        else PREDICTIONS.c.prediction_id.is_(None) & (PREDICTIONS.c.request_id == request_id)
    )
    p = PREDICTIONS.c
    query = sa.select(
        p.request_id, p.model_version, p.label, p.role, served_rows().label("is_served")
    ).where(named, p.position == position)
    with engine.connect() as connection:
        rows = connection.execute(query.order_by(p.id).limit(8)).all()
    # The served row, then the others (the challenger's in shadow, the champion's beside a
    # canary).
    served = [row for row in rows if row.is_served]
    if not served:
        return None
    row = served[0]
    others = tuple(
        Scored(r.model_version or UNREGISTERED, r.label, r.role or CHAMPION)
        for r in rows
        if not r.is_served
    )
    version = row.model_version or UNREGISTERED
    return Found(prediction_id, row.request_id, version, row.label, row.role or CHAMPION, others)


def stored_requests(engine: sa.Engine, request_id: str) -> list[str | None]:
    """The prediction ids of (at most two) requests logged under the client's `request_id`;
    None for one an older server logged. Every logged request has a text at position 0."""
    query = sa.select(PREDICTIONS.c.prediction_id).where(
        PREDICTIONS.c.request_id == request_id, PREDICTIONS.c.position == 0, served_rows()
    )
    with engine.connect() as connection:
        return list(connection.execute(query.limit(2)).scalars())


async def only_request(engine: sa.Engine, recent: RecentPredictions, request_id: str) -> str | None:
    """The prediction id of the one request logged under `request_id` (None: logged by an
    older server); 404 if there is none, 409 if there are several (clients reuse ids)."""
    stored = await asyncio.to_thread(stored_requests, engine, request_id)
    named = dict.fromkeys([*recent.named(request_id), *(i for i in stored if i is not None)])
    requests = [*named, *(i for i in stored if i is None)]
    if not requests:
        raise HTTPException(404, f"no logged prediction with request id {request_id!r}")
    if len(requests) > 1:
        raise HTTPException(
            409,
            f"request id {request_id!r} names several logged predictions; send the "
            "prediction_id of the /predict answer",
        )
    return requests[0]


async def find_prediction(engine: sa.Engine, recent: RecentPredictions, given: Given) -> Found:
    """The prediction `given` names (404 if it is unknown, 409 if its request id is
    ambiguous)."""
    prediction_id = given.prediction_id
    if prediction_id is None:
        prediction_id = await only_request(engine, recent, given.request_id or "")
    found = (prediction_id and recent.find(prediction_id, given.position)) or (
        await asyncio.to_thread(
            stored_prediction, engine, prediction_id, given.request_id, given.position
        )
    )
    if found is None:
        named = f"prediction id {prediction_id!r}" if prediction_id else "that request id"
        raise HTTPException(404, f"no logged prediction with {named} at position {given.position}")
    return found


def write_feedback(engine: sa.Engine, found: Found, given: Given) -> bool:
    """The label, in place of any its prediction had; whether it replaced one."""
    row = {
        "time": now(),
        "request_id": found.request_id,
        "prediction_id": found.prediction_id,
        "position": given.position,
        "label": given.label,
        "text": given.text,
    }
    with engine.begin() as connection:
        return upsert_feedback(connection, row)


async def record_feedback(
    engine: sa.Engine, recent: RecentPredictions, live: LiveAccuracy, given: Given
) -> dict:
    """Find the prediction (404 unknown, 409 ambiguous), write the true label (503 if the
    store fails), count it for the live accuracy of the version that answered."""
    try:
        found = await find_prediction(engine, recent, given)
        replaced = await asyncio.to_thread(write_feedback, engine, found, given)
    except sa.exc.SQLAlchemyError as err:
        raise HTTPException(503, "the prediction log is unavailable; retry later") from err
    key = (found.prediction_id or f"request {found.request_id}", given.position)
    live.add_found(found, key, given.label, replaced)
    return {
        "prediction_id": found.prediction_id,
        "request_id": found.request_id,
        "position": given.position,
        "label": given.label,
        "predicted": found.predicted,
        "model_version": found.version,
        "replaced": replaced,
    }
