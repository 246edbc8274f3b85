"""The retrain workflow in process against a real SQLite store: what it does when there is
nothing to do, when it cannot start, and when another retrain holds the lock. (The whole
loop with real steps: integration/test_retrain.py; its steps failing and a second stop
signal: integration/test_retrain_faults.py.)"""

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import mlflow
import pytest

from devkit.mlflow_store import MlflowStore, register_folder, step_in_process
from distrinews.cli import parse_retrain_job
from distrinews.config import RetrainConfig, RetrainJob
from distrinews.errors import UserError
from distrinews.retrain.workflow import run_retrain, window
from distrinews.runtime.prediction_store import FEEDBACK, open_store

NAME = "distrinews"


def job(log: str, data: Path) -> RetrainJob:
    """As `mlflow run . -e retrain -P store=<log> -P since=1h -P data=<data>` parses it."""
    return parse_retrain_job(["--store", log, "--since", "1h", "--data", str(data)])


@pytest.fixture()
def store(tmp_path):
    """A store with an experiment `retrain`, and `distrinews@champion` (a registered folder)."""
    store = MlflowStore(tmp_path)
    store.experiment("retrain")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with step_in_process(store.uri, "retrain"):
        version = register_folder(store.client, NAME, folder, "retrain")
        store.client.set_registered_model_alias(NAME, "champion", version)
        yield store


def parents(store: MlflowStore) -> list:
    experiment = store.client.get_experiment_by_name("retrain").experiment_id
    return store.client.search_runs([experiment], "tags.step = 'retrain'")


def log_feedback(log: str, times: list[datetime]) -> None:
    """A feedback item with its own text (none in the data) given at each of `times`."""
    engine = open_store(log)
    with engine.begin() as connection:
        for i, time_given in enumerate(times):
            row = {"time": time_given, "request_id": f"r{i}", "position": 0, "label": "Sports"}
            connection.execute(FEEDBACK.insert(), row | {"text": f"Local team wins match {i}"})
    engine.dispose()


def test_an_empty_window_registers_nothing(store, tmp_path, small_data):
    log = f"sqlite:///{tmp_path}/log.db"
    open_store(log).dispose()  # the server's tables, no feedback in them
    message = run_retrain(job(log, small_data))
    assert "skipped: no labelled feedback with text" in message
    (parent,) = parents(store)
    assert parent.info.status == "FINISHED" and parent.data.tags["decision"] == "skipped"
    assert parent.data.params["store"] == log and "window_start" in parent.data.params
    assert parent.data.tags["registered_model"] == NAME and mlflow.active_run() is None
    assert len(store.client.search_model_versions(f"name = '{NAME}'")) == 1


def test_an_unreachable_log_fails_the_parent_in_one_line(store, tmp_path, small_data):
    with pytest.raises(UserError, match="cannot be opened") as raised:
        run_retrain(job(f"sqlite:///{tmp_path}/no/such/folder/log.db", small_data))
    assert "\n" not in str(raised.value)
    (parent,) = parents(store)
    assert parent.info.status == "FAILED" and parent.data.tags["decision"] == "failed"


def test_no_champion_to_start_from(store, tmp_path, small_data):
    store.client.delete_registered_model_alias(NAME, "champion")
    with pytest.raises(UserError, match="no champion to start from"):
        run_retrain(job(f"sqlite:///{tmp_path}/log.db", small_data))


def test_a_second_retrain_refuses_while_the_first_runs(store, tmp_path, small_data):
    experiment = store.client.get_experiment_by_name("retrain").experiment_id
    tags = {"step": "retrain", "registered_model": NAME}
    stale = store.client.create_run(
        experiment, start_time=int(time.time() * 1000) - 7 * 3600 * 1000, tags=tags
    )
    log = f"sqlite:///{tmp_path}/log.db"
    open_store(log).dispose()
    # Killed 7 hours ago without ending its run: past lock_hours=6, it does not block.
    assert "skipped" in run_retrain(job(log, small_data))
    running = store.client.create_run(experiment, tags=tags)
    with pytest.raises(
        UserError, match=f"another retrain of {NAME} is running.*{running.info.run_id}"
    ):
        run_retrain(job(log, small_data))
    assert parents(store)[0].info.status == "FAILED"
    assert stale.info.run_id != running.info.run_id


def test_the_window_starts_where_the_last_promoted_retrain_ended(store, tmp_path, small_data):
    experiment = store.client.get_experiment_by_name("retrain").experiment_id
    ended = datetime.now(timezone.utc) - timedelta(minutes=10)
    run = store.client.create_run(
        experiment, tags={"step": "retrain", "registered_model": NAME, "decision": "promoted"}
    )
    store.client.log_param(run.info.run_id, "window_end", ended.isoformat())
    store.client.set_terminated(run.info.run_id)
    start, end = window(job(f"sqlite:///{tmp_path}/log.db", small_data))
    assert start == ended and end - start < timedelta(minutes=11)


def test_feedback_given_at_or_after_the_windows_end_is_left_to_the_next_window(
    store, tmp_path, small_data
):
    """A backfill with `until` stays within it: what came later is not counted (nor trained
    on: the train step gets the same end as -P feedback_until=)."""
    log = f"sqlite:///{tmp_path}/log.db"
    end = datetime.now(timezone.utc) - timedelta(hours=1)
    log_feedback(log, [end, end + timedelta(seconds=1), end + timedelta(minutes=30)])
    arguments = ["--store", log, "--data", str(small_data), "--since", "2h"]
    message = run_retrain(parse_retrain_job([*arguments, "--until", end.isoformat()]))
    assert "skipped: no labelled feedback with text" in message
    (parent,) = parents(store)
    assert parent.data.params["window_end"] == end.isoformat()


def test_a_champion_whose_train_run_cannot_be_read_fails_the_retrain_in_one_line(
    store, tmp_path, small_data
):
    """Its seed and val_fraction decide which rows are validation: not guessed."""
    log = f"sqlite:///{tmp_path}/log.db"
    log_feedback(log, [datetime.now(timezone.utc) - timedelta(minutes=5)])
    # The champion was registered from a folder: no train run behind it.
    with pytest.raises(UserError, match="no source_run_id tag") as raised:
        run_retrain(job(log, small_data))
    assert "cannot read the seed and val_fraction of distrinews version 1" in str(raised.value)
    # A train run behind it, without the params a train run logs.
    experiment = store.client.get_experiment_by_name("retrain").experiment_id
    run_id = store.client.create_run(experiment, tags={"step": "train"}).info.run_id
    store.client.log_param(run_id, "val_fraction", "0.1")
    store.client.set_model_version_tag(NAME, "1", "source_run_id", run_id)
    with pytest.raises(UserError, match=f"train run {run_id}: it has no seed param") as raised:
        run_retrain(job(log, small_data))
    assert "\n" not in str(raised.value)
    for parent in parents(store):
        assert parent.info.status == "FAILED" and parent.data.tags["decision"] == "failed"
        assert "monitor_run_id" not in parent.data.tags  # no step was started


def test_retrain_settings_are_checked():
    for bad in ({"epochs": 0}, {"nproc": "two"}, {"lock_hours": 0}, {"max_int8_drop": -1}):
        with pytest.raises(UserError):
            RetrainConfig(**bad)
