"""Fixtures of the server's in-process tests: the app on the tiny int8 model, and that model
run directly to check its answers against."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from distrinews.runtime.onnx_classifier import OnnxClassifier
from serving.app import create_app
from serving.settings import Settings

LIMITS = {"max_batch_texts": 8, "max_text_chars": 2000, "max_body_bytes": 20_000}


@pytest.fixture(scope="module")
def client(tiny_onnx: Path):
    # One thread, here and in `local`: the same float sums, so the same answers.
    settings = Settings(model=str(tiny_onnx), threads=1, **LIMITS)
    with TestClient(create_app(settings)) as client:  # runs the lifespan: loads the model
        yield client


@pytest.fixture(scope="module")
def local(tiny_onnx: Path) -> OnnxClassifier:
    return OnnxClassifier(tiny_onnx, threads=1)
