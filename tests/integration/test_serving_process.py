"""`python -m serving` as a process: a bad setting or model is one error line, and a server
following a registry alias frees the models it retires, fails to bind without leaving a
download, and stops gracefully on SIGTERM.

The same life with an alias, in process: tests/unit/serving/test_reload.py.
"""

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.mlflow_store import MlflowStore, model_registry, register_folder
from devkit.processes import REPO
from devkit.servers import Server

NAME = "lifecycle"
ALIAS = "champion"


def test_bad_setting_is_one_error_line(tiny_onnx):
    result = subprocess.run(
        [sys.executable, "-m", "serving", "--model", str(tiny_onnx)],
        env={"PATH": "/usr/bin:/bin", "DISTRINEWS_THREADS": "many"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "threads" in result.stderr


@pytest.mark.parametrize("module", ["serving", "serving.measure"])
def test_a_settings_error_never_shows_the_feedback_token(module):
    """Issue 32, defect 8: pydantic echoes what it was given, a model validator's error every
    setting (a short token, last, was printed whole). The error names the settings only."""
    token = "tok-9f3c2a"
    result = subprocess.run(
        [sys.executable, "-m", module],
        env={
            "PATH": "/usr/bin:/bin",
            "DISTRINEWS_PREDICTION_LOG": "",
            "DISTRINEWS_FEEDBACK_TOKEN": token,
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ") and "DISTRINEWS_PREDICTION_LOG" in result.stderr
    assert token not in result.stdout + result.stderr


def test_a_bad_model_is_one_error_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "serving", "--model", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 1
    assert result.stderr == f"error: model folder {tmp_path / 'missing'} does not exist\n"


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[MlflowStore]:
    """A SQLite registry with NAME in it, set as MLflow's tracking URI for the test."""
    with model_registry(tmp_path / "store", NAME) as store:
        yield store


def point_alias(store: MlflowStore, version: str) -> None:
    store.client.set_registered_model_alias(NAME, ALIAS, version)


def register(store: MlflowStore, folder: Path) -> str:
    """A version of NAME made from a model folder, as a run's artifacts; its number."""
    return register_folder(store.client, NAME, folder, NAME)


def download_folders(folder: Path) -> list[Path]:
    return sorted(folder.glob("distrinews-model-*"))


#: Loaded at start-up by a `python -m serving` whose PYTHONPATH holds it: on SIGUSR1 it
#: prints how many ONNX classifiers (each an ONNX Runtime session) the process holds.
PROBE = """
import gc, signal

def count_classifiers(signum, frame):
    from distrinews.runtime.onnx_classifier import OnnxClassifier
    gc.collect()
    alive = sum(isinstance(o, OnnxClassifier) for o in gc.get_objects())
    print(f"probe: {alive} classifiers alive", flush=True)

signal.signal(signal.SIGUSR1, count_classifiers)
"""


def wait_for_line(server: Server, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.output():
        assert time.monotonic() < deadline, server.output()[-3000:]
        time.sleep(0.05)


@pytest.mark.timeout(180)
def test_python_m_serving_frees_retired_models_and_leaves_no_download(
    registry, tiny_onnx, tmp_path
):
    versions = [register(registry, tiny_onnx) for _ in range(3)]
    point_alias(registry, versions[0])
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "sitecustomize.py").write_text(PROBE)
    temp = {name: tmp_path / name for name in ("tmp-a", "tmp-b")}
    for folder in temp.values():
        folder.mkdir()
    env = registry.env | {"PYTHONPATH": str(tmp_path / "probe")}
    model = f"models:/{NAME}@{ALIAS}"
    server = Server(model, env | {"TMPDIR": str(temp["tmp-a"])}, reload_seconds=0.1)
    try:
        server.wait_ready()
        for version in versions[1:]:
            point_alias(registry, version)
            wait_for_line(server, f"now serving version {version}")
        server.process.send_signal(signal.SIGUSR1)
        wait_for_line(server, "probe: ")
        # A second server on the same port: it loads the model, then cannot listen.
        second = subprocess.run(
            [sys.executable, "-m", "serving", "--model", model, "--port", str(server.port)],
            env=env | {"TMPDIR": str(temp["tmp-b"])},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.stop()
    (alive,) = re.findall(r"probe: (\d+) classifiers alive", server.output())
    assert alive == "1", f"{alive} ONNX Runtime sessions held after two alias moves, not 1"
    assert "Finished server process" in server.output(), "stopped gracefully, by SIGTERM"
    assert second.returncode != 0 and "address already in use" in second.stderr
    assert download_folders(temp["tmp-b"]) == [], "a failed bind leaves no download"
    assert download_folders(temp["tmp-a"]) == [], "a stopped server leaves no download"
