"""The retrain loop end to end with a tiny BERT, driven by `benchmarks/retrain.py` on a tiny
configuration (one pipeline serves as the benchmark's smoke run and as this test):

a first champion (`mlflow run` train, export, promote) is served from `@champion` with reload
and the log on, and `@challenger` followed in shadow; a shifted stream is sent and part of it
labelled through `/feedback`; `mlflow run . -e retrain -P rollout=challenger` makes version 2,
warm-started from version 1's train run, and points `@challenger` at it while clients load the
server, which loads it beside the champion. The held-out stream is scored by both and
labelled; `mlflow run . -e promote -P live_window=1h` promotes version 2 on that live
evidence and removes `@challenger`, and the server follows: no failed request from the first
to the last. Then an empty window makes nothing, and a retrain stopped half-way leaves the
alias where it was."""

import os
import signal
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from devkit.benchmark_runs import run_benchmark, table_rows
from devkit.mlflow_store import TINY_LR, MlflowStore, step_in_process
from devkit.processes import PROCESS_TIMEOUT, SHARED_DATA, processes_mentioning
from distrinews.cli import flags, parse_retrain_job
from distrinews.retrain.workflow import run_retrain
from distrinews.runtime.prediction_store import FEEDBACK, PREDICTIONS, open_store

pytestmark = pytest.mark.timeout(900)

NAME = "retrain-e2e"
LABELLED = 60


def test_feedback_retrains_a_gated_champion_the_server_follows(tmp_path, tiny_bert):
    store, work = MlflowStore(tmp_path), tmp_path / "work"
    args = ("--model", tiny_bert, "--data", SHARED_DATA, "--base-rows", 300, "--stream", 90)
    args += ("--labelled", LABELLED, "--eval-rows", 60, "--nproc", 1, "--lr", TINY_LR)
    args += ("--retrain-lr", TINY_LR, "--max-int8-drop", 100, "--control", "false")
    # The gate opened wide: a model trained for seconds moves by chance on 60 test rows
    # (the gate's decisions have unit tests); this test is about the loop.
    args += ("--max-accuracy-drop", 100, "--max-production-drop", 100, "--min-feedback", 20)
    args += ("--clients", 1, "--work", work, "--registered-model", NAME)
    # The live gate opened wide too; tests/integration/test_promote_live.py refuses a worse one.
    args += ("--rollout", "challenger", "--min-live-requests", 20, "--max-live-drop", 100)
    text, bench = run_benchmark(store, "retrain", *args)
    check_the_table(text, bench)
    parent = check_the_loop(store)
    check_the_rollout(store, text)

    log = f"sqlite:///{work}/predictions.db"
    retrain = retrain_params(log, work / "ag_news", work / "checkpoints")
    # The feedback is learned: a second retrain over the same window finds it empty and
    # makes nothing (in process: this path starts no step). The held-out stream's labels,
    # given later for the live evidence, are outside it.
    again = retrain | {"until": parent.data.params["window_end"]}
    with step_in_process(store.uri, "bench"):
        assert "skipped: no labelled feedback" in run_retrain(parse_retrain_job(flags(again)))
    assert len(store.client.search_model_versions(f"name = '{NAME}'")) == 2

    add_feedback(log, headlines(slice(7000, 7040)))
    stop_a_retrain_half_way(store, retrain | {"force": "true"}, tmp_path)


def check_the_table(text: str, bench) -> None:
    """The benchmark's table has every figure, and the load saw no failed request."""
    before, after = table_rows(text, "champion before")[0], table_rows(text, "served after")[0]
    assert all(0 <= float(cell) <= 1 for cell in before[1:] + after[1:])
    steps = {row[0]: float(row[1]) for row in table_rows(text, "retrain:")}
    assert set(steps) == {f"retrain: {s}" for s in ("monitor", "train", "export")}
    assert all(seconds > 0 for seconds in steps.values())
    assert "warm start without the feedback" not in text  # --control false
    metrics = bench.data.metrics
    assert metrics["bench_load_requests"] > 20 and metrics["bench_load_failed"] == 0
    assert "1 client(s), 0 failed" in text


def check_the_loop(store: MlflowStore):
    """Version 2 is the champion, warm-started from version 1's train run, trained on the
    feedback with a production slice held out, and the gate's decision is on its tags. The
    retrain run, returned."""
    client = store.client
    assert client.get_model_version_by_alias(NAME, "champion").version in (2, "2")
    experiment = client.get_experiment_by_name("bench").experiment_id
    (parent,) = client.search_runs([experiment], "tags.step = 'retrain'")
    assert parent.info.status == "FINISHED" and parent.data.tags["decision"] == "challenger"
    children = {
        run.data.tags["step"]: run
        for run in client.search_runs(
            [experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
        )
    }
    assert set(children) == {"monitor", "train", "export"}
    assert all(run.info.status == "FINISHED" for run in children.values())
    train = children["train"]
    v1_run = client.get_model_version(NAME, "1").tags["source_run_id"]
    lineage = (train.data.tags["init_from_version"], train.data.tags["init_from_run_id"])
    assert lineage == ("1", v1_run) and v1_run != train.info.run_id
    contexts = {
        tag.value
        for dataset in train.inputs.dataset_inputs
        for tag in dataset.tags
        if tag.key == "mlflow.data.context"
    }
    assert {"train", "feedback", "production"} <= contexts, contexts
    counted = (
        "feedback_rows",
        "production_rows",
        *(
            f"feedback_left_out_{why}"
            for why in ("without_text", "repeated", "already_in_the_data")
        ),
    )
    assert sum(int(train.data.params[key]) for key in counted) == LABELLED
    assert int(train.data.params["production_rows"]) >= 1
    assert 0 <= train.data.metrics["production/accuracy"] <= 1
    tags = client.get_model_version(NAME, "2").tags
    assert tags["promotion"] == "promoted" and tags["promotion_champion_version"] == "1"
    assert 0 <= float(tags["promotion_candidate_production_accuracy"]) <= 1
    assert "production accuracy" in tags["promotion_reason"]
    assert "Decision: challenger" in parent.data.tags["mlflow.note.content"]
    # Nothing compared yet (promote does it later, on live evidence): no comparison plot.
    assert not client.list_artifacts(parent.info.run_id, "retrain")
    assert parent.data.metrics["retrain/feedback_rows"] == int(train.data.params["feedback_rows"])
    return parent


def check_the_rollout(store: MlflowStore, text: str) -> None:
    """The promotion was decided on live evidence: every held-out text scored by both, the
    numbers on the promote run and the version, and `@challenger` gone."""
    client = store.client
    experiment = client.get_experiment_by_name("bench").experiment_id
    promote = client.search_runs([experiment], "tags.step = 'promote'", max_results=1)[0]
    assert promote.data.params["live_window"] == "1h"
    metrics = promote.data.metrics
    assert metrics["live/texts"] >= 20 and 0 <= metrics["live/agreement"] <= 1
    assert 0 <= metrics["live/challenger_accuracy"] <= 1 and metrics["live/challenger_p95_ms"] > 0
    assert promote.data.tags["challenger_alias"] == f"{NAME}@challenger removed"
    tags = client.get_model_version(NAME, "2").tags
    assert "texts scored by both" in tags["promotion_live"]
    assert "live: " in tags["promotion_reason"] and tags["promotion_live_evidence"]
    assert not client.get_registered_model(NAME).aliases.get("challenger")
    assert "| texts scored by both |" in text and "decided **promoted**" in text


def retrain_params(log: str, data: Path, output_dir: Path) -> dict:
    """`mlflow run . -e retrain` of the tiny model on the benchmark's data and log."""
    return {
        "store": log,
        "since": "1h",
        "data": data,
        "registered_model": NAME,
        "nproc": 1,
        "lr": TINY_LR,
        "output_dir": output_dir,
        "max_train_rows": 300,
        "max_eval_rows": 60,
        "min_feedback": 20,
        "max_int8_drop": 100,
        "max_p95_ms": 1000,
        "latency_texts": 20,
    }


def headlines(rows: slice) -> pd.DataFrame:
    """More of the shifted stream: train-split texts cut to their first 8 words."""
    frame = pd.read_parquet(SHARED_DATA / "train.parquet").iloc[rows]
    return frame.assign(text=frame["text"].str.split().str[:8].str.join(" "))


def add_feedback(log: str, stream: pd.DataFrame) -> None:
    """`stream` written to the log as predictions with their true labels as feedback, as the
    server writes them (the server's own route is exercised by the benchmark run above)."""
    names = ("World", "Sports", "Business", "Sci/Tech")
    engine = open_store(log)
    with engine.begin() as connection:
        for i, (text, label) in enumerate(zip(stream["text"], stream["label"], strict=True)):
            row = {"time": datetime.now(timezone.utc), "request_id": f"more-{i}", "position": 0}
            connection.execute(
                PREDICTIONS.insert(),
                row
                | {"label": "World", "confidence": 0.5, "probabilities": "{}", "tokens": 8}
                | {"unknown_share": 0.0, "text": text, "model_version": "2"},
            )
            connection.execute(FEEDBACK.insert(), row | {"label": names[label], "text": None})
    engine.dispose()


def stop_a_retrain_half_way(store: MlflowStore, params: dict, tmp_path: Path) -> None:
    """SIGTERM to the retrain's process group while it trains: the parent ends KILLED, the
    train run too, nothing is registered, the alias stays, no process is left behind."""
    output_dir = tmp_path / "stopped-checkpoints"
    with open(tmp_path / "retrain.log", "w+") as output:
        # Its own process group: the signal reaches only this retrain.
        process = store.start_mlflow_run(
            "retrain", "bench", params | {"output_dir": output_dir}, output, new_session=True
        )
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
        experiment = client.get_experiment_by_name("bench").experiment_id
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
