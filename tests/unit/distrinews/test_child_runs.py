"""A workflow's step as a child run: the command `mlflow run` would run, a run under the
parent, its end status whatever the process did."""

import sys

import mlflow

from devkit.mlflow_store import MlflowStore, step_in_process
from distrinews.child_runs import run_child


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
