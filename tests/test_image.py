"""The Docker image's build steps (serving/install.sh) in a fresh venv: no torch, and it serves."""

import os
import subprocess
import sys

import httpx
import pytest

from tests.helpers import REPO
from tests.servers import Server

pytestmark = pytest.mark.integration


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
    finally:
        server.stop()
