"""The app's start-up: a model that does not load stops it before it answers."""

import pytest
from fastapi.testclient import TestClient

from devkit.tiny_models import broken_copy
from distrinews.errors import ModelFolderError
from serving.app import create_app
from serving.inference import load_model
from serving.settings import Settings

BAD_MODELS = {
    "missing folder": "does not exist",
    "corrupt onnx": "cannot load",
    "wrong labels": "names 2 classes",
    "more positions than the graph": "fails on a warm-up text of 512 tokens",
}


@pytest.mark.parametrize("problem", list(BAD_MODELS))
def test_a_bad_model_stops_the_app_at_start_up(problem, tiny_onnx, tmp_path):
    broken = broken_copy(tiny_onnx, tmp_path, problem)
    with pytest.raises(ModelFolderError, match=BAD_MODELS[problem]):
        load_model(str(broken), threads=1, spinning="off")
    with pytest.raises(ModelFolderError), TestClient(create_app(Settings(model=str(broken)))):
        pass  # the lifespan raised: the server never answers


@pytest.mark.parametrize(
    ("settings", "bound"),
    [({}, 2), ({"micro_batch_size": 8}, 16), ({"max_queue": 0}, 0), ({"max_queue": 5}, 5)],
)
def test_the_default_bound_is_one_batch_running_and_one_waiting(tiny_onnx, settings, bound):
    app = create_app(Settings(model=str(tiny_onnx), threads=1, **settings))
    with TestClient(app) as client:
        metrics = client.get("/metrics").text
    assert f"distrinews_queue_limit {float(bound)}" in metrics
