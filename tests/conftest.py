"""Shared fixtures: tiny random-init models, a small slice of AG News, a temp MLflow store."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from transformers import AutoModel, AutoTokenizer, BertConfig, DistilBertConfig

from distrinews import checkpoint
from distrinews.config import DEFAULT_MODEL
from distrinews.model import resolve_model_path
from serving.local import Server  # noqa: F401  (re-exported for the tests)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "ag_news"


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


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-distilbert"), "distilbert")


@pytest.fixture(scope="session")
def ag_news_dir() -> Path:
    if not (SHARED_DATA / "train.parquet").is_file():
        pytest.fail(f"AG News not found at {SHARED_DATA}; see ../shared/data/ag_news/README.md")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory, ag_news_dir: Path) -> Path:
    """800 train and 200 test rows of the real data, as a data folder."""
    folder = tmp_path_factory.mktemp("ag-news-small")
    pd.read_parquet(ag_news_dir / "train.parquet").iloc[:800].to_parquet(folder / "train.parquet")
    pd.read_parquet(ag_news_dir / "test.parquet").sample(200, random_state=0).to_parquet(
        folder / "test.parquet"
    )
    return folder


class MlflowStore:
    """A fresh SQLite tracking store with its artifact root in a temp folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.uri = f"sqlite:///{folder / 'mlflow.db'}"
        self.client = mlflow.MlflowClient(self.uri)
        # Environment for subprocesses: this store, offline, no inherited run.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        self.env.update(
            MLFLOW_TRACKING_URI=self.uri,
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            PYTHONUNBUFFERED="1",
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}",
        )

    def experiment(self, name: str) -> str:
        """Create an experiment whose artifacts stay in the temp folder (not ./mlruns)."""
        return self.client.create_experiment(name, artifact_location=str(self.folder / name))

    def runs(self, experiment_id: str) -> list:
        return self.client.search_runs([experiment_id])

    def mlflow_run(self, entry: str, experiment: str, params: dict, timeout: int = 600):
        """`mlflow run <repo> -e <entry> --env-manager local`, as a user types it."""
        command = ["mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local"]
        command += ["--experiment-name", experiment]
        for key, value in params.items():
            command += ["-P", f"{key}={value}"]
        return subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=self.folder
        )


@pytest.fixture()
def mlflow_store(tmp_path: Path) -> MlflowStore:
    return MlflowStore(tmp_path)


def train_run(store: MlflowStore, experiment_id: str):
    """The one train run of an experiment."""
    (run,) = store.client.search_runs([experiment_id], "tags.step = 'train'")
    return run


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_bert, small_data):
    """One 3-epoch, 2-process training run on 760 real rows with a tiny BERT."""
    store = MlflowStore(tmp_path_factory.mktemp("train-e2e"))
    experiment_id = store.experiment("e2e")
    output_dir = store.folder / "checkpoints"
    result = store.mlflow_run(
        "train",
        "e2e",
        {
            "nproc": 2,
            "model": tiny_bert,
            "data": small_data,
            "epochs": 3,
            "batch_size": 16,
            "lr": 3e-3,
            "output_dir": output_dir,
            "log_every": 2,
        },
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return store, experiment_id, output_dir, result


@pytest.fixture(scope="session")
def exported(trained_run, small_data, tmp_path_factory):
    store, experiment_id, output_dir, _ = trained_run
    folder = tmp_path_factory.mktemp("onnx") / "model"
    run_id = store.client.search_runs([experiment_id], "tags.step = 'train'")[0].info.run_id
    result = store.mlflow_run(
        "export",
        "e2e",
        {
            "run_id": run_id,
            "data": small_data,
            "output": folder,
            "latency_texts": 20,
            # A 2-layer random-init model has small logit margins, so int8 noise
            # flips more of its borderline labels than a trained MiniLM's.
            "max_accuracy_drop": 5,
        },
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return store, run_id, folder, checkpoint.latest_checkpoint(output_dir)


@pytest.fixture(scope="session")
def texts(small_data) -> list[str]:
    return pd.read_parquet(small_data / "test.parquet")["text"].tolist()[:40]
