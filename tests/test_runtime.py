"""The runtime the server needs imports neither torch nor transformers, and the server only it."""

import json
import os
import subprocess
import sys

from devkit.processes import REPO
from distrinews.runtime.cpu import QUANTIZATION_TARGETS, cpu_flags, detect_target

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


PRINT_CPUS = "from distrinews.runtime.cpu import available_cpus; import os; " + (
    "print(available_cpus(), os.cpu_count())"
)


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


def test_available_cpus_is_this_process_share_not_the_hosts():
    """Pinned to one core (as a 1-vCPU container is), the helpers see one CPU."""
    result = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", PRINT_CPUS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", str(os.cpu_count())], "1 CPU, on a host of more"


def test_quantization_target_follows_the_cpu_flags():
    assert detect_target() in QUANTIZATION_TARGETS
    assert (detect_target() == "avx512_vnni") == ("avx512_vnni" in cpu_flags())
