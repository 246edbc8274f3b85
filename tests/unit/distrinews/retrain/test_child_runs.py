"""A workflow's step as a child run: the command `mlflow run` would run, a run under the
parent, its end status whatever the process did."""

import sys

import mlflow

from devkit.mlflow_store import MlflowStore, step_in_process
from distrinews.retrain.child_runs import run_child


def test_a_step_that_dies_without_ending_its_run_is_marked_failed(tmp_path):
    store = MlflowStore(tmp_path)
    store.experiment("flow")
    with step_in_process(store.uri, "flow"), mlflow.start_run() as parent:
        # Exits at once, as a killed step would: its run is left RUNNING by the step.
        status, run = run_child("monitor", [sys.executable, "-c", "raise SystemExit(3)"], parent)
    assert status == 3 and run.info.status == "FAILED"
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.tags["step"] == "monitor"


def test_the_step_runs_in_the_child_run(tmp_path):
    store = MlflowStore(tmp_path)
    store.experiment("flow")
    code = "import mlflow; mlflow.start_run(); mlflow.log_metric('seen', 1); mlflow.end_run()"
    with step_in_process(store.uri, "flow"), mlflow.start_run() as parent:
        status, run = run_child("monitor", [sys.executable, "-c", code], parent)
    assert status == 0 and run.info.status == "FINISHED" and run.data.metrics["seen"] == 1


def test_the_command_printed_for_a_step_masks_every_url_password(tmp_path, capfd):
    store = MlflowStore(tmp_path)
    store.experiment("flow")
    command = [sys.executable, "-c", "pass", "--store", "postgresql://logger:S3cretPW@db/log"]
    command += ["--feedback=postgresql+psycopg://u:p@ss:word@db:5432/log", "--data", "/tmp/x"]
    with step_in_process(store.uri, "flow"), mlflow.start_run() as parent:
        status, _ = run_child("train", command, parent)
    printed = capfd.readouterr().err
    assert status == 0 and "--store postgresql://logger:***@db/log" in printed
    assert "postgresql+psycopg://u:***@db:5432/log --data /tmp/x" in printed
    assert "S3cretPW" not in printed and "word" not in printed
