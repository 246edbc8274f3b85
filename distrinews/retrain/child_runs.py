"""A workflow's steps as child MLflow runs, each in a process of its own (MLflow's multistep
pattern).

Each step runs as `mlflow run` would start it, from the same command spec
(`cli.step_command`), with MLFLOW_RUN_ID naming a run created here under the
workflow's run. Unlike `mlflow.projects.run`, an interrupted workflow stops the
step's whole process (torchrun and its workers, too) and marks its run KILLED.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
from typing import Any

import psutil

from distrinews.signals import further_signals

#: Seconds a step has to end its run after SIGTERM before it is killed.
STOP_GRACE_SECONDS = 60

#: The password of a URL (`scheme://user:password@host`), up to the last @ before the path.
URL_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^/\s]*@")


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
    print(f"retrain: {step} in run {run_id}: {shown_command(command)}", file=sys.stderr, flush=True)
    process = subprocess.Popen(command, env=env)
    try:
        status = process.wait()
    except KeyboardInterrupt:
        # A further Ctrl-C or SIGTERM while the step stops kills it at once, instead of
        # leaving this block half-way with the step running and its run RUNNING.
        with further_signals(lambda: kill_tree(process)):
            stop(process)
            end_if_running(client, run_id, "KILLED")
        raise
    # A step that died without ending its run (killed, out of memory) leaves it RUNNING.
    end_if_running(client, run_id, "FINISHED" if status == 0 else "FAILED")
    return status, client.get_run(run_id)


def shown_command(command: list[str]) -> str:
    """`command` fit for a log line: the password of every URL in it masked (a step's
    command carries the prediction log's URL, and output is often kept in files)."""
    return " ".join(URL_PASSWORD.sub(r"\1***@", arg) for arg in command)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, time to end its run (torchrun passes it to its workers), then SIGKILL to
    the step and everything it started."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        kill_tree(process)
        process.wait()


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the step and every process under it. It does not wait (the caller does), so
    a signal handler may call it while `stop` waits.

    Killing the step alone is not enough: torchrun starts each worker in a session of its
    own, so neither its death nor a signal to its process group reaches them. Each process
    is frozen (SIGSTOP) before its children are read, so none starts another unseen.
    """
    if process.returncode is not None:  # waited for: its pid may be another process's now
        return
    try:
        family = frozen_family(psutil.Process(process.pid))
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGKILL)


def frozen_family(root: psutil.Process) -> list[psutil.Process]:
    """`root` and its descendants, each stopped (SIGSTOP) before its children are listed."""
    family, waiting = [], [root]
    while waiting:
        member = waiting.pop()
        try:
            member.send_signal(signal.SIGSTOP)
            waiting += member.children()
        except psutil.NoSuchProcess:
            continue
        family.append(member)
    return family


def end_if_running(client: Any, run_id: str, status: str) -> None:
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, status)
