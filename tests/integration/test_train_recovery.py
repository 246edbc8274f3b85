"""A worker killed mid-epoch under `torchrun --max-restarts`, and two nodes training together."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from devkit.mlflow_store import MlflowStore
from devkit.processes import REPO, processes_mentioning, rank_pid
from devkit.servers import free_port
from distrinews.cli import torchrun_command
from distrinews.train import checkpoint

pytestmark = pytest.mark.timeout(600)

#: 400 training rows, batch 4 per rank, 2 ranks: 50 optimizer steps an epoch.
TRAIN_ROWS = 400
STEPS_PER_EPOCH = 50


def training_options(tiny_bert, small_data, output_dir: Path, experiment: str) -> dict:
    return {
        "model": tiny_bert,
        "data": small_data,
        "epochs": 2,
        "max_train_rows": TRAIN_ROWS,
        "batch_size": 4,
        "log_every": 1,
        "threads": 1,
        "output_dir": output_dir,
        "experiment": experiment,
    }


def the_run(store: MlflowStore, experiment: str):
    (run,) = store.client.search_runs(
        [store.client.get_experiment_by_name(experiment).experiment_id]
    )
    return run


def wait_for_epoch_2(store: MlflowStore, process: subprocess.Popen, output_dir: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, "training ended before epoch 2 was observed"
        experiment = store.client.get_experiment_by_name("restarted")
        runs = store.client.search_runs([experiment.experiment_id])
        run_folder = output_dir / runs[0].info.run_id if runs else output_dir / "none"
        if checkpoint.latest_checkpoint(run_folder) is not None:
            steps = [
                m.step for m in store.client.get_metric_history(runs[0].info.run_id, "train/loss")
            ]
            if steps and max(steps) > STEPS_PER_EPOCH:
                assert checkpoint.latest_checkpoint(run_folder).name == "epoch-1"
                return
        time.sleep(0.05)
    raise AssertionError("no epoch-2 step within 180 s")


def final_weights(output_dir: Path, run) -> dict[str, torch.Tensor]:
    folder = checkpoint.latest_checkpoint(output_dir / run.info.run_id)
    return load_file(folder / "model.safetensors")


def test_a_killed_worker_a_manual_resume_and_a_restart_in_the_first_epoch(
    tmp_path, tiny_bert, small_data
):
    """Three runs write into one output_dir; each resumes and prunes only its own checkpoints
    (the straight run's epoch-2 outranks the restarted run's epoch-1 by number).

    1. A worker killed in epoch 2 under plain torchrun: the restart finds its run by
       TORCHELASTIC_RUN_ID and continues it exactly (the straight run is the reference).
    2. That run resumed by hand to a third epoch: `mlflow run --run-id <id> -P resume=true`.
    3. A new run under `mlflow run` whose worker dies in its first epoch, before any
       checkpoint of its own, while the folder holds the others': it starts its own run
       again (MLFLOW_RUN_ID), not an older one.
    One test, so that one straight run is the reference for all three (it was two tests
    with two reference runs)."""
    store = MlflowStore(tmp_path)
    for name in ("straight", "restarted"):
        store.experiment(name)
    output_dir = tmp_path / "checkpoints"
    command = torchrun_command(2, **training_options(tiny_bert, small_data, output_dir, "straight"))
    result = store.run(command)
    assert result.returncode == 0, result.stderr[-3000:]
    straight = the_run(store, "straight")

    restarted = kill_a_worker_in_epoch_2(store, tiny_bert, small_data, output_dir)
    assert restarted.info.status == "FINISHED", "the same run continued and finished"
    # Every step logged once, with the values of the uninterrupted run.
    for key in ("train/loss", "val/accuracy", "test/accuracy"):
        expected = sorted(
            (m.step, m.value) for m in store.client.get_metric_history(straight.info.run_id, key)
        )
        logged = sorted(
            (m.step, m.value) for m in store.client.get_metric_history(restarted.info.run_id, key)
        )
        assert [step for step, _ in logged] == [step for step, _ in expected], key
        assert logged == expected, key
    # Model, optimizer, scheduler, data order and every rank's RNG resumed:
    # the weights are bit for bit those of the uninterrupted run.
    expected_weights = final_weights(output_dir, straight)
    weights = final_weights(output_dir, restarted)
    assert expected_weights.keys() == weights.keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, expected_weights[name]), name
    assert processes_mentioning(str(output_dir)) == []

    resume_by_hand_to_a_third_epoch(store, restarted, tiny_bert, small_data, output_dir)
    # The straight run's checkpoint is untouched by the other run's saves and pruning.
    assert checkpoint.latest_checkpoint(output_dir / straight.info.run_id).name == "epoch-2"

    restart_in_the_first_epoch(store, the_run(store, "restarted"), tiny_bert, small_data)
    assert checkpoint.latest_checkpoint(output_dir / straight.info.run_id).name == "epoch-2"


def kill_a_worker_in_epoch_2(store: MlflowStore, tiny_bert, small_data, output_dir: Path):
    """A 2-epoch run under `torchrun --max-restarts 1` whose rank 1 is killed once epoch 1's
    checkpoint is complete and a step of epoch 2 is logged; its MLflow run once it ends."""
    log_file = store.folder / "restarted.log"
    command = torchrun_command(
        2,
        ("--standalone", "--max-restarts", "1"),
        **training_options(tiny_bert, small_data, output_dir, "restarted"),
    )
    with log_file.open("w") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=store.env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_for_epoch_2(store, process, output_dir)
            os.kill(rank_pid(output_dir, 1), signal.SIGKILL)
            assert process.wait(timeout=300) == 0, log_file.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()
    output = log_file.read_text()
    assert "resuming from" in output and "epoch-1" in output
    return the_run(store, "restarted")


def resume_by_hand_to_a_third_epoch(store, restarted, tiny_bert, small_data, output_dir) -> None:
    """As the README says: mlflow run . -e train --run-id <run id> -P resume=true -P epochs=3"""

    def val_accuracy() -> list:
        history = store.client.get_metric_history(restarted.info.run_id, "val/accuracy")
        return sorted((m.step, m.value) for m in history)

    before = val_accuracy()
    options = training_options(tiny_bert, small_data, output_dir, "restarted")
    del options["experiment"]
    params = options | {"epochs": 3, "resume": "true", "nproc": 2}
    command = store.mlflow_command("train", "restarted", params)
    result = store.run(command + ["--run-id", restarted.info.run_id], cwd=store.folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stderr and "epoch-2" in result.stderr
    assert "epoch 2/3" not in result.stderr and "epoch 3/3" in result.stderr
    resumed = the_run(store, "restarted")  # still the one run
    assert resumed.info.run_id == restarted.info.run_id and resumed.info.status == "FINISHED"
    after = val_accuracy()
    assert after[:2] == before and len(after) == 3 and after[2][0] > before[-1][0]
    assert checkpoint.latest_checkpoint(output_dir / resumed.info.run_id).name == "epoch-3"


def test_two_nodes_train_one_model_into_one_run(tmp_path, tiny_bert, small_data):
    store = MlflowStore(tmp_path)
    store.experiment("multinode")
    output_dir = tmp_path / "checkpoints"
    options = training_options(tiny_bert, small_data, output_dir, "multinode") | {"epochs": 1}
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = []
    for node_rank in (0, 1):
        launcher = ("--nnodes", "2", "--node-rank", str(node_rank), "--rdzv-backend", "c10d")
        launcher += ("--rdzv-endpoint", endpoint, "--rdzv-id", "test")
        log = (tmp_path / f"node{node_rank}.log").open("w")
        nodes.append(
            subprocess.Popen(
                torchrun_command(1, launcher, **options),
                cwd=REPO,
                env=store.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        codes = [node.wait(timeout=300) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    logs = [(tmp_path / f"node{i}.log").read_text()[-2000:] for i in (0, 1)]
    assert codes == [0, 0], logs
    run = the_run(store, "multinode")  # one run: only global rank 0 logs
    assert run.info.status == "FINISHED"
    assert run.data.params["world_size"] == "2"
    # Both nodes' ranks shared each epoch: half the steps of one process.
    rows = int(run.data.params["train_rows"])
    steps = [m.step for m in store.client.get_metric_history(run.info.run_id, "train/loss")]
    assert max(steps) == -(-rows // (2 * 4))
    assert run.data.metrics["train/replica_weight_divergence"] == 0.0, "same weights on both nodes"


def restart_in_the_first_epoch(store: MlflowStore, older, tiny_bert, small_data) -> None:
    """A 2-epoch run into `older`'s experiment and output_dir, under `mlflow run -P
    max_restarts=1`, whose rank 1 dies in its first epoch: the restart trains it from scratch
    in its own MLflow run; `older` gets nothing and keeps its checkpoint."""
    experiment_id = older.info.experiment_id
    output_dir = store.folder / "checkpoints"
    before = checkpoint.latest_checkpoint(output_dir / older.info.run_id).name
    second = {"model": tiny_bert, "data": small_data, "output_dir": output_dir, "nproc": 2}
    second |= {"threads": 1, "max_eval_rows": 50, "log_every": 1}
    second |= {"epochs": 2, "batch_size": 4, "max_restarts": 1, "max_train_rows": TRAIN_ROWS}
    log_file = store.folder / "second.log"
    with log_file.open("w") as log:
        process = store.start_mlflow_run("train", "restarted", second, log)
        try:
            newer = wait_for_a_step_of_a_new_run(store, experiment_id, older, process)
            assert checkpoint.latest_checkpoint(output_dir / newer) is None, "still epoch 1"
            os.kill(rank_pid(output_dir, 1), signal.SIGKILL)
            assert process.wait(timeout=300) == 0, log_file.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()
    assert "resuming from nothing: no checkpoint yet" in log_file.read_text()

    runs = {run.info.run_id: run for run in store.runs(experiment_id)}
    assert runs.keys() == {older.info.run_id, newer}, "no third run, and the older one kept"
    assert runs[newer].info.status == "FINISHED"
    history = store.client.get_metric_history(newer, "val/accuracy")
    assert len({m.step for m in history}) == 2, "the second run trained its own 2 epochs"
    assert runs[older.info.run_id].data.metrics == older.data.metrics, "nothing logged there"
    assert checkpoint.latest_checkpoint(output_dir / newer).name == "epoch-2"
    assert checkpoint.latest_checkpoint(output_dir / older.info.run_id).name == before


def wait_for_a_step_of_a_new_run(store, experiment_id, older, process) -> str:
    """The id of the run that is not `older`, once it has logged a training step."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, "training ended before a step was observed"
        for run in store.runs(experiment_id):
            new = run.info.run_id != older.info.run_id
            if new and store.client.get_metric_history(run.info.run_id, "train/loss"):
                return run.info.run_id
        time.sleep(0.05)
    raise AssertionError("the second run logged no step within 180 s")
