"""The pipeline's DDP wrapping gives the same gradients as plain DDP, on real torchrun ranks."""

import json
import subprocess
import sys
from pathlib import Path

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


def test_every_rank_and_every_launch_of_a_run_hold_out_the_same_feedback(tmp_path, small_data):
    """Feedback arriving after rank 0 read the log reaches no rank, and a second launch of
    the same run (a restart, resume=true) reads the rows the first froze, not the log."""
    from datetime import datetime, timezone

    from distrinews.runtime.prediction_store import FEEDBACK, open_store

    url = f"sqlite:///{tmp_path}/log.db"
    engine = open_store(url)
    with engine.begin() as connection:
        for i in range(40):
            row = {"time": datetime.now(timezone.utc), "request_id": f"r{i}", "position": 0}
            connection.execute(FEEDBACK.insert(), row | {"label": "Sports", "text": f"Match {i}"})
    engine.dispose()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "tests.workers.feedback_ranks"]
    env = MlflowStore(tmp_path).env
    launches = []
    for launch in ("first", "second"):
        result = tmp_path / launch
        arguments = [url, str(small_data), str(tmp_path / "checkpoints"), str(result)]
        subprocess.run(command + arguments, cwd=REPO, env=env, check=True, timeout=300)
        launches += [json.loads(Path(f"{result}.{rank}.json").read_text()) for rank in (0, 1)]
    assert all(rows == launches[0] for rows in launches[1:])
    assert len(launches[0]["production"]) > 0 and len(launches[0]["feedback"]) > 0
    assert "A late story" not in launches[0]["feedback"] + launches[0]["production"]
