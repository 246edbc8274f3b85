"""Benchmarks are scripts, not tests: here each runs once on a tiny configuration."""

import subprocess
import sys

import pytest

from tests.conftest import REPO, MlflowStore

pytestmark = pytest.mark.integration


def test_train_epoch_benchmark_writes_its_table(tmp_path, tiny_bert, small_data):
    store = MlflowStore(tmp_path)
    store.experiment("bench")
    output = tmp_path / "training.md"
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "train_epoch.py"),
        "--data",
        str(small_data),
        "--nproc",
        "1",
        "--experiment",
        "bench",
        "--output",
        str(output),
        "-P",
        f"model={tiny_bert}",
        "-P",
        "max_train_rows=64",
        "-P",
        f"output_dir={tmp_path / 'ck'}",
    ]
    result = subprocess.run(command, env=store.env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    text = output.read_text()
    assert "| 1 |" in text and "test accuracy" in text
    assert text.split("\n| 1 | ")[1].split(" |")[0].isdigit(), "epoch wall time recorded"
    (run,) = store.client.search_runs(
        [store.client.get_experiment_by_name("bench").experiment_id],
        "tags.benchmark = 'train_epoch'",
    )
    assert run.info.status == "FINISHED"


def test_serving_benchmark_writes_its_table(exported, tmp_path):
    store, _, folder, reference = exported
    output = tmp_path / "serving.md"
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "serving_latency.py"),
        "--model",
        str(folder),
        "--checkpoint",
        str(reference),
        "--data",
        str(REPO.parent / "shared" / "data" / "ag_news"),
        "--texts",
        "10",
        "--clients",
        "4",
        "--requests",
        "20",
        "--output",
        str(output),
    ]
    # cwd: the Default experiment keeps its artifacts under ./mlruns
    result = subprocess.run(
        command, env=store.env, capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = output.read_text()
    assert "ONNX int8 server, HTTP, 1 client" in text and "| off (default) |" in text
    assert "| 0 |" in text, "no failed requests"
    (run,) = store.client.search_runs(
        [e.experiment_id for e in store.client.search_experiments()], "tags.benchmark = 'serving'"
    )
    assert run.info.status == "FINISHED"
