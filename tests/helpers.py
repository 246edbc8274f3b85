"""What the tests share besides fixtures: tiny models, a temp MLflow store, process checks."""

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, DistilBertConfig

from distrinews.config import DEFAULT_MODEL
from distrinews.model import load_model_and_tokenizer, resolve_model_path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "ag_news"

#: Seconds any one training, export or server process may take in a test:
#: a hang fails the test instead of holding CI for its full 90 minutes.
PROCESS_TIMEOUT = 600

#: The end-to-end training run's settings (tests compare what was logged with these).
E2E_TRAINING = {"nproc": 2, "epochs": 3, "batch_size": 16, "lr": 3e-3, "log_every": 2}


def make_tiny_model(folder: Path, architecture: str = "bert") -> Path:
    """A 2-layer, 32-wide encoder with random weights and the real MiniLM tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_MODEL))
    common = {"vocab_size": tokenizer.vocab_size, "max_position_embeddings": 128}
    if architecture == "bert":
        config = BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            **common,
        )
    else:
        config = DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **common)
    AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def export_tiny_onnx(encoder: Path, work: Path) -> Path:
    """The export step's own int8 ONNX conversion of `encoder` with a seeded, untrained head.

    Seconds instead of a training run: enough for every test of the routes,
    validation and loading, which need a real model but not a good one.
    """
    from distrinews.onnx_conversion import quantize_to_int8

    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(str(encoder))
    model.save_pretrained(work / "checkpoint")
    tokenizer.save_pretrained(work / "checkpoint")
    _, int8_dir = quantize_to_int8(work / "checkpoint", work / "onnx", "avx2", max_length=64)
    return int8_dir


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


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (orphan check)."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def rank_pid(output_dir: Path, rank: int) -> int | None:
    """The pid of the training worker with global rank `rank`, if it is running."""
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        worker = b"pipelines.train" in cmdline and b"torchrun" not in cmdline
        if worker and str(output_dir).encode() in cmdline and f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


@contextlib.contextmanager
def tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's module-level API (pyfunc.load_model, downloads) pointed at `uri` for a while."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
