"""The pipeline's DDP wrapping gives the same gradients as plain DDP, on real torchrun ranks."""

import json
import subprocess
import sys

import pytest

from devkit.mlflow_store import MlflowStore
from devkit.processes import REPO

pytestmark = pytest.mark.timeout(300)


def test_embedding_row_sync_matches_dense_all_reduce(tmp_path, tiny_bert):
    result = tmp_path / "result.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "tests.workers.embedding_rows"]
    env = MlflowStore(tmp_path).env  # CPU ranks (gloo), whatever the machine has
    subprocess.run(
        command + [str(tiny_bert), str(result)], cwd=REPO, env=env, check=True, timeout=300
    )
    report = json.loads(result.read_text())
    # Both ranks' rows arrive: rank 0 alone used fewer than end up with gradient.
    assert 0 < report["rows_used_here"] < report["embedding_rows_with_gradient"]
    assert report["embedding_rows_with_gradient"] < report["vocabulary"] / 2
    assert report["max_difference"] <= 1e-6 * report["largest_gradient"]
