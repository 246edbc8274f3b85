"""A throwaway MLflow store in a temp folder, and MLflow commands run against it."""

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import mlflow

from devkit.processes import PROCESS_TIMEOUT, REPO

#: The tiny BERT's learning rate: at 3e-3 its 3-epoch loss fell by 0.05-0.39 over 8
#: init seeds and once (in CI) not at all; at 1e-2 by 0.30-0.91 over 12 (bf16 and fp32).
TINY_LR = 1e-2
#: The end-to-end training run's settings (tests compare what was logged with these).
E2E_TRAINING = {"nproc": 2, "epochs": 3, "batch_size": 16, "lr": TINY_LR, "log_every": 2}


@functools.cache
def empty_store_file() -> Path:
    """An MLflow SQLite file with its tables created, made once per test process.

    Creating the tables takes about 2 s; every MlflowStore starts from a copy.
    """
    folder = Path(tempfile.mkdtemp(prefix="mlflow-empty-store-"))
    mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
    return folder / "mlflow.db"


class MlflowStore:
    """A fresh SQLite tracking store with its artifact root in a temp folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        if not (folder / "mlflow.db").exists():
            shutil.copy(empty_store_file(), folder / "mlflow.db")
        self.uri = f"sqlite:///{folder / 'mlflow.db'}"
        self.client = mlflow.MlflowClient(self.uri)
        # Environment for subprocesses: this store, offline, no inherited run.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        self.env.update(
            MLFLOW_TRACKING_URI=self.uri,
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            PYTHONUNBUFFERED="1",
            # These tests prove the CPU path (gloo), with or without a GPU
            # on the machine; tests marked `gpu` prove the CUDA path.
            CUDA_VISIBLE_DEVICES="",
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}",
        )

    def experiment(self, name: str) -> str:
        """Create an experiment whose artifacts stay in the temp folder (not ./mlruns)."""
        return self.client.create_experiment(name, artifact_location=str(self.folder / name))

    def runs(self, experiment_id: str) -> list:
        return self.client.search_runs([experiment_id])

    def run(
        self,
        command: list[str],
        timeout: float = PROCESS_TIMEOUT,
        cwd: Path = REPO,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """`command` with this store's environment (plus `env`), output captured, bounded."""
        return subprocess.run(
            command,
            cwd=cwd,
            env=self.env | (env or {}),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def mlflow_command(self, entry: str, experiment: str, params: dict) -> list[str]:
        """`mlflow run <repo> -e <entry> --env-manager local`, as a user types it."""
        command = ["mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local"]
        command += ["--experiment-name", experiment]
        for key, value in params.items():
            command += ["-P", f"{key}={value}"]
        return command

    def start_mlflow_run(
        self, entry: str, experiment: str, params: dict, output: IO[str], new_session: bool = False
    ) -> subprocess.Popen:
        """`mlflow run` of `entry` started in the background, its output to `output`; in a
        process group of its own with `new_session`, so a signal to it reaches nothing else."""
        return subprocess.Popen(
            self.mlflow_command(entry, experiment, params),
            cwd=self.folder,
            env=self.env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=new_session,
        )

    def mlflow_run(
        self, entry: str, experiment: str, params: dict, timeout: float = PROCESS_TIMEOUT
    ) -> subprocess.CompletedProcess:
        """`mlflow run` of `entry`, in this store's folder (its mlruns/ stays there)."""
        command = self.mlflow_command(entry, experiment, params)
        return self.run(command, timeout, cwd=self.folder)


def train_run(store: MlflowStore, experiment_id: str):
    """The one train run of an experiment."""
    (run,) = store.client.search_runs([experiment_id], "tags.step = 'train'")
    return run


@contextlib.contextmanager
def tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's module-level API (pyfunc.load_model, downloads) pointed at `uri` for a while,
    with no active experiment set: `mlflow.set_experiment` inside the block (an experiment
    id of this store) does not outlive it, where it would win over the next test's
    MLFLOW_EXPERIMENT_NAME in another store ("No Experiment with id=3 exists")."""
    from mlflow.tracking import fluent

    previous, experiment = mlflow.get_tracking_uri(), fluent._active_experiment_id
    mlflow.set_tracking_uri(uri)
    fluent._active_experiment_id = None
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        fluent._active_experiment_id = experiment


@contextlib.contextmanager
def step_in_process(uri: str, experiment: str) -> Iterator[None]:
    """A step function (run_export, run_promote) called in this process as `mlflow run`
    would start it: MLflow's fluent API at `uri` and `experiment`, no run inherited.
    A process launch cheaper than `mlflow run`, with the same step code."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")
    saved = {name: os.environ.pop(name, None) for name in names}
    os.environ.update(MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_NAME=experiment)
    try:
        with tracking_uri(uri):
            yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


@contextlib.contextmanager
def model_registry(folder: Path, name: str) -> Iterator[MlflowStore]:
    """A store in a new `folder` with an experiment and a registered model both called `name`,
    MLflow's module-level API pointed at it meanwhile."""
    folder.mkdir()
    store = MlflowStore(folder)
    store.experiment(name)
    store.client.create_registered_model(name)
    with tracking_uri(store.uri):
        yield store


def register_folder(client: mlflow.MlflowClient, name: str, folder: Path, experiment: str) -> str:
    """A version of `name` made from a model folder, logged as the `onnx_model` artifacts of a
    run in `experiment` (as a user's tool could); its number."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    run_id = client.create_run(experiment_id).info.run_id
    client.log_artifacts(run_id, str(folder), "onnx_model")
    client.set_terminated(run_id)
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run_id}/onnx_model", run_id)
    return str(version.version)  # an int from a SQLite registry, a string over REST
