"""The server's life with a registry alias, in process: what it holds and leaves on disk as
versions come and go, and what it does with a version it cannot fetch.

The app's lifespan and the real alias follower run in process, on an MLflow
registry in a SQLite file (no server process), with downloads in a temp folder
of their own. What needs `python -m serving` itself (its main(), a failed bind,
a stop by signal): tests/integration/test_serving_process.py.
"""

import asyncio
import gc
import json
import logging
import shutil
import tempfile
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

import serving.inference
import serving.reload
from devkit.mlflow_store import MlflowStore, model_registry, register_folder
from devkit.servers import free_port
from distrinews.errors import ModelFolderError
from distrinews.runtime.model_source import ModelSource
from distrinews.runtime.prediction_store import PREDICTIONS
from serving.app import configure_logging, create_app
from serving.inference import LoadedModel, Scores, load_model
from serving.reload import serve
from serving.settings import Settings

NAME = "lifecycle"
ALIAS = "champion"
#: Checks this often in process: many checks in a fraction of a second.
RELOAD_SECONDS = 0.02


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[MlflowStore]:
    """A SQLite registry with NAME in it, set as MLflow's tracking URI for the test."""
    with model_registry(tmp_path / "store", NAME) as store:
        yield store


@pytest.fixture()
def downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temp folder the server downloads models into, owned by this test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


class Lines(logging.Handler):
    """The server's log messages, as text only (a record's args could hold a model)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def count(self, text: str) -> int:
        return sum(text in message for message in self.messages)


@pytest.fixture()
def server_log() -> Iterator[Lines]:
    configure_logging()  # first: it sets the level, and only on a logger without handlers
    lines = Lines()
    logger = logging.getLogger("serving")
    logger.addHandler(lines)
    try:
        yield lines
    finally:
        logger.removeHandler(lines)


class Calls:
    """Wraps a function of a serving module to count its calls; the real one still runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: object, name: str):
        self.real = getattr(module, name)
        self.args: list[tuple] = []
        monkeypatch.setattr(module, name, self)

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.args.append(args)
        return self.real(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.args)


def fetched(fetches: Calls, version: str) -> int:
    """How many times `version` was downloaded (fetches: of local_model_folder)."""
    return sum(source.version == version for source, *_ in fetches.args)


def register(store: MlflowStore, folder: Path) -> str:
    """A version of NAME made from a model folder, as a run's artifacts; its number."""
    return register_folder(store.client, NAME, folder, NAME)


def point_alias(store: MlflowStore, version: str) -> None:
    store.client.set_registered_model_alias(NAME, ALIAS, version)


def download_folders(folder: Path) -> list[Path]:
    return sorted(folder.glob("distrinews-model-*"))


def edited_copy(tiny_onnx: Path, destination: Path, edit: Callable[[Path], None]) -> Path:
    shutil.copytree(tiny_onnx, destination)
    edit(destination)
    return destination


def other_labels(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {str(i): f"topic {i}" for i in range(4)}
    config["label2id"] = {f"topic {i}": i for i in range(4)}
    (folder / "config.json").write_text(json.dumps(config))


@asynccontextmanager
async def serving_alias(**settings: object) -> AsyncIterator[FastAPI]:
    """The app following NAME@ALIAS, its lifespan run in process (start-up to shutdown)."""
    app = create_app(
        Settings(
            model=f"models:/{NAME}@{ALIAS}", threads=1, reload_seconds=RELOAD_SECONDS, **settings
        )
    )
    async with app.router.lifespan_context(app):
        yield app


async def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.005)


async def checks_made(checks: "Calls", count: int) -> None:
    """Wait until the follower has started `count` more alias checks."""
    start = len(checks)
    await wait_until(lambda: len(checks) >= start + count)


def served(app: FastAPI) -> str:
    return app.state.model.source.version


@pytest.mark.timeout(90)
def test_after_two_alias_moves_one_model_is_held_and_one_download_kept(
    registry, tiny_onnx, downloads, server_log
):
    versions = [register(registry, tiny_onnx) for _ in range(3)]
    point_alias(registry, versions[0])

    async def scenario() -> tuple[list[weakref.ref], list[Path], Path]:
        async with serving_alias() as app:
            retired: list[weakref.ref] = []
            for version in versions[1:]:
                retired += [weakref.ref(app.state.model), weakref.ref(app.state.model.classifier)]
                point_alias(registry, version)
                # Logged last: from here on, the follower only waits for its next check.
                await wait_until(lambda v=version: server_log.count(f"now serving version {v}"))
            gc.collect()
            alive = [ref for ref in retired if ref() is not None]
            return alive, download_folders(downloads), app.state.model.download

    alive, kept, current = asyncio.run(scenario())
    assert alive == [], "a retired model (its ONNX Runtime session) is still held"
    assert server_log.count("now serving version") == 2, "each version loaded once"
    assert kept == [current], "only the served version's download is kept"
    assert download_folders(downloads) == [], "shutdown deletes the served model's download"


@pytest.mark.timeout(90)
def test_a_version_refused_for_other_labels_leaves_no_download(
    registry, tiny_onnx, downloads, server_log, tmp_path
):
    good = register(registry, tiny_onnx)
    other = register(registry, edited_copy(tiny_onnx, tmp_path / "other", other_labels))
    point_alias(registry, good)

    async def scenario() -> tuple[str, list[Path], Path]:
        async with serving_alias() as app:
            point_alias(registry, other)
            await wait_until(lambda: server_log.count(f"refused version {other}"))
            return served(app), download_folders(downloads), app.state.model.download

    version, kept, current = asyncio.run(scenario())
    assert version == good and kept == [current]
    assert "predicts topic 0" in server_log.messages[-1]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("report", ['{"target": "avx2",', "[1, 2]"])
def test_a_malformed_export_report_is_one_error_line_and_leaves_no_download(
    registry, tiny_onnx, downloads, tmp_path, report
):
    folder = edited_copy(
        tiny_onnx, tmp_path / "bad-report", lambda f: (f / "export_report.json").write_text(report)
    )
    version = register(registry, folder)
    with pytest.raises(ModelFolderError, match="export_report.json") as error:
        load_model(f"models:/{NAME}/{version}", threads=1, spinning="off")
    assert "\n" not in str(error.value)
    assert download_folders(downloads) == []


@pytest.mark.timeout(90)
def test_a_version_that_cannot_be_fetched_is_fetched_once_per_alias_move(
    registry, tiny_onnx, downloads, server_log, monkeypatch
):
    """Its run is gone (as after `mlflow gc`): the registry answers "no such run", for good."""
    good = register(registry, tiny_onnx)
    gone = str(
        registry.client.create_model_version(NAME, f"runs:/{uuid.uuid4().hex}/onnx_model").version
    )
    point_alias(registry, good)
    checks = Calls(monkeypatch, serving.reload, "alias_version")
    fetches = Calls(monkeypatch, serving.inference, "local_model_folder")

    async def scenario() -> tuple[str, list[int]]:
        async with serving_alias() as app:
            seen = []
            for _ in range(2):  # moved to it twice
                point_alias(registry, gone)
                await checks_made(checks, 20)
                seen.append(fetched(fetches, gone))
                point_alias(registry, good)
                await checks_made(checks, 2)  # one at least that reads the move back
            await app.state.batcher.probabilities(["Still answering"])
            return served(app), seen

    version, seen = asyncio.run(scenario())
    assert seen == [1, 2], "fetched once each time the alias moved to it"
    assert server_log.count(f"refused version {gone}") == 2
    assert "not found" in server_log.messages[-1] and version == good


@pytest.mark.timeout(90)
def test_an_unreachable_artifact_store_is_retried_with_back_off_and_logged_once(
    registry, tiny_onnx, downloads, server_log, monkeypatch
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once: no waiting
    good = register(registry, tiny_onnx)
    closed = f"http://127.0.0.1:{free_port()}/api/2.0/mlflow-artifacts/artifacts/x/onnx_model"
    far = str(registry.client.create_model_version(NAME, closed).version)
    point_alias(registry, good)
    checks = Calls(monkeypatch, serving.reload, "alias_version")
    fetches = Calls(monkeypatch, serving.inference, "local_model_folder")

    async def scenario() -> str:
        async with serving_alias() as app:
            point_alias(registry, far)
            await checks_made(checks, 40)
            return served(app)

    assert asyncio.run(scenario()) == good
    # 40 checks at 20 ms: the waits 20, 40, 80, 160, 320 ms... leave room for about 6 tries.
    tries = fetched(fetches, far)
    assert 2 <= tries <= 10, f"{tries} downloads in 40 checks"
    assert server_log.count(f"version {far} not downloaded") == 1
    assert download_folders(downloads) == []


@pytest.mark.timeout(90)
def test_a_load_under_way_at_shutdown_ends_and_its_download_is_deleted(
    registry, tiny_onnx, downloads, server_log, monkeypatch
):
    versions = [register(registry, tiny_onnx) for _ in range(2)]
    point_alias(registry, versions[0])
    real_load = serving.reload.load_version
    loaded: list[Path] = []

    def slow_load(*args: object) -> object:
        model = real_load(*args)
        loaded.append(model.download)
        time.sleep(0.5)  # still loading when the server is told to stop
        return model

    monkeypatch.setattr(serving.reload, "load_version", slow_load)

    async def scenario() -> None:
        async with serving_alias():
            point_alias(registry, versions[1])
            await wait_until(lambda: bool(loaded))

    asyncio.run(scenario())
    assert not loaded[0].exists(), "the abandoned load's download is deleted"
    assert download_folders(downloads) == []


def as_version(tiny_onnx: Path, version: str) -> LoadedModel:
    """The tiny model, loaded as if it were `version` of NAME."""
    loaded = load_model(str(tiny_onnx), threads=1, spinning="off")
    return replace(loaded, source=ModelSource(f"models:/{NAME}/{version}", NAME, version))


def test_an_answer_is_logged_under_the_version_that_computed_it_when_a_reload_swaps_mid_request(
    tmp_path, tiny_onnx, texts
):
    """Issue 32, defect 10: version 2 is swapped in (as the alias follower does) while the
    request's inference on version 1 runs; the log and the live accuracy say version 1."""
    url = f"sqlite:///{tmp_path}/log.db"
    settings = Settings(model=str(tiny_onnx), threads=1, prediction_log=url, feedback_token="t")
    app = create_app(settings, as_version(tiny_onnx, "1"))
    newer = as_version(tiny_onnx, "2")
    with TestClient(app) as client:
        batcher = app.state.batcher
        infer = batcher.infer

        def swap_during_inference(model: LoadedModel, request_texts: list[str]) -> Scores:
            scores = infer(model, request_texts)
            # As the alias follower does, on the event loop, before the scores go back to
            # the request: here if the inference ran on the loop (the model was idle).
            try:
                asyncio.get_running_loop()
                serve(app, newer)
            except RuntimeError:  # in the model's thread
                client.portal.call(serve, app, newer)
            return scores

        batcher.infer = swap_during_inference
        client.post("/predict", json={"text": texts[0]}, headers={"X-Request-ID": "mid-swap"})
        batcher.infer = infer
        assert served(app) == "2"
        body = {"request_id": "mid-swap", "label": "World"}
        answer = client.post("/feedback", json=body, headers={"Authorization": "Bearer t"})
        assert answer.json()["model_version"] == "1"
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        logged = connection.execute(sa.select(PREDICTIONS.c.model_version)).scalars().all()
    engine.dispose()
    assert logged == ["1"]
