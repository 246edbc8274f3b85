"""A user's own categories, end to end: train, export and serve a 3-class folder of named labels."""

import httpx
import pandas as pd
import pytest

from devkit.mlflow_store import TINY_LR, MlflowStore, step_in_process, train_run
from devkit.servers import Server
from distrinews.config import DataConfig, ExportConfig
from distrinews.export.step import run_export

#: Three of AG News's topics, written as names in the label column (no ids, no names file).
CATEGORIES = {0: "World", 1: "Sports", 2: "Business"}


@pytest.fixture()
def three_topics(tmp_path, ag_news_dir):
    """600 train and 150 test rows of the real data, Sci/Tech dropped, labels as names."""
    folder = tmp_path / "three-topics"
    folder.mkdir()
    for split, rows in (("train", 600), ("test", 150)):
        frame = pd.read_parquet(ag_news_dir / f"{split}.parquet")
        frame = frame[frame["label"].isin(CATEGORIES)].sample(rows, random_state=0)
        frame.assign(label=frame["label"].map(CATEGORIES)).to_parquet(folder / f"{split}.parquet")
    return folder


def test_named_labels_are_trained_exported_and_served(tmp_path, tiny_bert, three_topics):
    store = MlflowStore(tmp_path)
    experiment_id = store.experiment("topics")
    params = {"nproc": 2, "model": tiny_bert, "data": three_topics, "epochs": 2}
    params |= {"batch_size": 16, "lr": TINY_LR, "output_dir": tmp_path / "checkpoints"}
    result = store.mlflow_run("train", "topics", params)
    assert result.returncode == 0, result.stderr[-3000:]
    run = train_run(store, experiment_id)
    per_class = {key for key in run.data.metrics if key.startswith("test/f1_")}
    assert per_class == {"test/f1_business", "test/f1_sports", "test/f1_world"}

    model = tmp_path / "onnx"
    # In this process: `mlflow run . -e export` is launched by the session's export fixture.
    # A tiny model's scores mean little: no accuracy limit.
    limits = {"latency_texts": 10, "max_accuracy_drop": 100}
    cfg = ExportConfig(run_id=run.info.run_id, output=str(model), **limits)
    with step_in_process(store.uri, "topics"):
        run_export(cfg, DataConfig(data=str(three_topics)))

    server = Server(str(model), store.env)
    try:
        server.wait_ready()
        assert httpx.get(f"{server.url}/model").json()["labels"] == ["Business", "Sports", "World"]
        answer = httpx.post(f"{server.url}/predict", json={"text": "Stocks rally"}).json()
        assert set(answer["probabilities"]) == {"Business", "Sports", "World"}
        assert answer["label"] in answer["probabilities"]
        assert sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    finally:
        server.stop()
