"""Ctrl-C and crashes under plain torchrun: the run ends KILLED or FAILED, never RUNNING."""

import os
import signal
import subprocess
import time

import pytest

from distrinews import checkpoint
from pipelines.train import torchrun_command
from tests.conftest import REPO, MlflowStore
from tests.test_train_e2e import processes_mentioning

pytestmark = pytest.mark.integration


def start_long_training(
    store: MlflowStore, tiny_bert, small_data, output_dir, log
) -> subprocess.Popen:
    """Two ranks on many epochs of the tiny model: still training when interrupted."""
    command = torchrun_command(
        2,
        model=tiny_bert,
        data=small_data,
        epochs=200,
        batch_size=16,
        output_dir=output_dir,
        log_every=1,
        experiment="interrupt",
    )
    # A session of its own, like a terminal's foreground job: Ctrl-C reaches every process.
    return subprocess.Popen(
        command,
        cwd=REPO,
        env=store.env,
        start_new_session=True,
        stdout=log,
        stderr=subprocess.STDOUT,  # a file: a full pipe would stall training
    )


def wait_for_training_steps(store: MlflowStore, process: subprocess.Popen, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "training exited early"
        experiment = store.client.get_experiment_by_name("interrupt")
        runs = store.client.search_runs([experiment.experiment_id]) if experiment else []
        if runs and store.client.get_metric_history(runs[0].info.run_id, "train_loss"):
            return runs[0].info.run_id
        time.sleep(0.5)
    raise AssertionError("training did not start")


def rank_pids(output_dir) -> list[int]:
    return [
        int(line.split()[0])
        for line in subprocess.run(
            ["pgrep", "-af", f"pipelines.train.*{output_dir}"], capture_output=True, text=True
        ).stdout.splitlines()
        if "torchrun" not in line
    ]


@pytest.mark.parametrize(
    "fault, expected_status",
    [
        ("ctrl-c", {"KILLED"}),
        ("SIGTERM to the launcher", {"KILLED"}),
        ("kill -9 one rank", {"FAILED", "KILLED"}),
    ],
)
def test_interrupted_training_leaves_no_running_run(
    fault, expected_status, tmp_path, tiny_bert, small_data
):
    store = MlflowStore(tmp_path)
    store.experiment("interrupt")
    output_dir = tmp_path / "checkpoints"
    log = (tmp_path / "training.log").open("w")
    process = start_long_training(store, tiny_bert, small_data, output_dir, log)
    try:
        run_id = wait_for_training_steps(store, process)
        if fault == "ctrl-c":
            os.killpg(process.pid, signal.SIGINT)
        elif fault == "SIGTERM to the launcher":
            os.kill(process.pid, signal.SIGTERM)  # what a scheduler's preemption sends
        else:
            os.kill(max(rank_pids(output_dir)), signal.SIGKILL)
        interrupted = time.monotonic()
        process.wait(timeout=60)
        assert time.monotonic() - interrupted < 20, "every process gone within seconds"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode != 0
    assert store.client.get_run(run_id).info.status in expected_status
    assert processes_mentioning(str(output_dir)) == []
    # Whatever epoch it reached, `latest` names only a complete checkpoint.
    latest = checkpoint.latest_checkpoint(output_dir)
    if (output_dir / "latest").exists():
        assert latest is not None and (latest / "model.safetensors").is_file()
