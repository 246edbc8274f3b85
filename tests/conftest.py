"""Shared fixtures: tiny random-init models, a tiny int8 ONNX model, a small slice of AG News,
a temp MLflow store, and one real training run and export for the end-to-end tests; and the
`integration` marker, given by the folder (tests/integration/)."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch

from devkit.mlflow_store import E2E_TRAINING, MlflowStore, tracking_uri, train_run
from devkit.processes import SHARED_DATA
from devkit.tiny_models import TINY_REGISTERED, export_tiny_onnx, make_tiny_model
from distrinews.runtime.labels import LABELS
from distrinews.runtime.onnx_classifier import OnnxClassifier
from distrinews.runtime.reference_profile import build_profile
from distrinews.train import checkpoint

#: Session fixtures that cost a real training run: the tests using them share one
#: pytest-xdist worker, so the run happens once (each worker has its own session).
SHARED_RUNS = {"trained_run", "exported"}


#: The longest-running test files (about 2 minutes each on 2 vCPUs), started first.
LONGEST = ("test_retrain.py", "test_train_recovery.py")

#: Every test under this folder starts real processes: it is marked `integration`.
INTEGRATION = Path(__file__).parent / "integration"


def pytest_itemcollected(item: pytest.Item) -> None:
    """Mark the tests under tests/integration/ `integration` (before `-m` selects), and group
    the tests of the shared training run (before xdist reads the groups)."""
    if INTEGRATION in item.path.parents:
        item.add_marker(pytest.mark.integration)
    if SHARED_RUNS & set(getattr(item, "fixturenames", ())):
        item.add_marker(pytest.mark.xdist_group("trained_run"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests first, so the quick ones fill the workers' last gaps; `gpu` tests
    skip themselves on a machine without CUDA."""
    # Stable: the longest first, so they do not start last and hold up the end of the run.
    items.sort(key=lambda item: ("integration" not in item.keywords, item.path.name not in LONGEST))
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session", autouse=True)
def prediction_log_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A server built in a test logs its predictions under a temp folder, never to the
    default predictions.db in the working directory (the repository). Session-wide, so
    module fixtures that build servers see it too."""
    url = f"sqlite:///{tmp_path_factory.mktemp('prediction-log')}/predictions.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISTRINEWS_PREDICTION_LOG", url)
        yield


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-distilbert"), "distilbert")


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    """An untrained tiny BERT through the export step's int8 conversion (2 s)."""
    return export_tiny_onnx(tiny_bert, tmp_path_factory.mktemp("tiny-onnx"))


@pytest.fixture(scope="session")
def tiny_onnx_profiled(
    tmp_path_factory: pytest.TempPathFactory, tiny_onnx: Path, small_data: Path
) -> Path:
    """The tiny int8 model with a reference profile of 400 real training texts, as export
    profiles the validation split (no temperature: 1)."""
    folder = shutil.copytree(tiny_onnx, tmp_path_factory.mktemp("profiled") / "model")
    frame = pd.read_parquet(small_data / "train.parquet").iloc[400:800]
    profile = build_profile(OnnxClassifier(folder), frame["text"].tolist(), frame["label"])
    profile.write(folder)
    return folder


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
    # Integer labels, as in AG News: a folder of another name says what they mean.
    (folder / "label_names.txt").write_text("\n".join(LABELS) + "\n")
    return folder


@pytest.fixture(scope="session")
def texts(small_data: Path) -> list[str]:
    return pd.read_parquet(small_data / "test.parquet")["text"].tolist()[:40]


@pytest.fixture()
def mlflow_store(tmp_path: Path) -> MlflowStore:
    return MlflowStore(tmp_path)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_bert, small_data):
    """One 3-epoch, 2-process training run on 760 real rows with a tiny BERT."""
    store = MlflowStore(tmp_path_factory.mktemp("train-e2e"))
    experiment_id = store.experiment("e2e")
    output_dir = store.folder / "checkpoints"
    params = E2E_TRAINING | {"model": tiny_bert, "data": small_data, "output_dir": output_dir}
    result = store.mlflow_run("train", "e2e", params)
    assert result.returncode == 0, result.stderr[-4000:]
    return store, experiment_id, output_dir, result


@pytest.fixture(scope="session")
def exported(trained_run, small_data, tmp_path_factory):
    store, experiment_id, output_dir, _ = trained_run
    folder = tmp_path_factory.mktemp("onnx") / "model"
    run_id = train_run(store, experiment_id).info.run_id
    result = store.mlflow_run(
        "export",
        "e2e",
        {
            "run_id": run_id,
            "data": small_data,
            "output": folder,
            "latency_texts": 20,
            # A 2-layer model trained for seconds has small logit margins, so
            # int8 noise flips more of its borderline labels than a MiniLM's.
            "max_accuracy_drop": 5,
        },
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return store, run_id, folder, checkpoint.latest_checkpoint(output_dir / run_id)


@pytest.fixture(scope="session")
def registered_tiny(tmp_path_factory, tiny_onnx_profiled) -> MlflowStore:
    """A store whose registered model TINY_REGISTERED has version 1: the tiny int8 model with
    its reference profile, logged as export logs a model (seconds, no export run)."""
    import mlflow

    from distrinews.runtime.pyfunc import log_onnx_model

    store = MlflowStore(tmp_path_factory.mktemp("registered-tiny"))
    with tracking_uri(store.uri):
        mlflow.set_experiment("export")
        with mlflow.start_run():
            log_onnx_model(tiny_onnx_profiled, ["Stocks rallied as oil fell."], TINY_REGISTERED)
    return store


@pytest.fixture()
def promote_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An empty MLflow store and registry in `tmp_path` with an experiment `promote`, as
    MLflow's fluent API (and so `run_promote` in this process) sees it."""
    import mlflow

    store = MlflowStore(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    with tracking_uri(store.uri):
        mlflow.set_experiment(experiment_id=store.experiment("promote"))
        yield store.client
