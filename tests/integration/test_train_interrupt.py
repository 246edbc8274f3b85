"""Ctrl-C, kills and crashes under plain torchrun: the run ends KILLED or FAILED, never RUNNING,
and the newest checkpoint stays complete."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from transformers import AutoModelForSequenceClassification

from devkit.mlflow_store import MlflowStore
from devkit.processes import REPO, processes_mentioning, rank_pid
from distrinews.cli import torchrun_command
from distrinews.train import checkpoint

pytestmark = pytest.mark.timeout(300)

#: 760 training rows, batch 16 per rank, 2 ranks: 24 optimizer steps an epoch.
STEPS_PER_EPOCH = 24


def start_long_training(store: MlflowStore, tiny_bert, small_data, output_dir: Path, log):
    """Two ranks on many epochs of the tiny model: still training when interrupted."""
    command = torchrun_command(
        2,
        model=tiny_bert,
        data=small_data,
        epochs=200,
        batch_size=16,
        output_dir=output_dir,
        log_every=1,
        keep_checkpoints=0,
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


def wait_for_step(store: MlflowStore, process: subprocess.Popen, step: int, timeout: float = 180):
    """The run id, once a train/loss at `step` or later has been logged."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "training exited early"
        experiment = store.client.get_experiment_by_name("interrupt")
        runs = store.client.search_runs([experiment.experiment_id]) if experiment else []
        if runs:
            history = store.client.get_metric_history(runs[0].info.run_id, "train/loss")
            if history and max(m.step for m in history) >= step:
                return runs[0].info.run_id
        time.sleep(0.2)
    raise AssertionError(f"training did not reach step {step}")


def interrupt(fault: str, process: subprocess.Popen, output_dir: Path) -> None:
    if fault == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)
    elif fault == "SIGTERM to the launcher":
        os.kill(process.pid, signal.SIGTERM)  # what a scheduler's preemption sends
    else:
        os.kill(rank_pid(output_dir, 1), signal.SIGKILL)


@pytest.mark.parametrize(
    "fault, expected_status",
    [
        ("ctrl-c", {"KILLED"}),
        ("SIGTERM to the launcher", {"KILLED"}),
        ("kill -9 rank 1", {"FAILED", "KILLED"}),
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
        # Epoch 1's checkpoint is written and epoch 2 is under way.
        run_id = wait_for_step(store, process, STEPS_PER_EPOCH + 2)
        interrupt(fault, process, output_dir)
        interrupted = time.monotonic()
        process.wait(timeout=60)
        assert time.monotonic() - interrupted < 20, "every process gone within seconds"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode != 0
    assert store.client.get_run(run_id).info.status in expected_status
    assert processes_mentioning(str(output_dir)) == []
    # Wherever the interruption fell, even mid-write, `latest` names a complete checkpoint.
    latest = checkpoint.latest_checkpoint(output_dir / run_id)
    assert latest is not None and latest.name.startswith("epoch-")
    assert checkpoint.load_training_state(latest)["progress"]["epoch"] == int(latest.name[6:])
    AutoModelForSequenceClassification.from_pretrained(latest)  # loads: weights complete


def test_a_crash_in_a_worker_leaves_the_run_failed(tmp_path, tiny_bert, small_data):
    """Rank 0 raises while saving epoch 1 (a file stands where the checkpoint goes).

    The run is made first and named by MLFLOW_RUN_ID, as `mlflow run` does, so
    the test knows its checkpoint folder.
    """
    store = MlflowStore(tmp_path)
    experiment_id = store.experiment("crash")
    run_id = store.client.create_run(experiment_id).info.run_id
    output_dir = tmp_path / "checkpoints"
    (output_dir / run_id).mkdir(parents=True)
    (output_dir / run_id / "epoch-1").write_text("not a folder")
    command = torchrun_command(
        2, model=tiny_bert, data=small_data, epochs=2, batch_size=16, output_dir=output_dir
    )
    result = store.run(command, timeout=300, env={"MLFLOW_RUN_ID": run_id})
    assert result.returncode != 0
    assert "Traceback" in result.stderr, "an unexpected error keeps its traceback"
    (run,) = store.runs(experiment_id)
    assert run.info.status == "FAILED"
    assert "Error" in run.data.tags["error"] and "epoch-1" in run.data.tags["error"]
    assert checkpoint.latest_checkpoint(output_dir / run_id) is None, "no half-written checkpoint"
    assert processes_mentioning(str(output_dir)) == []
