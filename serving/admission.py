"""Overload answered, not queued: past DISTRINEWS_MAX_QUEUE a prediction request gets 429.

The batcher refuses a request when it already holds as many as its bound
(serving.inference). This middleware refuses it sooner, before its body is read and
validated: under ten times the load the server can answer, a refusal must cost far
less than an answer, or the event loop spends itself on refusals and the admitted
requests wait behind them (benchmarks/overload.md).
"""

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

#: With DISTRINEWS_MAX_QUEUE unset, the requests in hand are at most about this much of
#: the model's work: an admitted request waits no longer for the others, and a burst of
#: a few clients at once (a page, a script's workers) is still answered, not refused.
QUEUE_SECONDS = 0.025


def queue_bound(max_queue: int | None, micro_batch_size: int, warm_up: dict) -> int:
    """The bound on prediction requests in hand: `max_queue` if set (0: none), else as many
    as the model answers in QUEUE_SECONDS by its warm-up's time per inference (each
    inference takes up to `micro_batch_size` requests), and at least 2: one running, one
    waiting."""
    if max_queue is not None:
        return max_queue
    per_inference = warm_up["seconds"] / max(1, warm_up["inferences"])
    inferences = int(QUEUE_SECONDS / per_inference) if per_inference > 0 else 2
    return max(2, inferences) * micro_batch_size


OVERLOADED = "the server holds as many requests as it can answer in time; retry after a second"
#: Seconds a refused client should wait: several times the queue's worth of inferences.
RETRY_AFTER = {"Retry-After": "1"}
PREDICTION_ROUTES = ("/predict", "/predict/batch")


class ShedLoad:
    """429 with Retry-After for a prediction request while the model holds its bound."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI):
        self.app, self.state = app, fastapi_app.state
        # The route objects, so that the refusal is counted and logged under its route.
        self.routes = {
            route.path: route
            for route in fastapi_app.routes
            if getattr(route, "path", None) in PREDICTION_ROUTES
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        batcher = self.state.batcher
        prediction = scope["type"] == "http" and scope["path"] in self.routes
        if prediction and batcher is not None:
            batcher.arrived()  # shadow work gives way at once (serving.rollout)
        if prediction and batcher is not None and batcher.full():
            scope["route"] = self.routes[scope["path"]]
            self.state.metrics.overloaded.inc()
            await JSONResponse({"detail": OVERLOADED}, 429, RETRY_AFTER)(scope, receive, send)
            return
        await self.app(scope, receive, send)
