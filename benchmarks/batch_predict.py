"""Batch scoring throughput: the predict step against the server's /predict/batch, PyTorch
fp32 in process, and Spark local mode through `mlflow.pyfunc.spark_udf`.

Every engine scores the whole AG News test split (7,600 texts) with the same model: the
int8 ONNX folder registered in a temporary MLflow store (the predict step and Spark load
that registered version) and, for the PyTorch row, the checkpoint it was exported from.
Rounds alternate the engines; the table gives medians of texts per second.

    python -m benchmarks.batch_predict --model <int8 folder> --checkpoint <its checkpoint>
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from benchmarks.common import DATA, REPO, median_of, record
from devkit.mlflow_store import MlflowStore, tracking_uri
from devkit.servers import Server
from distrinews.runtime.cpu import available_cpus

#: Texts per /predict/batch request: the server's default limit (max_batch_texts).
HTTP_BATCH = 64


def register(store: MlflowStore, folder: Path) -> str:
    """The ONNX folder as version 1 of a registered model in `store`; its URI."""
    import mlflow

    from distrinews.runtime.pyfunc import log_onnx_model

    with tracking_uri(store.uri):
        mlflow.set_experiment("batch-bench")
        with mlflow.start_run():
            log_onnx_model(folder, ["Stocks rallied as oil fell."], "batch-bench")
    return "models:/batch-bench/1"


def batch_step(store: MlflowStore, model: str, data: Path, out: Path, processes: int) -> dict:
    """The predict step as users run it (a process of its own): its own texts/s, and the
    whole command's."""
    command = [sys.executable, "-m", "pipelines.predict", "--model", model, "--input", str(data)]
    command += ["--output", str(out), "--overwrite", "true", "--processes", str(processes)]
    start = time.perf_counter()
    result = store.run(command, timeout=3600)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"predict failed: {result.stderr[-2000:]}")
    (run,) = store.client.search_runs(
        [store.client.get_experiment_by_name("Default").experiment_id],
        order_by=["start_time DESC"],
        max_results=1,
    )
    rows = run.data.metrics["rows"]
    return {"texts_per_s": run.data.metrics["texts_per_second"], "command_per_s": rows / wall}


async def post_batches(url: str, texts: list[str], clients: int) -> float:
    """Texts/s of `texts` sent as /predict/batch requests of HTTP_BATCH from `clients`."""
    batches = [texts[i : i + HTTP_BATCH] for i in range(0, len(texts), HTTP_BATCH)]
    queue = list(reversed(batches))

    async def client(http: httpx.AsyncClient) -> None:
        while queue:
            response = await http.post(f"{url}/predict/batch", json={"texts": queue.pop()})
            response.raise_for_status()

    async with httpx.AsyncClient(timeout=300) as http:
        await http.post(f"{url}/predict/batch", json={"texts": batches[0]})  # warm
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return len(texts) / (time.perf_counter() - start)


def server_rates(folder: Path, texts: list[str], work: Path) -> dict:
    """The server as deployed (its defaults), for 1 and 2 concurrent clients."""
    env = dict(os.environ)
    server = Server(folder, env, access_log=False, prediction_log=f"sqlite:///{work}/log.db")
    try:
        server.wait_ready(timeout=300)
        return {f"http_{n}": asyncio.run(post_batches(server.url, texts, n)) for n in (1, 2)}
    finally:
        server.stop()


def pytorch_rate(checkpoint: Path, texts: list[str]) -> float:
    """PyTorch fp32 in process: batches of HTTP_BATCH texts of similar length, every CPU."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(available_cpus())
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    order = np.argsort([len(t) for t in texts])
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(texts), HTTP_BATCH):
            batch = [texts[j] for j in order[i : i + HTTP_BATCH]]
            inputs = tokenizer(
                batch, padding=True, truncation=True, max_length=128, return_tensors="pt"
            )
            model(**inputs)
    return len(texts) / (time.perf_counter() - start)


def spark_session():
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # executors: this environment

    return (
        SparkSession.builder.master(f"local[{available_cpus()}]")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )


def spark_rate(spark, store: MlflowStore, model: str, frame: pd.DataFrame) -> dict:
    """Spark local mode, one partition per CPU: texts/s from the DataFrame to the answers
    collected (the UDF's Python workers start within it), and its answers."""
    import mlflow

    with tracking_uri(store.uri):
        udf = mlflow.pyfunc.spark_udf(spark, model, env_manager="local")
        start = time.perf_counter()
        frame = spark.createDataFrame(frame[["text"]].reset_index())
        answers = frame.withColumn("a", udf("text")).select("index", "a.*").toPandas()
        rate = len(answers) / (time.perf_counter() - start)
    return {"rate": rate, "answers": answers.sort_values("index").reset_index(drop=True)}


def agreement(spark_answers: pd.DataFrame, step_output: Path) -> tuple[float, float]:
    """Share of Spark's labels equal to the predict step's, and the largest probability gap."""
    # Row by row: the step's output keeps the input's index, Spark's answers are renumbered.
    step = pd.read_parquet(step_output).reset_index(drop=True)
    probabilities = [c for c in step.columns if c.startswith("prob_")]
    same = float((spark_answers["label"] == step["label"]).mean())
    gap = np.abs(spark_answers[probabilities].to_numpy() - step[probabilities].to_numpy())
    return same, float(gap.max())


def measure(args: argparse.Namespace, work: Path) -> tuple[dict, dict]:
    store = MlflowStore(work)
    model = register(store, Path(args.model))
    frame = pd.read_parquet(Path(args.data) / "test.parquet")
    data = work / "input"
    data.mkdir()
    frame.to_parquet(data / "test.parquet")
    texts = frame["text"].tolist()
    spark = spark_session()
    rounds: list[dict] = []
    try:
        for _ in range(args.rounds):
            result: dict[str, float] = {}
            for processes in (1, 2):
                step = batch_step(store, model, data, work / "out", processes)
                result |= {
                    f"step_{processes}": step["texts_per_s"],
                    f"step_{processes}_command": step["command_per_s"],
                }
            result |= server_rates(Path(args.model), texts, work)
            result["pytorch_fp32"] = pytorch_rate(Path(args.checkpoint), texts)
            sparked = spark_rate(spark, store, model, frame)
            result["spark"] = sparked["rate"]
            result["spark_same"], result["spark_gap"] = agreement(
                sparked["answers"], work / "out" / "test.parquet"
            )
            print(f"round {len(rounds) + 1}: {result}", flush=True)
            rounds.append(result)
    finally:
        spark.stop()
    return median_of(rounds), {"rows": len(texts)}


def table(r: dict, info: dict, args: argparse.Namespace) -> tuple[str, dict]:
    server = max(r["http_1"], r["http_2"])
    step = max(r["step_1"], r["step_2"])
    rows = [
        ("predict step, 1 process (every CPU as ONNX Runtime threads)", r["step_1"]),
        ("predict step, 2 processes (1 thread each)", r["step_2"]),
        ("server /predict/batch over HTTP, 64 texts a request, 1 client", r["http_1"]),
        ("server /predict/batch over HTTP, 64 texts a request, 2 clients", r["http_2"]),
        ("PyTorch fp32 in process, batches of 64 by length", r["pytorch_fp32"]),
        ("Spark local mode, mlflow.pyfunc.spark_udf", r["spark"]),
    ]
    lines = [
        f"AG News test split ({info['rows']} texts); the int8 ONNX model "
        f"`{Path(args.model).name}`, "
        f"registered; medians over {args.rounds} alternating rounds.",
        "",
        "| engine | texts/s | vs server /predict/batch (best) |",
        "| --- | --- | --- |",
        *(f"| {name} | {rate:.0f} | {rate / server:.2f}x |" for name, rate in rows),
        "",
        f"The predict step's rate is its own (`texts_per_second`: reading, scoring and "
        f"writing the file); the whole command, with Python and MLflow start-up and the "
        f"model download, ran at {r['step_1_command']:.0f} (1 process) and "
        f"{r['step_2_command']:.0f} texts/s (2 processes).",
        "",
        f"Predict step (best) vs server /predict/batch (best): **{step / server:.2f}x**; "
        f"vs PyTorch fp32: **{step / r['pytorch_fp32']:.2f}x**.",
        "",
        f"Spark's answers against the predict step's: the same label for "
        f"{r['spark_same']:.2%} of texts, probabilities at most {r['spark_gap']:.2g} apart "
        "(Spark's Arrow batches are not the step's chunks: int8 scales activations per call).",
    ]
    metrics = {
        "step_vs_server": step / server,
        "step_vs_pytorch": step / r["pytorch_fp32"],
        **{f"texts_per_s_{key}": value for key, value in r.items() if not key.startswith("spark_")},
        "spark_label_agreement": r["spark_same"],
    }
    return "\n".join(lines) + "\n", metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an exported int8 ONNX folder")
    parser.add_argument("--checkpoint", required=True, help="the checkpoint it was exported from")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "batch_predict.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="distrinews-batch-bench-") as work:
        results, info = measure(args, Path(work))
    body, metrics = table(results, info, args)
    record(
        "batch_predict",
        "Batch scoring throughput",
        body,
        args.output,
        metrics,
        experiment=args.experiment,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
