"""The FastAPI application: settings, model loaded at start-up, routes.

`create_app` builds it from settings (the environment by default), so nothing
is built at import time:

    DISTRINEWS_MODEL=<folder or MLflow URI> uvicorn --factory serving.app:create_app --port 8000 \
        --no-access-log  # the app logs each request itself, as JSON
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from distrinews.runtime.model_source import fail_fast_on_unreachable_server
from distrinews.runtime.prediction_store import CHALLENGER, open_store
from serving.admission import ShedLoad
from serving.feedback import LiveAccuracy, RecentPredictions
from serving.inference import LoadedModel, MicroBatcher, load_model, retire
from serving.observability import Observe, ServerMetrics
from serving.prediction_log import PredictionLog
from serving.reload import (
    check_alias,
    check_labels,
    follow_aliases,
    log_if_stopped,
    serve,
    slots_to_follow,
)
from serving.rollout import RolloutMetrics, challenger_threads
from serving.routes import build_router
from serving.settings import Settings

if TYPE_CHECKING:
    import sqlalchemy as sa


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    configure_logging()
    await start_serving(app, settings)
    reloader = None
    try:
        slots = slots_to_follow(app.state.model, settings.challenger)
        await start_challenger(app, settings, slots)
        if settings.reload_seconds and slots:
            reloader = asyncio.create_task(follow_aliases(app, settings, slots))
            reloader.add_done_callback(log_if_stopped)
        yield
    finally:
        await stop_serving(app, reloader)


async def start_serving(app: FastAPI, settings: Settings) -> None:
    """Load the model (unless given to create_app) and serve it.

    A function of its own, and the given model taken out of app.state: once it
    returns, only app.state.model holds the model, so the first reload frees it
    (its ONNX Runtime session, arena and threads).
    """
    # Loading reads and compiles the model: off the event loop. An error here
    # stops the server before it listens (uvicorn exits non-zero).
    model = app.state.preloaded or await asyncio.to_thread(load_served_model, settings)
    app.state.preloaded = None
    metrics: ServerMetrics = app.state.metrics
    app.state.prediction_log = await asyncio.to_thread(start_prediction_log, app, settings)
    batcher = MicroBatcher(
        model,
        settings.micro_batch_size,
        settings.micro_batch_window_ms,
        observe=metrics.observe_inference,
    )
    batcher.start()
    app.state.batcher = batcher
    serve(app, model)


async def start_challenger(app: FastAPI, settings: Settings, slots: list) -> None:
    """Load the challenger, if one is set, before the server answers. From an alias: as a
    reload would (one that is missing or fails leaves the slot empty, the champion serves
    alone); from a folder or a version: it must load, as the model must."""
    if not settings.challenger:
        return
    followed = [slot for slot in slots if slot.role == CHALLENGER]
    if followed:
        await check_alias(app, settings, followed[0])
        return
    loaded = await asyncio.to_thread(
        load_model, settings.challenger, challenger_threads(settings), settings.spinning
    )
    check_labels(loaded, app.state.model.classifier.labels)
    app.state.challenger = loaded
    app.state.rollout.show(loaded)


async def stop_serving(app: FastAPI, reloader: asyncio.Task | None) -> None:
    """Stop following the alias and answering; delete the served model's download.

    Also run when uvicorn cannot listen (port in use): no download outlives the server.
    """
    if reloader:
        reloader.cancel()
        await asyncio.wait([reloader])  # a load under way ends, and its download is deleted
    batcher, app.state.batcher = app.state.batcher, None
    await batcher.stop()
    if app.state.prediction_log is not None:  # what is queued is written first
        await asyncio.to_thread(app.state.prediction_log.close)
    await retire(app.state.model)
    if app.state.challenger is not None:
        await retire(app.state.challenger)


def start_prediction_log(app: FastAPI, settings: Settings) -> PredictionLog | None:
    """The prediction log's writer, on the store opened before start-up (python -m
    serving) or opened here; None if the log is off."""
    engine, app.state.store = app.state.store, None
    if engine is None and settings.prediction_log:
        engine = open_store(settings.prediction_log)  # LogUnavailable stops the start-up
    if engine is None:
        return None
    return PredictionLog(
        engine,
        settings.log_queue,
        settings.log_flush_seconds,
        settings.log_sample,
        counts=app.state.metrics.count_logged,
        retention_days=settings.log_retention_days,
    )


def load_served_model(settings: Settings) -> LoadedModel:
    """The model `settings` name, loaded; MLflow set to give up on an unreachable
    tracking server in seconds, for this load and the alias reloads after it."""
    fail_fast_on_unreachable_server()
    return load_model(settings.model, settings.threads, settings.spinning)


def configure_logging() -> None:
    """The server's own lines (model reloads, failures) with a time, beside uvicorn's; the
    access log as bare JSON lines, one per request, for log tools to parse."""
    formats = {
        "serving": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        "serving.access": "%(message)s",
    }
    for name, line_format in formats.items():
        log = logging.getLogger(name)
        if not log.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter(line_format))
            log.addHandler(handler)
            log.setLevel(logging.INFO)
            log.propagate = False


class BodyTooLarge(HTTPException):
    """Raised while the body is read. An HTTPException, so FastAPI answers 413 with it
    (any other exception there becomes its 400 "error parsing the body")."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"request body over {max_bytes} bytes")


class LimitBodySize:
    """413 for bodies over the limit, checked while reading: a missing or
    false Content-Length cannot smuggle a larger body in.

    A declared Content-Length over the limit fails the first read, before one
    byte is read: the request is routed first, so the 413 is counted under its
    route (a route that never reads the body answers as usual).
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        declared_too_large = declared.isdigit() and int(declared) > self.max_bytes
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            if declared_too_large:
                raise BodyTooLarge(self.max_bytes)
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self.reject(scope, receive, send)

    async def reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body over {self.max_bytes} bytes"}, status_code=413
        )
        await response(scope, receive, send)


async def readable_validation_errors(request: Request, exc: RequestValidationError) -> Response:
    """FastAPI's 422 body, with the text rule said in words instead of as a regex."""
    errors = [
        {**error, "msg": "must hold a character other than whitespace, and no NUL character"}
        if error["type"] == "string_pattern_mismatch"
        else error
        for error in exc.errors()
    ]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def schema_with_labels(app: FastAPI) -> Callable[[], dict]:
    """app.openapi, with the served model's labels as the only values /feedback's `label`
    takes: the schema says what the server accepts (the model is known only once loaded)."""
    build = app.openapi

    def openapi() -> dict:
        schema = build()
        model = getattr(app.state, "model", None)
        feedback = schema.get("components", {}).get("schemas", {}).get("FeedbackRequest")
        if feedback is not None and model is not None:
            feedback["properties"]["label"]["enum"] = list(model.classifier.labels)
        return schema

    return openapi


def create_app(
    settings: Settings | None = None,
    model: LoadedModel | None = None,
    store: "sa.Engine | None" = None,
) -> FastAPI:
    """The app for `settings`; without them, read from DISTRINEWS_* (uvicorn --factory).

    `model`: already loaded from `settings.model`, else the app loads it at start-up.
    The app takes it over (and deletes its download when it is replaced or the server
    stops): the caller should keep no reference to it.
    """
    settings = settings or Settings()
    app = FastAPI(
        title="DistriNews",
        description="AG News topics (World, Sports, Business, Sci/Tech) from an int8 ONNX model.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.batcher = None
    app.state.preloaded = model
    app.state.store = store  # the prediction log's store, if opened already
    app.state.prediction_log = None
    app.state.recent = RecentPredictions()  # what /feedback looks up first
    app.state.metrics = ServerMetrics(settings.drift_window, settings.monitoring)
    app.state.live_accuracy = LiveAccuracy(app.state.metrics.registry, settings.feedback_window)
    app.state.challenger = None  # serving.rollout: loaded at start-up if one is set
    app.state.rollout = RolloutMetrics(app.state.metrics.registry, settings)
    app.add_exception_handler(RequestValidationError, readable_validation_errors)
    app.include_router(build_router(settings))
    app.openapi = schema_with_labels(app)
    app.add_middleware(LimitBodySize, max_bytes=settings.max_body_bytes)
    # Before the body is read: a refusal must cost far less than an answer.
    app.add_middleware(ShedLoad, fastapi_app=app)
    # Outermost (added last): it times, counts and logs every answer, 413s included.
    app.add_middleware(
        Observe,
        metrics=app.state.metrics,
        log_requests=settings.access_log,
        stage_timing=settings.stage_timing,
    )
    return app
