"""Training against a real `mlflow server` on 127.0.0.1, and against one that is not there."""

import time
from pathlib import Path

import mlflow
import pytest

from devkit.mlflow_store import MlflowStore
from devkit.servers import MlflowServer, free_port
from distrinews.cli import torchrun_command

pytestmark = pytest.mark.timeout(400)


@pytest.fixture()
def tracking_server(tmp_path):
    server = MlflowServer(tmp_path, MlflowStore(tmp_path).env)
    try:
        server.wait_ready(timeout=120)
        yield server
    finally:
        server.stop()


def test_training_logs_to_a_tracking_server(tracking_server, tmp_path, tiny_bert, small_data):
    store = MlflowStore(tmp_path)
    store.env |= {"MLFLOW_TRACKING_URI": tracking_server.url}
    command = torchrun_command(
        2,
        model=tiny_bert,
        data=small_data,
        epochs=1,
        max_train_rows=128,
        output_dir=tmp_path / "checkpoints",
        experiment="remote",
    )
    result = store.run(command)
    assert result.returncode == 0, result.stderr[-3000:]

    client = mlflow.MlflowClient(tracking_server.url)
    experiment_id = client.get_experiment_by_name("remote").experiment_id
    (run,) = client.search_runs([experiment_id])
    assert run.info.status == "FINISHED"
    assert "test/accuracy" in run.data.metrics and run.data.params["train_rows"] == "128"
    # Not named on the command line: named after its settings.
    assert run.info.run_name == f"{tiny_bert.name} lr1e-4 b32x2 e1 n128"
    (model,) = client.search_logged_models([experiment_id])
    assert (
        model.source_run_id == run.info.run_id
        and model.name == f"{tiny_bert.name}-{small_data.name}"
    )
    # The files went through the server into its artifact store.
    stored = {p.name: p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()}
    assert {"confusion_matrix.png", "training_curves.png", "model.safetensors"} <= set(stored)
    assert stored["confusion_matrix.png"].read_bytes().startswith(b"\x89PNG")
    png = Path(
        client.download_artifacts(
            run.info.run_id, "confusion_matrix.png", str(tmp_path / "download")
        )
    )
    assert png.read_bytes() == stored["confusion_matrix.png"].read_bytes()


def test_unreachable_tracking_server_fails_before_training(tmp_path, tiny_bert, small_data):
    store = MlflowStore(tmp_path)
    nobody = f"http://127.0.0.1:{free_port()}"
    command = torchrun_command(
        2, model=tiny_bert, data=small_data, output_dir=tmp_path / "checkpoints"
    )
    start = time.monotonic()
    store.env |= {"MLFLOW_TRACKING_URI": nobody}
    result = store.run(command, timeout=120)
    assert result.returncode != 0
    assert time.monotonic() - start < 60, "fails fast, not after MLflow's retries"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: the MLflow tracking server {nobody} does not answer ([Errno 111] Connection "
        "refused); start it, or unset MLFLOW_TRACKING_URI to log to ./mlflow.db"
    ]
    assert not (tmp_path / "checkpoints").exists()
