"""The runtime the server needs imports neither torch nor transformers, and the server only it."""

import json
import subprocess
import sys

from devkit.processes import REPO

#: Loads the server and serves one request in process, then reports what got imported.
SERVE_ONE_REQUEST = """
import json, sys
from fastapi.testclient import TestClient
import distrinews.runtime.cpu, distrinews.runtime.labels, distrinews.runtime.onnx_classifier
import distrinews.runtime.model_source, distrinews.runtime.pyfunc, distrinews.runtime.scoring
import serving.__main__
from serving.app import create_app
from serving.settings import Settings

with TestClient(create_app(Settings(model=sys.argv[1]))) as client:
    answer = client.post("/predict", json={"text": "Stocks rally as oil prices fall"}).json()
heavy = sorted({name.split(".")[0] for name in sys.modules} & {"torch", "transformers"})
print(json.dumps({"label": answer["label"], "heavy": heavy}))
"""


def test_the_server_runs_without_importing_torch_or_transformers(tiny_onnx):
    result = subprocess.run(
        [sys.executable, "-c", SERVE_ONE_REQUEST, str(tiny_onnx)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["label"] in ("World", "Sports", "Business", "Sci/Tech")
    assert report["heavy"] == [], "the server imported a training library"
