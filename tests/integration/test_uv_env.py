"""`mlflow run . -e train --env-manager uv`: MLflow builds an isolated environment from the
project's own files (conda.yaml's Python and pip lines) with uv, and trains in it. The same
launch checks how `mlflow run` names the run and picks its experiment."""

import os
import subprocess
import sys

import pytest

from devkit.mlflow_store import MlflowStore
from devkit.processes import REPO

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


def test_a_uv_run_builds_its_own_environment_and_honours_experiment_and_run_name(
    tmp_path, tiny_bert, small_data
):
    """One `mlflow run` as a user types it with uv: MLflow builds the environment and trains in
    it; MLFLOW_EXPERIMENT_NAME picks the experiment, --run-name wins; system metrics off."""
    store = MlflowStore(tmp_path)
    store.experiment("news")
    env = {"MLFLOW_ENV_ROOT": str(tmp_path / "envs"), "MLFLOW_EXPERIMENT_NAME": "news"}
    # uv reads its own settings, not pip's: the local wheel folder pip installs from
    # here (a CPU build of torch), uv is given too.
    if find_links := os.environ.get("UV_FIND_LINKS") or pip_setting("find-links"):
        env["UV_FIND_LINKS"] = find_links
    command = ["mlflow", "run", str(REPO), "-e", "train", "--env-manager", "uv"]
    command += ["--run-name", "baseline"]
    params = {"nproc": 1, "model": tiny_bert, "data": small_data, "epochs": 1}
    params |= {"max_train_rows": 64, "max_eval_rows": 32, "system_metrics": "false"}
    params |= {"output_dir": tmp_path / "checkpoints"}
    command += [arg for key, value in params.items() for arg in ("-P", f"{key}={value}")]
    result = store.run(command, cwd=store.folder, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Default experiment" not in result.stderr
    (run,) = store.runs(store.client.get_experiment_by_name("news").experiment_id)
    assert run.info.run_name == "baseline" and run.info.status == "FINISHED"
    assert "test/accuracy" in run.data.metrics
    assert not [key for key in run.data.metrics if key.startswith("system/")]
    assert run.data.tags["mlflow.project.env"] == "uv"
    (environment,) = (tmp_path / "envs").iterdir()
    assert f"source {environment}/bin/activate" in result.stderr, "the run used that environment"
    check = subprocess.run(
        [
            str(environment / "bin" / "python"),
            "-c",
            "import torch, transformers, mlflow; print(torch.__version__)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0 and check.stdout.startswith("2.13.0"), check.stderr[-2000:]
