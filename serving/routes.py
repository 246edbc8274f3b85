"""HTTP routes: predict, batch predict, health, readiness, model info."""

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field, StrictStr, field_validator

from serving.inference import LoadedModel, MicroBatcher, export_report
from serving.settings import Settings

router = APIRouter()


class ErrorDetail(BaseModel):
    detail: str | list = Field(description="What was wrong with the request")


#: Answers besides 200 and FastAPI's own 422, documented for clients.
NOT_LOADED = {503: {"model": ErrorDetail, "description": "The model is not loaded yet"}}
PREDICT_ERRORS = NOT_LOADED | {
    413: {"model": ErrorDetail, "description": "Body or batch over the configured limit"}
}


def validate_text(text: str, where: str = "text") -> str:
    if not text.strip():
        raise ValueError(f"{where} is empty or whitespace only")
    if "\x00" in text:
        raise ValueError(f"{where} contains a NUL character")
    return text


class PredictRequest(BaseModel):
    text: StrictStr = Field(description="News text; truncated to the model's max tokens")

    @field_validator("text")
    @classmethod
    def check_text(cls, text: str) -> str:
        return validate_text(text)


class BatchRequest(BaseModel):
    texts: list[StrictStr] = Field(min_length=1, description="News texts")

    @field_validator("texts")
    @classmethod
    def check_texts(cls, texts: list[str]) -> list[str]:
        return [validate_text(text, f"texts[{i}]") for i, text in enumerate(texts)]


class Prediction(BaseModel):
    label: str
    confidence: float
    probabilities: dict[str, float]


class BatchPrediction(BaseModel):
    predictions: list[Prediction]


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_batcher(request: Request) -> MicroBatcher:
    batcher = getattr(request.app.state, "batcher", None)
    if batcher is None:
        raise HTTPException(503, "the model is not loaded yet; retry shortly")
    return batcher


# Each dependency declared once; routes take them as plain typed arguments.
SettingsDep = Annotated[Settings, Depends(get_settings)]
BatcherDep = Annotated[MicroBatcher, Depends(get_batcher)]


def check_lengths(texts: list[str], settings: Settings) -> None:
    for i, text in enumerate(texts):
        if len(text) > settings.max_text_chars:
            raise HTTPException(
                422,
                f"text {i} has {len(text)} characters; the limit is {settings.max_text_chars} "
                "(texts are truncated to the model's max tokens anyway)",
            )


def to_predictions(rows: np.ndarray, labels: tuple[str, ...]) -> list[Prediction]:
    """One Prediction per row of class probabilities."""
    return [
        Prediction(
            label=labels[int(row.argmax())],
            confidence=float(row.max()),
            probabilities={label: float(p) for label, p in zip(labels, row, strict=True)},
        )
        for row in rows
    ]


async def predict_texts(texts: list[str], batcher: MicroBatcher) -> list[Prediction]:
    return to_predictions(await batcher.probabilities(texts), batcher.classifier.labels)


@router.post("/predict", response_model=Prediction, responses=PREDICT_ERRORS)
async def predict(
    body: PredictRequest,
    settings: SettingsDep,
    batcher: BatcherDep,
) -> Prediction:
    check_lengths([body.text], settings)
    (prediction,) = await predict_texts([body.text], batcher)
    return prediction


@router.post("/predict/batch", response_model=BatchPrediction, responses=PREDICT_ERRORS)
async def predict_batch(
    body: BatchRequest,
    settings: SettingsDep,
    batcher: BatcherDep,
) -> BatchPrediction:
    if len(body.texts) > settings.max_batch_texts:
        raise HTTPException(
            413, f"{len(body.texts)} texts in one batch; the limit is {settings.max_batch_texts}"
        )
    check_lengths(body.texts, settings)
    return BatchPrediction(predictions=await predict_texts(body.texts, batcher))


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "healthy"}


@router.get("/ready", responses=NOT_LOADED)
async def ready(request: Request) -> dict[str, bool]:
    """Readiness: 503 until the model is loaded."""
    if getattr(request.app.state, "batcher", None) is None:
        raise HTTPException(503, "model not loaded")
    return {"ready": True}


@router.get("/model", responses=NOT_LOADED)
async def model_info(request: Request, batcher: BatcherDep) -> dict:
    """What is served: its source (and registry version), labels, and when it was loaded."""
    loaded: LoadedModel = request.app.state.model
    classifier = loaded.classifier
    report = export_report(classifier)
    return {
        "source": loaded.source.uri,
        "registered_model": loaded.source.registered_model,
        "version": loaded.source.version,
        "alias": loaded.source.alias,
        "loaded_at": loaded.loaded_at,
        "source_run_id": report.get("source_run_id"),
        "quantization": f"dynamic int8 ({report['target']})" if "target" in report else "unknown",
        "onnx_file": classifier.model_file.name,
        "labels": list(classifier.labels),
        "max_tokens": classifier.max_length,
    }
