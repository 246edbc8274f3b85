"""The retrain loop end to end with a tiny BERT: a server follows `@champion` and logs a shifted
stream, feedback is posted, `mlflow run . -e retrain` makes version 2 warm-started from
version 1's train run, the server moves to it without a failed request; an empty window
makes nothing; a retrain stopped half-way leaves the alias where it was."""

import os
import signal
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from devkit.mlflow_store import TINY_LR, MlflowStore, step_in_process
from devkit.processes import PROCESS_TIMEOUT, processes_mentioning
from devkit.servers import BackgroundLoad, Server, wait_for_version
from distrinews.config import DataConfig, ExportConfig, PromoteConfig
from distrinews.export import run_export
from distrinews.promotion import run_promote

pytestmark = pytest.mark.timeout(900)

NAME = "distrinews"
TOKEN = "retrain-test-token"


def headlines(ag_news_dir: Path, rows: slice) -> pd.DataFrame:
    """The shifted stream: real training texts unseen by the model, cut to their first 8 words
    (a headline feed: far shorter than anything it trained on)."""
    frame = pd.read_parquet(ag_news_dir / "train.parquet").iloc[rows]
    return frame.assign(text=frame["text"].str.split().str[:8].str.join(" "))


@pytest.fixture(scope="module")
def champion_v1(tmp_path_factory, tiny_bert, small_data):
    """A store whose `distrinews@champion` is version 1, exported from a real 1-epoch train run."""
    store = MlflowStore(tmp_path_factory.mktemp("retrain"))
    store.experiment("retrain")
    params = {"model": tiny_bert, "data": small_data, "nproc": 1, "epochs": 1, "lr": TINY_LR}
    params |= {"batch_size": 16, "output_dir": store.folder / "checkpoints"}
    result = store.mlflow_run("train", "retrain", params)
    assert result.returncode == 0, result.stderr[-3000:]
    (train,) = store.client.search_runs(
        [store.client.get_experiment_by_name("retrain").experiment_id]
    )
    data = DataConfig(data=str(small_data), max_eval_rows=200)
    with step_in_process(store.uri, "retrain"):
        run_export(
            ExportConfig(run_id=train.info.run_id, latency_texts=20, max_accuracy_drop=100), data
        )
        run_promote(PromoteConfig(latency_texts=20, max_p95_ms=1000), data)
    return store, train.info.run_id


def retrain_params(store: MlflowStore, log: str, data: Path, **extra: object) -> dict:
    """A short retrain of the tiny model; the gate's limits opened wide, since a model
    trained for seconds moves by chance on 200 test rows (the gate has unit tests)."""
    return {
        "store": log,
        "since": "1h",
        "data": data,
        "nproc": 1,
        "epochs": 1,
        "lr": TINY_LR,
        "batch_size": 16,
        "output_dir": store.folder / "checkpoints",
        "max_eval_rows": 200,
        "min_feedback": 20,
        "max_int8_drop": 100,
        "max_accuracy_drop": 100,
        "max_production_drop": 100,
        "max_p95_ms": 1000,
        "latency_texts": 20,
    } | extra


def send_with_feedback(url: str, stream: pd.DataFrame, labelled: int) -> None:
    """Each text to /predict; the true label of the first `labelled` to /feedback (no text:
    the server logged it)."""
    names = ("World", "Sports", "Business", "Sci/Tech")
    with httpx.Client(base_url=url, timeout=30) as client:
        for i, (text, label) in enumerate(zip(stream["text"], stream["label"], strict=True)):
            answer = client.post("/predict", json={"text": text})
            assert answer.status_code == 200, answer.text
            if i < labelled:
                feedback = {"request_id": answer.headers["x-request-id"], "label": names[label]}
                sent = client.post(
                    "/feedback", json=feedback, headers={"Authorization": f"Bearer {TOKEN}"}
                )
                assert sent.status_code == 200, sent.text


def test_feedback_retrains_a_gated_champion_the_server_follows(
    champion_v1, small_data, ag_news_dir, tmp_path
):
    store, v1_train_run = champion_v1
    log = f"sqlite:///{tmp_path}/predictions.db"
    settings = {"reload_seconds": 0.5, "log_texts": "true", "feedback_token": TOKEN}
    server = Server(f"models:/{NAME}@champion", store.env, prediction_log=log, **settings)
    try:
        server.wait_ready()
        send_with_feedback(server.url, headlines(ag_news_dir, slice(5000, 5150)), labelled=100)
        time.sleep(2)  # the log's writer flushes at least every second
        texts = headlines(ag_news_dir, slice(6000, 6100))["text"].tolist()
        with BackgroundLoad(server.url, texts, clients=2) as load:
            result = store.mlflow_run("retrain", "retrain", retrain_params(store, log, small_data))
            assert result.returncode == 0, result.stderr[-4000:]
            wait_for_version(server.url, "2")
            time.sleep(1)
        statuses = [answer.status for answer in load.answers]
        assert len(statuses) > 20 and set(statuses) == {200}, sorted(set(statuses))
        check_the_loop(store, v1_train_run, result.stdout)

        # The feedback is learned: a second retrain finds an empty window and makes nothing.
        again = store.mlflow_run("retrain", "retrain", retrain_params(store, log, small_data))
        assert again.returncode == 0, again.stderr[-3000:]
        assert "skipped: no labelled feedback" in again.stdout
        assert len(store.client.search_model_versions(f"name = '{NAME}'")) == 2

        send_with_feedback(server.url, headlines(ag_news_dir, slice(7000, 7060)), labelled=60)
        time.sleep(2)
        stop_a_retrain_half_way(store, log, small_data, tmp_path)
    finally:
        server.stop()


def check_the_loop(store: MlflowStore, v1_train_run: str, stdout: str) -> None:
    """Version 2 is the champion, warm-started from version 1's run, trained on the feedback
    with a production slice held out, and the gate's decision is on its tags."""
    client = store.client
    assert "retrain distrinews: promoted" in stdout, stdout
    assert client.get_model_version_by_alias(NAME, "champion").version in (2, "2")
    experiment = client.get_experiment_by_name("retrain").experiment_id
    (parent,) = client.search_runs([experiment], "tags.step = 'retrain'")
    assert parent.info.status == "FINISHED" and parent.data.tags["decision"] == "promoted"
    children = {
        run.data.tags["step"]: run
        for run in client.search_runs(
            [experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
        )
    }
    assert set(children) == {"monitor", "train", "export", "promote"}
    assert all(run.info.status == "FINISHED" or step == "promote" for step, run in children.items())
    train = children["train"]
    assert (train.data.tags["init_from_version"], train.data.tags["init_from_run_id"]) == (
        "1",
        v1_train_run,
    )
    contexts = {
        tag.value
        for dataset in train.inputs.dataset_inputs
        for tag in dataset.tags
        if tag.key == "mlflow.data.context"
    }
    assert {"train", "feedback", "production"} <= contexts, contexts
    assert (
        int(train.data.params["feedback_rows"]) + int(train.data.params["production_rows"]) == 100
    )
    assert 0 <= train.data.metrics["production/accuracy"] <= 1
    tags = client.get_model_version(NAME, "2").tags
    assert tags["promotion"] == "promoted" and tags["promotion_champion_version"] == "1"
    assert 0 <= float(tags["promotion_candidate_production_accuracy"]) <= 1
    assert "production accuracy" in tags["promotion_reason"]
    assert "Decision: promoted" in parent.data.tags["mlflow.note.content"]
    plots = [a.path for a in client.list_artifacts(parent.info.run_id, "retrain")]
    assert plots == ["retrain/comparison.png"]
    assert parent.data.metrics["retrain/feedback_rows"] == int(train.data.params["feedback_rows"])


def stop_a_retrain_half_way(store: MlflowStore, log: str, data: Path, tmp_path: Path) -> None:
    """SIGTERM to the retrain's process group while it trains: the parent ends KILLED, the
    train run too, nothing is registered, the alias stays, no process is left behind."""
    output_dir = tmp_path / "stopped-checkpoints"
    params = retrain_params(store, log, data, output_dir=output_dir, force="true")
    with open(tmp_path / "retrain.log", "w+") as output:
        # Its own process group: the signal reaches only this retrain.
        process = store.start_mlflow_run("retrain", "retrain", params, output, new_session=True)
        try:
            deadline = time.monotonic() + PROCESS_TIMEOUT
            while not list(output_dir.glob("*")):  # the train step has claimed its folder
                assert process.poll() is None and time.monotonic() < deadline, log_of(output)
                time.sleep(0.2)
            os.killpg(process.pid, signal.SIGTERM)
            # `mlflow run` itself exits at once; the retrain ends its runs, then exits.
            deadline = time.monotonic() + 120
            while processes_mentioning(str(output_dir)):
                assert time.monotonic() < deadline, processes_mentioning(str(output_dir))
                time.sleep(0.5)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        client = store.client
        experiment = client.get_experiment_by_name("retrain").experiment_id
        parent = client.search_runs([experiment], "tags.step = 'retrain'")[0]  # newest first
        assert parent.info.status == "KILLED", log_of(output)
        assert parent.data.tags["decision"] == "interrupted"
        (train,) = client.search_runs(
            [experiment],
            f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.step = 'train'",
        )
        assert train.info.status in ("KILLED", "FAILED")
    assert client.get_model_version_by_alias(NAME, "champion").version in (2, "2")
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 2


def log_of(output) -> str:
    output.seek(0)
    return output.read()[-4000:]
