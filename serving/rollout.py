"""A challenger beside the champion, judged on live traffic before it serves everyone.

Each prediction request gets a plan: who answers it, and who also scores it for comparison.

- **canary** (DISTRINEWS_CANARY_SHARE): a share of clients is answered by the challenger,
  picked by a hash of their X-Client-Key header (else of the request id), so one client
  never flips between the two models. The champion scores the same texts in shadow, so
  every canary request is a pair too.
- **shadow** (DISTRINEWS_SHADOW_SHARE): of the other requests, a random share is also
  scored by the challenger, after the champion's answer is sent.

Shadow scoring starts shortly after the answer only if no request arrived meanwhile, runs
on the model's thread (on one ONNX Runtime thread in shadow only), and the next request to
arrive stops it (serving.inference.MicroBatcher.shadow): on 2 vCPUs the challenger must
not cost the clients their latency. What is dropped or stopped is counted.
Both rows of a pair go to the prediction log under the same prediction id, with their
role and whether the client got them; /metrics has each role's predictions, confidence,
inference time, and their agreement over a sliding window.
"""

import hashlib
import random
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric

from distrinews.runtime.prediction_store import CHALLENGER, CHAMPION
from distrinews.runtime.reference_profile import CONFIDENCE_EDGES
from serving.inference import LoadedModel, Scores
from serving.observability import LATENCY_BUCKETS, REQUEST_ID
from serving.settings import Settings

#: The header a client sends to stay with one model through a canary.
CLIENT_KEY = b"x-client-key"
#: How a shadow scoring can end, as counted: dropped (not started: the server was busy),
#: preempted (stopped by a request), failed, scored.
SHADOW_OUTCOMES = ("scored", "dropped", "preempted", "failed")


@dataclass(frozen=True)
class Plan:
    """Who answers a request (and in which role), and who scores it in shadow (if any)."""

    served: LoadedModel
    role: str
    shadow: LoadedModel | None = None

    @property
    def shadow_role(self) -> str:
        return CHAMPION if self.role == CHALLENGER else CHALLENGER


def challenger_threads(settings: Settings) -> int:
    """ONNX Runtime threads of the challenger: one in shadow only, so that a core is left
    for the event loop to take the next request and stop the shadow scoring at once (on 2
    vCPUs, two threads of it held both cores: benchmarks/shadow.md); as many as the
    champion's when it also answers canary clients."""
    return settings.threads if settings.canary_share else 1


def share_of(key: str) -> float:
    """`key` mapped evenly onto [0, 1), the same in every process and release (Python's
    hash() is salted per process)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def client_key(headers: dict[bytes, bytes], request_id: str) -> str:
    """What keeps a client with one model: its X-Client-Key if it is a plain id (the rules of
    X-Request-ID), else the request's id (then each request is drawn on its own)."""
    given = headers.get(CLIENT_KEY, b"").decode("latin-1")
    return given if REQUEST_ID.fullmatch(given) else request_id


def plan(
    champion: LoadedModel,
    challenger: LoadedModel | None,
    key: str,
    canary_share: float,
    shadow_share: float,
) -> Plan:
    """The plan for a request from client `key`. Without a challenger, or with one that is
    the champion itself (the alias moved to its version), the champion answers alone."""
    if challenger is None or challenger.source.uri == champion.source.uri:
        return Plan(champion, CHAMPION)
    if canary_share and share_of(key) < canary_share:
        return Plan(challenger, CHALLENGER, champion)
    if shadow_share and random.random() < shadow_share:
        return Plan(champion, CHAMPION, challenger)
    return Plan(champion, CHAMPION)


class RolloutMetrics:
    """Per role: predictions (served or not), confidence and inference time; shadow
    scorings by outcome; and the share of identical labels over the last `window` pairs."""

    def __init__(self, registry: CollectorRegistry, settings: Settings):
        self.settings = settings
        self.challenger = Info(
            "distrinews_challenger",
            "The challenger loaded beside the served model (empty: none), and the shares of "
            "traffic it gets",
            registry=registry,
        )
        self.predictions = Counter(
            "distrinews_role_predictions",
            "Predictions made while a challenger is loaded, by role (champion, challenger) "
            "and whether the client got them",
            ["role", "served"],
            registry=registry,
        )
        self.confidence = Histogram(
            "distrinews_role_confidence",
            "Confidence of each prediction made while a challenger is loaded, by role",
            ["role"],
            buckets=CONFIDENCE_EDGES[1:],
            registry=registry,
        )
        self.inference = Histogram(
            "distrinews_role_inference_duration_seconds",
            "Inference time (tokenization included) while a challenger is loaded, by role",
            ["role"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.shadow = Counter(
            "distrinews_shadow",
            "Shadow scorings by outcome: scored, dropped (the server held a request), "
            "preempted (a request arrived meanwhile), failed",
            ["outcome"],
            registry=registry,
        )
        for outcome in SHADOW_OUTCOMES:
            self.shadow.labels(outcome)
        # One per text scored by both.
        self.agreed: deque[bool] = deque(maxlen=settings.drift_window)
        self.lock = threading.Lock()  # appended on the loop, read at scrape time
        registry.register(self)
        self.show(None)

    def show(self, loaded: LoadedModel | None) -> None:
        """Say which challenger is loaded (None: none, after its alias was removed)."""
        source = loaded.source if loaded is not None else None
        with self.lock:
            self.agreed.clear()  # another challenger: its agreement starts afresh
        self.challenger.info(
            {
                "version": (source and source.version) or "",
                "alias": (source and source.alias) or "",
                "source": source.uri if source else "",
                "shadow_share": f"{self.settings.shadow_share:g}",
                "canary_share": f"{self.settings.canary_share:g}",
            }
        )

    def observe(self, role: str, served: bool, scores: Scores) -> None:
        """One model's predictions for one request (on the event loop, after the answer)."""
        self.inference.labels(role).observe(scores.inference_seconds)
        self.predictions.labels(role, str(served).lower()).inc(len(scores.rows))
        for confidence in scores.rows.max(axis=1).tolist():
            self.confidence.labels(role).observe(confidence)

    def compare(self, served: Scores, shadow: Scores) -> None:
        """Whether the two models gave each text of one request the same label."""
        same = served.rows.argmax(axis=1) == shadow.rows.argmax(axis=1)
        with self.lock:
            self.agreed.extend(same.tolist())

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            agreed = list(self.agreed)
        pairs = GaugeMetricFamily(
            "distrinews_agreement_window",
            "Texts scored by both the champion and the challenger in the agreement window",
            value=len(agreed),
        )
        yield pairs
        if agreed:
            yield GaugeMetricFamily(
                "distrinews_agreement",
                "Share of the last texts scored by both models that got the same label",
                value=sum(agreed) / len(agreed),
            )

    def describe(self) -> Iterator[Metric]:
        return iter(())
