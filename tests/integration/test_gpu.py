"""The CUDA path: NCCL, bf16 autocast, CUDA RNG state in checkpoints, export of a GPU checkpoint.

Skipped without a CUDA GPU (tests/conftest.py); `benchmarks/gpu_check.sh` runs
these with a real training run and the GPU scaling benchmark.
"""

import pytest
import torch

from devkit.mlflow_store import TINY_LR, MlflowStore, train_run
from distrinews.cli import torchrun_command
from distrinews.train import checkpoint

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(900)]


def gpu_store(folder) -> MlflowStore:
    store = MlflowStore(folder)
    store.env.pop("CUDA_VISIBLE_DEVICES")  # the other tests hide the GPUs; these use them
    return store


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory, tiny_bert, small_data):
    """A 2-epoch run of the tiny BERT on up to 2 GPUs, one process each."""
    store = gpu_store(tmp_path_factory.mktemp("gpu"))
    experiment_id = store.experiment("gpu")
    output_dir = store.folder / "checkpoints"
    nproc = min(2, torch.cuda.device_count())
    params = {"nproc": nproc, "model": tiny_bert, "data": small_data, "epochs": 2}
    params |= {"batch_size": 16, "lr": TINY_LR, "output_dir": output_dir, "keep_checkpoints": 0}
    result = store.mlflow_run("train", "gpu", params)
    assert result.returncode == 0, result.stderr[-4000:]
    return store, train_run(store, experiment_id), output_dir, nproc


def test_training_on_gpus_uses_nccl_and_bf16(gpu_run):
    store, run, _, nproc = gpu_run
    tags, params = run.data.tags, run.data.params
    assert (tags["backend"], tags["device"], params["world_size"]) == ("nccl", "cuda", str(nproc))
    assert params["compute_precision"] == "bf16", "precision=auto picks bf16 on CUDA"
    assert run.data.metrics["train/replica_weight_divergence"] == 0.0
    history = store.client.get_metric_history(run.info.run_id, "val/loss")
    val_loss = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert val_loss[-1] < val_loss[0], "it learns"


def test_gpu_checkpoints_carry_every_ranks_cuda_rng(gpu_run):
    _, run, output_dir, nproc = gpu_run
    folder = checkpoint.latest_checkpoint(output_dir / run.info.run_id)
    state = checkpoint.load_training_state(folder)
    assert len(state["rng"]) == nproc
    assert all(rng["cuda"].dtype == torch.uint8 for rng in state["rng"])
    assert not torch.equal(state["rng"][0]["cuda"], state["rng"][-1]["cuda"]) or nproc == 1


def test_a_gpu_run_resumes_from_its_checkpoint(gpu_run, tiny_bert, small_data):
    store, run, output_dir, nproc = gpu_run
    options = {"model": tiny_bert, "data": small_data, "batch_size": 16, "lr": TINY_LR}
    command = torchrun_command(
        nproc, epochs=3, resume="true", output_dir=output_dir, keep_checkpoints=0, **options
    )
    result = store.run(command, env={"MLFLOW_RUN_ID": run.info.run_id})
    assert result.returncode == 0, result.stderr[-4000:]
    assert "resuming from" in result.stderr and "epoch 3/3" in result.stderr
    assert store.client.get_run(run.info.run_id).info.status == "FINISHED"
    assert checkpoint.latest_checkpoint(output_dir / run.info.run_id).name == "epoch-3"


def test_a_gpu_checkpoint_exports_to_int8_onnx(gpu_run, small_data, tmp_path):
    store, run, output_dir, _ = gpu_run
    store.experiment("gpu-export")
    epoch_2 = output_dir / run.info.run_id / "epoch-2"
    params = {"checkpoint": epoch_2, "data": small_data, "output": tmp_path / "onnx"}
    result = store.mlflow_run("export", "gpu-export", params | {"max_accuracy_drop": 5})
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "onnx" / "model_optimized_quantized.onnx").is_file()
