"""HTTP routes: the page, predict, batch predict, health, readiness, model info, metrics.

The request models are built from the settings, so the OpenAPI schema states
every limit the server enforces (length, batch size, no empty text, no NUL):
what the schema accepts is served, what it refuses gets a 4xx.
"""

import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from importlib.resources import files
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    create_model,
    model_validator,
)
from starlette.background import BackgroundTask

from distrinews.runtime.prediction_store import CHALLENGER, CHAMPION
from distrinews.runtime.text_rules import TEXT_PATTERN
from serving.admission import OVERLOADED, RETRY_AFTER
from serving.feedback import Given, check_token, record_feedback
from serving.inference import LoadedModel, MicroBatcher, Overloaded, Scores
from serving.observability import REQUEST_ID
from serving.prediction_log import Answered, now
from serving.rollout import Plan, client_key, plan
from serving.settings import Settings
from serving.stages import mark

#: The try-it page: one static file, no build step, no external scripts or fonts.
PAGE = files("serving").joinpath("static/index.html").read_text(encoding="utf-8")


class ErrorDetail(BaseModel):
    detail: str | list = Field(description="What was wrong with the request")


#: Answers besides 200 and FastAPI's own 422, documented for clients.
NOT_LOADED = {503: {"model": ErrorDetail, "description": "The model is not loaded yet"}}
PREDICT_ERRORS = NOT_LOADED | {
    429: {
        "model": ErrorDetail,
        "description": "Overloaded: the server holds as many requests as its limit "
        "(DISTRINEWS_MAX_QUEUE); retry after the Retry-After seconds",
    },
    400: {"model": ErrorDetail, "description": "The body cannot be read (not UTF-8 text)"},
    413: {"model": ErrorDetail, "description": "Request body over the configured size"},
}


#: The server's own id of an answer, a uuid4 in hex: what /feedback names it by.
PREDICTION_ID = "^[0-9a-f]{32}$"
PREDICTION_ID_FIELD = Field(
    description="The server's id of this answer (also its X-Prediction-ID header): send it "
    "with POST /feedback"
)


class Prediction(BaseModel):
    label: str
    confidence: float
    probabilities: dict[str, float]


class PredictAnswer(Prediction):
    prediction_id: str = PREDICTION_ID_FIELD


class BatchPrediction(BaseModel):
    prediction_id: str = PREDICTION_ID_FIELD
    predictions: list[Prediction]


class NamesAPrediction(BaseModel):
    """The base of FeedbackRequest: it names its prediction by prediction_id, or by the
    client's request_id alone (clients written before prediction ids)."""

    # The schema says it too (one of them there, and not null): what it accepts is taken.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"type": "string"}}}
                for name in ("prediction_id", "request_id")
            ]
        }
    )
    prediction_id: Annotated[str, StringConstraints(strict=True, pattern=PREDICTION_ID)] | None = (
        Field(None, description="The prediction_id of the /predict answer")
    )
    request_id: (
        Annotated[str, StringConstraints(strict=True, pattern=f"^{REQUEST_ID.pattern}$")] | None
    ) = Field(
        None,
        description="Instead of prediction_id (older clients): the X-Request-ID of the "
        "/predict answer, taken only if it names one logged request (409 if several)",
    )

    @model_validator(mode="after")
    def names_a_prediction(self) -> "NamesAPrediction":
        if self.prediction_id is None and self.request_id is None:
            raise ValueError("send the prediction_id of the /predict answer")
        return self


def no_bool(value: object) -> object:
    """JSON Schema's integer is not a boolean (pydantic would read false as 0); 55.0 is one."""
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


def request_models(settings: Settings) -> tuple[type[BaseModel], ...]:
    """PredictRequest, BatchRequest and FeedbackRequest with this server's limits in their
    schema."""
    news_text = Annotated[
        str,
        StringConstraints(strict=True, max_length=settings.max_text_chars, pattern=TEXT_PATTERN),
        Field(
            description=f"News text: not blank, no NUL, at most {settings.max_text_chars} "
            "characters; truncated to the model's max tokens"
        ),
    ]
    texts = Field(min_length=1, max_length=settings.max_batch_texts)
    return (
        create_model("PredictRequest", text=(news_text, ...)),
        create_model("BatchRequest", texts=(list[news_text], texts)),
        create_model(
            "FeedbackRequest",
            __base__=NamesAPrediction,
            label=(
                Annotated[str, StringConstraints(strict=True, max_length=256)],
                Field(description="The true label: one of the model's labels"),
            ),
            position=(
                Annotated[int, BeforeValidator(no_bool)],
                Field(0, ge=0, lt=settings.max_batch_texts, description="Index in a batch"),
            ),
            text=(news_text | None, None),
        ),
    )


def serving_batcher(request: Request) -> MicroBatcher:
    """The app's batcher; 503 while the model is not loaded."""
    batcher = getattr(request.app.state, "batcher", None)
    if batcher is None:
        raise HTTPException(503, "the model is not loaded yet; retry shortly")
    return batcher


async def get_batcher(request: Request) -> MicroBatcher:
    # async: FastAPI runs a plain-def dependency in a worker thread, a thread hop
    # per request (seen in a py-spy profile of /predict).
    return serving_batcher(request)


BatcherDep = Annotated[MicroBatcher, Depends(get_batcher)]


def to_predictions(rows: np.ndarray, labels: tuple[str, ...]) -> list[dict]:
    """One prediction (the Prediction schema, as a dict) per row of class probabilities.

    Dicts go out as JSONResponse: FastAPI would otherwise validate and encode
    each answer again through the response model, per request.
    """
    return [
        {
            "label": labels[int(row.argmax())],
            "confidence": float(row.max()),
            "probabilities": dict(zip(labels, row.tolist(), strict=True)),
        }
        for row in rows
    ]


@dataclass(frozen=True)
class Predicted:
    """A request's predictions, the id of the answer, the version that made them, and what
    runs once the answer is sent (the challenger's work), if anything."""

    prediction_id: str
    predictions: list[dict]
    version: str | None
    later: BackgroundTask | None


async def predict_texts(texts: list[str], batcher: MicroBatcher, request: Request) -> Predicted:
    """Predictions for `texts` under a new prediction id; their length and labels go to the
    access log (not the texts), and they go to the prediction log (the texts only if the
    operator said so)."""
    state = request.scope["state"]
    mark(state, "handler")
    chosen = plan_for(request)
    try:
        canary = chosen.served if chosen.role == CHALLENGER else None
        scores = await batcher.probabilities(texts, canary)
    except Overloaded as err:
        request.app.state.metrics.overloaded.inc()
        raise HTTPException(429, OVERLOADED, headers=RETRY_AFTER) from err
    mark(state, "resumed")
    state["marks"].update(scores.marks)
    prediction_id = uuid.uuid4().hex
    predictions = to_predictions(scores.rows, scores.labels)
    request.state.text_chars = sum(map(len, texts))
    request.state.label = ",".join(p["label"] for p in predictions)
    logged = Logged(request, prediction_id, texts)
    logged.add(scores, chosen.role, served=True)
    mark(state, "answered")
    later = None
    if request.app.state.challenger is not None:  # no work at all without one
        later = BackgroundTask(after_answer, request, chosen, scores, logged)
    return Predicted(prediction_id, predictions, scores.model.source.version, later)


def plan_for(request: Request) -> Plan:
    """Who answers this request, and who scores it in shadow (serving.rollout)."""
    state = request.app.state
    if state.challenger is None:
        return Plan(state.model, CHAMPION)
    settings: Settings = state.settings
    key = ""
    if settings.canary_share:
        key = client_key(dict(request.scope["headers"]), request.state.request_id)
    return plan(state.model, state.challenger, key, settings.canary_share, settings.shadow_share)


class Logged:
    """Hands a request's predictions, by whichever model made them, to the prediction log
    and to /feedback's recent answers, under the version of the model that computed them
    (not the one serving now: a reload may have swapped it in while the request waited)."""

    def __init__(self, request: Request, prediction_id: str, texts: list[str]):
        self.state, self.request_id = request.app.state, request.state.request_id
        self.prediction_id, self.texts = prediction_id, texts

    def add(self, scores: Scores, role: str, served: bool) -> None:
        state, source = self.state, scores.model.source
        if state.prediction_log is None:
            return
        labels = tuple(scores.labels[i] for i in scores.rows.argmax(axis=1).tolist())
        state.recent.remember(
            self.prediction_id, self.request_id, source.version, labels, role, served
        )
        state.prediction_log.add(
            Answered(
                now(),
                self.request_id,
                self.prediction_id,
                source.registered_model,
                source.version,
                scores.labels,
                scores.rows,
                scores.features,
                self.texts if state.settings.log_texts else None,
                role,
                served,
                round(1000 * scores.inference_seconds, 3),
            )
        )


async def after_answer(request: Request, chosen: Plan, scores: Scores, logged: Logged) -> None:
    """Once the answer is sent: the served role's metrics, and the shadow scoring, if the
    plan has one and the model's thread is free (else dropped, and counted)."""
    state = request.app.state
    rollout = state.rollout
    rollout.observe(chosen.role, True, scores)
    if chosen.shadow is None:
        return

    def done(outcome: str, shadow: Scores | None) -> None:
        rollout.shadow.labels(outcome).inc()
        if shadow is not None:
            rollout.observe(chosen.shadow_role, False, shadow)
            rollout.compare(scores, shadow)
            logged.add(shadow, chosen.shadow_role, served=False)

    if state.batcher is None:  # the server is stopping
        rollout.shadow.labels("dropped").inc()
        return
    state.batcher.shadow(chosen.shadow, logged.texts, done)


def answer(predicted: Predicted, body: dict) -> JSONResponse:
    """`body`, with the prediction id in it and in the X-Prediction-ID header, and the
    version that answered in X-Model-Version (a canary's client can tell); what is to run
    later runs once it is sent."""
    headers = {"X-Prediction-ID": predicted.prediction_id}
    if predicted.version:
        headers["X-Model-Version"] = predicted.version
    body = {**body, "prediction_id": predicted.prediction_id}
    return JSONResponse(body, headers=headers, background=predicted.later)


def build_router(settings: Settings) -> APIRouter:
    """Every route, with request models that carry `settings`' limits."""
    router = APIRouter()
    PredictRequest, BatchRequest, FeedbackRequest = request_models(settings)

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return PAGE

    @router.post("/predict", response_model=PredictAnswer, responses=PREDICT_ERRORS)
    # The batcher is looked up in the body, not as a dependency: FastAPI's dependency
    # solving cost about 0.03 ms per request on this hot path.
    async def predict(body: PredictRequest, request: Request) -> Response:
        batcher = serving_batcher(request)
        predicted = await predict_texts([body.text], batcher, request)
        return answer(predicted, predicted.predictions[0])

    @router.post("/predict/batch", response_model=BatchPrediction, responses=PREDICT_ERRORS)
    async def predict_batch(body: BatchRequest, request: Request) -> Response:
        batcher = serving_batcher(request)
        predicted = await predict_texts(body.texts, batcher, request)
        return answer(predicted, {"predictions": predicted.predictions})

    if settings.feedback_token.get_secret_value():
        add_feedback_route(router, settings, FeedbackRequest)
    router.add_api_route("/health", health, methods=["GET"])
    router.add_api_route("/ready", ready, methods=["GET"], responses=NOT_LOADED)
    router.add_api_route("/model", model_info, methods=["GET"], responses=NOT_LOADED)
    router.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    return router


FEEDBACK_ERRORS = {
    400: {"model": ErrorDetail, "description": "The body cannot be read (not UTF-8 text)"},
    401: {"model": ErrorDetail, "description": "No valid bearer token"},
    404: {"model": ErrorDetail, "description": "No logged prediction with that id"},
    409: {
        "model": ErrorDetail,
        "description": "The request id names several logged predictions: send the prediction_id",
    },
    413: {"model": ErrorDetail, "description": "Request body over the configured size"},
    503: {"model": ErrorDetail, "description": "The prediction log is unavailable"},
}


def token_first(token: SecretStr, bearer: HTTPBearer) -> type[APIRoute]:
    """A route class that answers 401 to a request without `token` before its body is read:
    a FastAPI dependency runs only after the body is parsed (bad JSON would get 422)."""

    class TokenFirst(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def token_checked(request: Request) -> Response:
                check_token(await bearer(request), token)
                return await handler(request)

            return token_checked

    return TokenFirst


def add_feedback_route(router: APIRouter, settings: Settings, body_model: type[BaseModel]) -> None:
    """POST /feedback, answering only requests with the bearer token (checked before the body
    is read)."""

    async def feedback(body: body_model, request: Request) -> dict:  # type: ignore[valid-type]
        """Record the true label of a logged prediction."""
        state = request.app.state
        labels = state.model.classifier.labels
        if body.label not in labels:
            # Shaped like FastAPI's own 422 (the schema's HTTPValidationError).
            message = f"unknown label {body.label!r}; the model's labels are {', '.join(labels)}"
            error = {"type": "value_error", "loc": ("body", "label"), "msg": message}
            raise RequestValidationError([error | {"input": body.label}])
        given = Given(body.prediction_id, body.request_id, body.position, body.label, body.text)
        engine = state.prediction_log.engine
        return await record_feedback(engine, state.recent, state.live_accuracy, given)

    bearer = HTTPBearer(auto_error=False)
    router.add_api_route(
        "/feedback",
        feedback,
        methods=["POST"],
        responses=FEEDBACK_ERRORS,
        # Checks nothing (TokenFirst does): it puts the bearer scheme in the OpenAPI schema.
        dependencies=[Depends(bearer)],
        route_class_override=token_first(settings.feedback_token, bearer),
    )


async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "healthy"}


async def ready(request: Request) -> dict[str, bool]:
    """Readiness: 503 until the model is loaded."""
    if getattr(request.app.state, "batcher", None) is None:
        raise HTTPException(503, "model not loaded")
    return {"ready": True}


async def model_info(request: Request, batcher: BatcherDep) -> dict:
    """What is served: its source (and registry version), labels, when it was loaded, its
    calibration and reference profile."""
    loaded: LoadedModel = request.app.state.model
    classifier, report = loaded.classifier, loaded.report
    return {
        "source": loaded.source.uri,
        "registered_model": loaded.source.registered_model,
        "version": loaded.source.version,
        "alias": loaded.source.alias,
        "loaded_at": loaded.loaded_at,
        # Run before the model served: /ready and an alias switch wait for it.
        "warm_up": loaded.warm_up,
        "source_run_id": report.get("source_run_id"),
        "quantization": report.get(
            "quantization",
            f"dynamic int8 ({report['target']})" if "target" in report else "unknown",
        ),
        "onnx_file": classifier.model_file.name,
        "labels": list(classifier.labels),
        "max_tokens": classifier.max_length,
        # Fitted at export: confidence is softmax(logits / temperature).
        "temperature": classifier.temperature,
        "calibration_error": report.get("ece_test"),
        # What held-out data looked like, for drift: absent for a model exported before.
        "reference_profile": classifier.profile,
        "challenger": challenger_info(request),
    }


def challenger_info(request: Request) -> dict | None:
    """The challenger judged beside the served model (serving.rollout), if one is loaded."""
    loaded: LoadedModel | None = request.app.state.challenger
    if loaded is None:
        return None
    settings: Settings = request.app.state.settings
    return {
        "source": loaded.source.uri,
        "version": loaded.source.version,
        "alias": loaded.source.alias,
        "loaded_at": loaded.loaded_at,
        "shadow_share": settings.shadow_share,
        "canary_share": settings.canary_share,
    }


async def metrics(request: Request) -> Response:
    """Prometheus text format: requests, latency, inference time, tokens, in flight, model."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
