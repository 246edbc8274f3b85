"""The Docker image's build steps (serving/install.sh) in a fresh venv: no torch, and it serves."""

import json
import os
import subprocess
import sys

import httpx

from devkit.processes import REPO
from devkit.servers import MlflowServer, Server


def test_image_install_serves_without_torch(exported, tmp_path, texts):
    store, _, folder, _ = exported
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = store.env | {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(venv),
    }
    app_model = tmp_path / "app" / "model"
    install = subprocess.run(
        ["sh", "serving/install.sh", ".", str(folder), str(app_model)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    python = str(venv / "bin" / "python")
    for heavy in ("torch", "transformers"):
        probe = subprocess.run(
            [python, "-c", f"import {heavy}"], env=env, capture_output=True, timeout=60
        )
        assert probe.returncode != 0, f"{heavy} must not be in the server image"
    # The image times its model on the CPU it runs on (a Space's), without torch too.
    measure = subprocess.run(
        [python, "-m", "serving.measure", "--model", str(app_model), "--count", "20"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert measure.returncode == 0, measure.stderr[-2000:]
    assert json.loads(measure.stdout)["p95_ms"] > 0
    server = Server(str(app_model), env, python=python, cwd=tmp_path)
    try:
        server.wait_ready()
        response = httpx.post(f"{server.url}/predict", json={"text": texts[0]}, timeout=10)
        assert response.status_code == 200 and response.json()["label"] in (
            "World",
            "Sports",
            "Business",
            "Sci/Tech",
        )
        # The page is package data: installed with the package, not read from the clone.
        assert "<title>DistriNews" in httpx.get(f"{server.url}/", timeout=10).text
    finally:
        server.stop()
    serve_the_champion_through_a_tracking_server(store, env, python, tmp_path)


def serve_the_champion_through_a_tracking_server(store, env, python: str, tmp_path) -> None:
    """The image's packages (mlflow-skinny, no SQL store) follow models:/distrinews@champion."""
    store.client.set_registered_model_alias("distrinews", "champion", "1")
    tracking = MlflowServer(tmp_path, store.env, store_uri=store.uri)
    try:
        tracking.wait_ready(timeout=120)
        server = Server(
            "models:/distrinews@champion",
            env | {"MLFLOW_TRACKING_URI": tracking.url},
            python=python,
            cwd=tmp_path,
        )
        try:
            server.wait_ready()
            info = httpx.get(f"{server.url}/model", timeout=10).json()
            assert (info["version"], info["alias"]) == ("1", "champion")
        finally:
            server.stop()
    finally:
        tracking.stop()
