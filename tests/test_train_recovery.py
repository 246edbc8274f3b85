"""A worker killed mid-epoch under `torchrun --max-restarts`, and two nodes training together."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distrinews import checkpoint
from pipelines.train import torchrun_command
from tests.helpers import REPO, MlflowStore, processes_mentioning, rank_pid
from tests.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

#: 760 training rows, batch 4 per rank, 2 ranks: 95 optimizer steps an epoch.
STEPS_PER_EPOCH = 95


def training_options(tiny_bert, small_data, output_dir: Path, experiment: str) -> dict:
    return {
        "model": tiny_bert,
        "data": small_data,
        "epochs": 2,
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
        if checkpoint.latest_checkpoint(output_dir) is not None:
            experiment = store.client.get_experiment_by_name("restarted")
            runs = store.client.search_runs([experiment.experiment_id])
            steps = [
                m.step for m in store.client.get_metric_history(runs[0].info.run_id, "train/loss")
            ]
            if steps and max(steps) > STEPS_PER_EPOCH:
                assert checkpoint.latest_checkpoint(output_dir).name == "epoch-1"
                return
        time.sleep(0.05)
    raise AssertionError("no epoch-2 step within 180 s")


def final_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint.latest_checkpoint(output_dir) / "model.safetensors")


def test_a_killed_worker_and_then_a_manual_resume_continue_the_same_run_exactly(
    tmp_path, tiny_bert, small_data
):
    store = MlflowStore(tmp_path)
    for name in ("straight", "restarted"):
        store.experiment(name)
    straight_dir, restarted_dir = tmp_path / "straight", tmp_path / "restarted"
    command = torchrun_command(
        2, **training_options(tiny_bert, small_data, straight_dir, "straight")
    )
    result = store.run(command)
    assert result.returncode == 0, result.stderr[-3000:]

    log_file = tmp_path / "restarted.log"
    command = torchrun_command(
        2,
        ("--standalone", "--max-restarts", "1"),
        **training_options(tiny_bert, small_data, restarted_dir, "restarted"),
    )
    with log_file.open("w") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=store.env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            # Kill rank 1 once epoch 1's checkpoint is complete and a step of
            # epoch 2 has been logged: the restart must resume mid-run.
            wait_for_epoch_2(store, process, restarted_dir)
            os.kill(rank_pid(restarted_dir, 1), signal.SIGKILL)
            assert process.wait(timeout=300) == 0, log_file.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()
    output = log_file.read_text()
    assert "resuming from" in output and "epoch-1" in output

    straight, restarted = the_run(store, "straight"), the_run(store, "restarted")
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
    expected_weights, weights = final_weights(straight_dir), final_weights(restarted_dir)
    assert expected_weights.keys() == weights.keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, expected_weights[name]), name
    assert processes_mentioning(str(restarted_dir)) == []

    # Later, by hand (-P resume=true), the finished run goes on to a third epoch.
    def val_accuracy() -> list:
        history = store.client.get_metric_history(restarted.info.run_id, "val/accuracy")
        return sorted((m.step, m.value) for m in history)

    before = val_accuracy()
    options = training_options(tiny_bert, small_data, restarted_dir, "restarted")
    result = store.run(torchrun_command(2, **options | {"epochs": 3, "resume": "true"}))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stderr and "epoch-2" in result.stderr
    assert "epoch 2/3" not in result.stderr and "epoch 3/3" in result.stderr
    resumed = the_run(store, "restarted")  # still the one run: the checkpoint's
    assert resumed.info.run_id == restarted.info.run_id and resumed.info.status == "FINISHED"
    after = val_accuracy()
    assert after[:2] == before and len(after) == 3 and after[2][0] > before[-1][0]
    assert checkpoint.latest_checkpoint(restarted_dir).name == "epoch-3"


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
