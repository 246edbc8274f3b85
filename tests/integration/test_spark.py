"""The registered model on Spark (local mode, 2 executor threads, Debian's OpenJDK) through
`mlflow.pyfunc.spark_udf`: the same answers as the predict step for the same rows."""

import sys

import numpy as np
import pandas as pd
import pytest

from devkit.mlflow_store import tracking_uri
from devkit.processes import REPO, SHARED_DATA
from devkit.tiny_models import TINY_REGISTERED
from distrinews.runtime.labels import LABELS
from distrinews.runtime.table_scoring import CHUNK_ROWS

pytestmark = pytest.mark.timeout(300)

ROWS = 4 * CHUNK_ROWS


@pytest.fixture()
def spark(tmp_path, monkeypatch):
    from pyspark.sql import SparkSession

    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)  # the executors' Python: this venv's
    session = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.local.dir", str(tmp_path / "spark"))
        # One Arrow batch per chunk of the predict step (the int8 model scales activations
        # per call, so equal batches give equal answers).
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(CHUNK_ROWS))
        .getOrCreate()
    )
    yield session
    session.stop()


def test_spark_udf_answers_as_the_predict_step_does(registered_tiny, spark, tmp_path):
    import mlflow

    uri = f"models:/{TINY_REGISTERED}/1"
    frame = pd.read_parquet(SHARED_DATA / "test.parquet").iloc[:ROWS][["text"]]
    frame.loc[10, "text"] = None  # a missing text fails neither
    frame = frame.assign(id=range(ROWS)).reset_index(drop=True)
    (tmp_path / "news").mkdir()
    frame.to_parquet(tmp_path / "news" / "news.parquet")
    command = [sys.executable, "-m", "pipelines.predict", "--model", uri]
    command += ["--input", str(tmp_path / "news"), "--output", str(tmp_path / "scored")]
    result = registered_tiny.run(command, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    step = pd.read_parquet(tmp_path / "scored" / "news.parquet")

    with tracking_uri(registered_tiny.uri):
        udf = mlflow.pyfunc.spark_udf(spark, uri, env_manager="local")
    rows = spark.createDataFrame(frame)  # 2 partitions of consecutive rows
    assert rows.rdd.getNumPartitions() == 2
    scored = rows.withColumn("answer", udf("text")).select("id", "answer.*").toPandas()
    scored = scored.sort_values("id").reset_index(drop=True)

    assert scored["label"].tolist() == step["label"].tolist()
    assert scored.loc[10, "label"] == "" and scored.loc[10, "error"] == "missing text"
    probabilities = [f"prob_{label}" for label in LABELS]
    assert np.allclose(scored[probabilities], step[probabilities], atol=1e-6, equal_nan=True)
