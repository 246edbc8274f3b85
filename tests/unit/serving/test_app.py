"""The app's start-up: a model that does not load stops it before it answers."""

import pytest
from fastapi.testclient import TestClient

from devkit.tiny_models import broken_copy
from distrinews.errors import ModelFolderError
from serving.admission import queue_bound
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
    ("max_queue", "micro_batch_size", "warm_up", "bound"),
    [
        (None, 1, {"seconds": 0.1, "inferences": 20}, 5),  # 5 ms each: 25 ms is 5
        (None, 4, {"seconds": 0.1, "inferences": 20}, 20),  # each inference takes 4
        (None, 1, {"seconds": 1.0, "inferences": 20}, 2),  # 50 ms each: still 2
        (0, 1, {"seconds": 0.1, "inferences": 20}, 0),  # no bound
        (3, 1, {"seconds": 0.1, "inferences": 20}, 3),
    ],
)
def test_the_bound_is_what_the_model_answers_in_25_ms_unless_set(
    max_queue, micro_batch_size, warm_up, bound
):
    assert queue_bound(max_queue, micro_batch_size, warm_up) == bound


@pytest.mark.parametrize("settings", [{}, {"max_queue": 5}])
def test_the_server_shows_the_bound_it_sized_from_its_own_warm_up(tiny_onnx, settings):
    app = create_app(Settings(model=str(tiny_onnx), threads=1, **settings))
    with TestClient(app) as client:
        metrics = client.get("/metrics").text
        warm_up = client.get("/model").json()["warm_up"]
    bound = queue_bound(settings.get("max_queue"), 1, warm_up)
    assert bound >= 2 and f"distrinews_queue_limit {float(bound)}" in metrics
