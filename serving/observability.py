"""What an operator sees: Prometheus metrics, one JSON access-log line per request, request ids.

One pure-ASGI middleware does all three, so a request is timed once and
every answer, 4xx and 413 included, is counted and logged. Never logged:
the text itself (only its length).
"""

import json
import logging
import re
import time
import uuid
from datetime import datetime, timezone

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from distrinews.runtime.model_source import ModelSource
from distrinews.runtime.onnx_classifier import OnnxClassifier
from distrinews.runtime.prediction_store import UNREGISTERED
from distrinews.runtime.reference_profile import TextFeatures
from serving.monitoring import DriftMonitor
from serving.stages import mark, stage_seconds

access_log = logging.getLogger("serving.access")

#: A client's X-Request-ID is echoed if it is wholly this simple (no log or header
#: injection); checked with fullmatch: `$` would let a trailing newline through.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: Methods counted by name; any other (HTTP allows any token) is counted as "other", so
#: clients cannot add label values, whatever the HTTP parser lets through.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"})
LATENCY_BUCKETS = (
    0.001,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
#: Stages last from microseconds (a hop between threads) to milliseconds (the model).
STAGE_BUCKETS = (0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
RELOAD_OUTCOMES = ("loaded", "refused", "download_failed", "check_failed")
TOKEN_BUCKETS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


class ServerMetrics:
    """The server's metrics, in a registry of its own (one per app, so tests start at zero)."""

    def __init__(self, drift_window: int = 1000, monitoring: bool = True) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.monitor = DriftMonitor(r, drift_window) if monitoring else None
        self.requests = Counter(
            "distrinews_requests",
            "HTTP requests answered, by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "distrinews_request_duration_seconds",
            "Time from request to response, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "distrinews_inference_duration_seconds",
            "ONNX Runtime time per inference call (tokenization included)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Histogram(
            "distrinews_tokens_per_text",
            "Tokens per text after truncation",
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "distrinews_requests_in_flight", "Requests being handled now", registry=r
        )
        self.queue_limit = Gauge(
            "distrinews_queue_limit",
            "Most prediction requests the server holds at once; more are answered 429 "
            "(0: no limit)",
            registry=r,
        )
        self.overloaded = Counter(
            "distrinews_overloaded",
            "Prediction requests answered 429 because the server held as many as its limit",
            registry=r,
        )
        self.stages = Histogram(
            "distrinews_stage_duration_seconds",
            "Time a prediction request spends in each stage (DISTRINEWS_STAGE_TIMING; "
            "serving.stages)",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.model = Info("distrinews_model", "The model being served", registry=r)
        self.logged = Counter(
            "distrinews_prediction_log",
            "Predictions by what became of them in the prediction log: written, dropped "
            "(queue full) or failed (the store did not take them)",
            ["outcome"],
            registry=r,
        )
        for outcome in ("written", "dropped", "failed"):
            self.logged.labels(outcome)  # at 0 from the start, for rate() and alerts
        self.reloads = Counter(
            "distrinews_reloads",
            "Alias checks and loads while following an alias: loaded, refused (it cannot "
            "serve), download_failed (retried), check_failed (the registry did not answer)",
            ["outcome"],
            registry=r,
        )
        for outcome in RELOAD_OUTCOMES:
            self.reloads.labels(outcome)

    def observe_inference(
        self,
        seconds: float,
        classifier: OnnxClassifier,
        features: list[TextFeatures],
        rows: np.ndarray,
    ) -> None:
        """One inference (on the event loop, after its answer): its time, its texts' tokens,
        its predictions."""
        self.inference.observe(seconds)
        for text in features:
            self.tokens.observe(text.tokens)
        if self.monitor is not None:
            self.monitor.record(classifier, features, rows)

    def describe_model(self, source: ModelSource, classifier: OnnxClassifier) -> None:
        """Say which model serves; its predictions' estimated accuracy is labelled with its
        version."""
        labels = classifier.labels
        if self.monitor is not None:
            self.monitor.versions[classifier] = source.version or UNREGISTERED
        self.model.info(
            {
                "source": source.uri,
                "registered_model": source.registered_model or "",
                "version": source.version or "",
                "alias": source.alias or "",
                "labels": ",".join(labels),
            }
        )

    def count_reload(self, outcome: str) -> None:
        self.reloads.labels(outcome).inc()

    def count_logged(self, outcome: str, predictions: int) -> None:
        """What became of `predictions` predictions in the prediction log (any thread)."""
        self.logged.labels(outcome).inc(predictions)


class Observe:
    """Count, time and log each HTTP request; give each an X-Request-ID."""

    def __init__(
        self, app: ASGIApp, metrics: ServerMetrics, log_requests: bool, stage_timing: bool = False
    ):
        self.app, self.metrics, self.log_requests = app, metrics, log_requests
        self.stage_timing = stage_timing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        mark(state, "received")
        state["request_id"] = request_id  # the prediction log keys its rows by it
        status: int | None = None  # until the app answers (500 if it never does)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                mark(state, "sent")

        start = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if status is None:
                # Answered here, with the request id that the access log and the
                # client both see; the error still propagates, for uvicorn to log.
                detail = f"internal server error (request id {request_id})"
                await JSONResponse({"detail": detail}, 500)(scope, receive, send_with_id)
            raise
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - start
            status = status or 500
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            if self.log_requests:
                access_log.info(
                    json.dumps(
                        {
                            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                            "request_id": request_id,
                            "method": scope["method"],
                            "route": route,
                            "status": status,
                            "latency_ms": round(1000 * seconds, 2),
                            "text_chars": state.get("text_chars"),
                            "label": state.get("label"),
                        }
                    )
                )
            if self.stage_timing and "handler" in state["marks"]:  # a prediction route ran
                mark(state, "done")
                for stage, spent in stage_seconds(state["marks"]).items():
                    self.metrics.stages.labels(stage).observe(spent)
