"""`mlflow run . -e train --env-manager uv`: MLflow builds an isolated environment from the
project's own files (conda.yaml's Python and pip lines) with uv, and trains in it."""

import os
import subprocess
import sys

import pytest

from devkit.mlflow_store import MlflowStore, train_run

pytestmark = pytest.mark.timeout(600)


def pip_setting(name: str) -> str:
    """A setting of this machine's pip (e.g. a local wheel folder), as `pip config` says it."""
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
    ).stdout
    values = [
        line.split("=", 1)[1].strip("'")
        for line in listing.splitlines()
        if line.split("=", 1)[0].endswith(f".{name}")
    ]
    return values[-1] if values else ""


def test_a_train_run_builds_and_uses_its_own_uv_environment(tmp_path, tiny_bert, small_data):
    store = MlflowStore(tmp_path)
    experiment_id = store.experiment("uv")
    env = {"MLFLOW_ENV_ROOT": str(tmp_path / "envs")}
    # uv reads its own settings, not pip's: the local wheel folder pip installs from
    # here (a CPU build of torch), uv is given too.
    if find_links := os.environ.get("UV_FIND_LINKS") or pip_setting("find-links"):
        env["UV_FIND_LINKS"] = find_links
    params = {"nproc": 1, "model": tiny_bert, "data": small_data, "epochs": 1}
    params |= {"max_train_rows": 100, "max_eval_rows": 50, "output_dir": tmp_path / "checkpoints"}
    command = store.mlflow_command("train", "uv", params)
    command[command.index("local")] = "uv"
    result = store.run(command, cwd=store.folder, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    run = train_run(store, experiment_id)
    assert run.info.status == "FINISHED" and "test/accuracy" in run.data.metrics
    assert run.data.tags["mlflow.project.env"] == "uv"
    (environment,) = (tmp_path / "envs").iterdir()
    python = environment / "bin" / "python"
    assert f"source {environment}/bin/activate" in result.stderr, "the run used that environment"
    check = subprocess.run(
        [str(python), "-c", "import torch, transformers, mlflow; print(torch.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0 and check.stdout.startswith("2.13.0"), check.stderr[-2000:]
