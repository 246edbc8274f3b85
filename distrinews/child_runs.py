"""A workflow's steps as child MLflow runs, each in a process of its own (MLflow's multistep
pattern).

Each step runs as `mlflow run` would start it, from the same command spec
(`cli.step_command`), with MLFLOW_RUN_ID naming a run created here under the
workflow's run. Unlike `mlflow.projects.run`, an interrupted workflow stops the
step's whole process (torchrun and its workers, too) and marks its run KILLED.
"""

import os
import subprocess
import sys
from typing import Any

#: Seconds a step has to end its run after SIGTERM before it is killed.
STOP_GRACE_SECONDS = 60


def run_child(step: str, command: list[str], parent: Any) -> tuple[int, Any]:
    """Run `command` as `step`, a child run of `parent`; (its exit status, its run as it ended).

    Its output goes to this process's. KeyboardInterrupt (Ctrl-C, or SIGTERM through
    `signals.raise_on_sigterm`) stops it, ends its run KILLED, and is raised again.
    """
    import mlflow

    client = mlflow.MlflowClient()
    # Tagged with its step now: a step stopped before it tags its own run still says what it was.
    tags = {"mlflow.parentRunId": parent.info.run_id, "step": step}
    child = client.create_run(parent.info.experiment_id, tags=tags)
    run_id = child.info.run_id
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_EXPERIMENT_NAME",)}
    env |= {"MLFLOW_RUN_ID": run_id, "MLFLOW_EXPERIMENT_ID": parent.info.experiment_id}
    print(f"retrain: {step} in run {run_id}: {' '.join(command)}", file=sys.stderr, flush=True)
    process = subprocess.Popen(command, env=env)
    try:
        status = process.wait()
    except KeyboardInterrupt:
        stop(process)
        end_if_running(client, run_id, "KILLED")
        raise
    # A step that died without ending its run (killed, out of memory) leaves it RUNNING.
    end_if_running(client, run_id, "FINISHED" if status == 0 else "FAILED")
    return status, client.get_run(run_id)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, time to end its run (torchrun passes it to its workers), then SIGKILL."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def end_if_running(client: Any, run_id: str, status: str) -> None:
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, status)
