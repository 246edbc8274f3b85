"""`mlflow run . -e predict` as a user types it: a folder of a Parquet and a CSV file with rows
that are not texts, scored by a registered version; a rerun keeps what is done, and scores
again what changed; a run killed mid-file leaves no partial output, and the next run completes
it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow.parquet as pq
import pytest

from devkit.mlflow_store import MlflowStore, step_in_process
from devkit.processes import PROCESS_TIMEOUT, REPO, SHARED_DATA
from devkit.tiny_models import TINY_REGISTERED as NAME
from distrinews.config import PredictConfig
from distrinews.predict.step import run_predict
from distrinews.runtime.labels import LABELS
from distrinews.runtime.table_scoring import answer_columns

pytestmark = pytest.mark.timeout(300)


def news_folder(folder: Path, rows: int) -> dict[str, pd.DataFrame]:
    """A Parquet file (labelled, ids, a blank and a missing text) and a CSV file (a text over
    the limit) of real AG News rows; the frames written, by file name."""
    test = pd.read_parquet(SHARED_DATA / "test.parquet")
    first = test.iloc[:rows].assign(id=range(rows)).reset_index(drop=True)
    first.loc[3, "text"], first.loc[7, "text"] = "   ", None
    second = test.iloc[rows : 2 * rows][["text"]].reset_index(drop=True)
    second.loc[5, "text"] = "x" * 10_001
    folder.mkdir()
    first.to_parquet(folder / "a.parquet")
    second.to_csv(folder / "b.csv", index=False)
    return {"a": first, "b": second}


def test_predict_scores_a_folder_keeps_every_row_and_resumes(registered_tiny, tmp_path):
    frames = news_folder(tmp_path / "news", 150)
    output = tmp_path / "scored"
    params = {"model": f"models:/{NAME}/1", "input": tmp_path / "news", "output": output}
    result = registered_tiny.mlflow_run("predict", "batch", params)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 file(s) scored (300 rows, 3 not texts" in result.stdout

    first, second = (pd.read_parquet(output / f"{name}.parquet") for name in ("a", "b"))
    assert first["id"].tolist() == list(range(150)), "every row, in order"
    assert first["input_label"].tolist() == frames["a"]["label"].tolist(), "the input's label kept"
    assert first["text"].tolist()[:3] == frames["a"]["text"].tolist()[:3]
    assert list(second.columns) == ["text", *answer_columns(LABELS)]
    for frame, bad in ((first, {3: "empty text", 7: "missing text"}), (second, {5: "over"})):
        errors = frame["error"].dropna()
        assert sorted(errors.index) == sorted(bad) and frame.loc[list(bad), "label"].eq("").all()
        assert all(want in errors[row] for row, want in bad.items())
        good = frame.drop(index=list(bad))
        assert good["label"].isin(LABELS).all() and good["confidence"].between(0.25, 1).all()
        probabilities = good[[f"prob_{label}" for label in LABELS]].sum(axis=1)
        assert probabilities.round(5).eq(1).all()

    run = last_run(registered_tiny, "batch")
    assert run.info.status == "FINISHED" and run.data.tags["step"] == "predict"
    assert run.data.tags["registered_model"] == NAME and run.data.tags["model_version"] == "1"
    metrics = run.data.metrics
    assert metrics["rows"] == 300 and metrics["bad_rows"] == 3 and metrics["files_scored"] == 2
    assert metrics["texts_per_second"] > 0 and 0 <= metrics["drift_predicted_label"] <= 1
    shares = [metrics[f"predicted_share/{label}"] for label in LABELS]
    assert sum(shares) == pytest.approx(1)
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "news" and dataset.tags[0].value == "predict"
    artifacts = {a.path for a in registered_tiny.client.list_artifacts(run.info.run_id, "predict")}
    assert artifacts == {"predict/files.json", "predict/label_distribution.png"}

    written = {name: (output / f"{name}.parquet").stat().st_mtime_ns for name in ("a", "b")}
    again = registered_tiny.mlflow_run("predict", "batch", params)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 file(s) scored (0 rows, 0 not texts, 0 rows/s), 2 kept" in again.stdout
    assert {n: (output / f"{n}.parquet").stat().st_mtime_ns for n in written} == written
    assert last_run(registered_tiny, "batch").data.metrics["files_kept"] == 2


def last_run(store: MlflowStore, experiment: str):
    experiment_id = store.client.get_experiment_by_name(experiment).experiment_id
    return store.client.search_runs([experiment_id], order_by=["start_time DESC"])[0]


def predict_in_process(store: MlflowStore, experiment: str, **settings) -> tuple[str, dict]:
    """The step's function as `mlflow run` calls it: its summary, and its files.json by input
    file name."""
    with step_in_process(store.uri, experiment):
        mlflow.set_experiment(experiment)  # not the one a fixture made active in this process
        summary = run_predict(PredictConfig(model=f"models:/{NAME}/1", **settings))
        run_id = last_run(store, experiment).info.run_id
        files = mlflow.artifacts.load_dict(f"runs:/{run_id}/predict/files.json")["files"]
    return summary, {Path(f["input"]).name: f for f in files}


def test_a_rerun_scores_again_an_input_that_grew_and_keeps_the_unchanged_one(
    registered_tiny, tmp_path
):
    registered_tiny.experiment("grown")
    source, output = tmp_path / "news", tmp_path / "scored"
    test = pd.read_parquet(SHARED_DATA / "test.parquet")[["text"]]
    source.mkdir()
    test.iloc[:20].to_parquet(source / "a.parquet")
    test.iloc[20:30].to_csv(source / "b.csv", index=False)
    settings = {"input": str(source), "output": str(output)}
    predict_in_process(registered_tiny, "grown", **settings)
    written = {name: (output / name).stat().st_mtime_ns for name in ("a.parquet", "b.parquet")}
    summary, files = predict_in_process(registered_tiny, "grown", **settings)
    assert "0 file(s) scored" in summary and "2 kept" in summary, "nothing changed"
    assert {name: (output / name).stat().st_mtime_ns for name in written} == written

    test.iloc[20:35].to_csv(source / "b.csv", index=False)  # 5 rows more
    summary, files = predict_in_process(registered_tiny, "grown", **settings)
    assert "1 file(s) scored (15 rows" in summary and "1 kept" in summary
    assert files["b.csv"]["reason"] == "the input changed since it was scored"
    assert files["a.parquet"]["status"] == "kept"
    assert (output / "a.parquet").stat().st_mtime_ns == written["a.parquet"]
    grown = pd.read_parquet(output / "b.parquet")
    assert grown["text"].tolist() == test["text"].iloc[20:35].tolist()
    assert grown["label"].isin(LABELS).all(), "the new rows are scored"


def test_another_text_column_scores_again_and_the_output_keeps_the_input_s_id_index(
    registered_tiny, tmp_path
):
    registered_tiny.experiment("headlines")
    test = pd.read_parquet(SHARED_DATA / "test.parquet").iloc[:20]
    news = test.assign(id=range(500, 520), headline="Oil rose").set_index("id")
    news.to_parquet(tmp_path / "a.parquet")
    settings = {"input": str(tmp_path / "a.parquet"), "output": str(tmp_path / "scored")}
    predict_in_process(registered_tiny, "headlines", **settings)
    scored = pd.read_parquet(tmp_path / "scored" / "a.parquet")
    pd.testing.assert_index_equal(scored.index, news.index)
    assert scored["text"].tolist() == news["text"].tolist()

    summary, files = predict_in_process(
        registered_tiny, "headlines", **settings, text_column="headline"
    )
    assert "1 file(s) scored (20 rows" in summary
    assert files["a.parquet"]["reason"] == "text_column changed ('text' -> 'headline')"
    rescored = pd.read_parquet(tmp_path / "scored" / "a.parquet")
    assert rescored["label"].nunique() == 1, "every row's text is now the same headline"
    pd.testing.assert_index_equal(rescored.index, news.index)


def predict_command(source: Path, output: Path, *flags: str) -> list[str]:
    """The step started directly (no `mlflow run` in between), so a signal reaches it."""
    command = [sys.executable, "-m", "pipelines.predict", "--model", f"models:/{NAME}/1"]
    return [*command, "--input", str(source), "--output", str(output), *flags]


def test_a_run_killed_mid_file_leaves_no_partial_output_and_a_rerun_completes(
    registered_tiny, tmp_path
):
    source, output = tmp_path / "news", tmp_path / "scored"
    test = pd.read_parquet(SHARED_DATA / "test.parquet")[["text"]]
    source.mkdir()
    for name in ("a", "b", "c"):  # 7,600 rows: a file takes about a second
        test.to_parquet(source / f"{name}.parquet")
    command = predict_command(source, output, "--processes", "2")
    step = subprocess.Popen(
        command,
        cwd=REPO,
        env=registered_tiny.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while not (output / "a.parquet").exists():
            assert step.poll() is None, step.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the first file was never written"
            time.sleep(0.02)
        os.killpg(step.pid, signal.SIGKILL)  # the step and its scoring processes
    finally:
        step.wait(timeout=60)
    assert sorted(p.name for p in output.iterdir()) == ["a.parquet"], "no partial file"
    assert pq.ParquetFile(output / "a.parquet").metadata.num_rows == len(test)

    result = registered_tiny.run(predict_command(source, output))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 file(s) scored" in result.stdout and "1 kept" in result.stdout
    assert sorted(p.name for p in output.iterdir()) == ["a.parquet", "b.parquet", "c.parquet"]
    first, last = (pd.read_parquet(output / f"{n}.parquet") for n in ("a", "c"))
    # The same rows scored by 2 processes (a) and by 1 (c): the same answers.
    pd.testing.assert_frame_equal(first, last, check_exact=False, rtol=1e-6)
