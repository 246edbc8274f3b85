"""Serving latency and throughput: the int8 ONNX server over HTTP vs PyTorch fp32 eager.

Starts `python -m serving` on 127.0.0.1 (this process is the load generator,
a second process), sends AG News test texts one at a time, then from 16
concurrent clients, with micro-batching on and off. Bounded: a fixed number
of requests per phase. Writes benchmarks/serving.md and logs it to MLflow.

    python benchmarks/serving_latency.py --model /tmp/minilm-int8 --checkpoint <PyTorch folder> \\
        --data ../shared/data/ag_news --distilbert
"""

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from distrinews.distributed import available_cpus
from distrinews.export import batch1_latency_ms, pytorch_logits
from distrinews.onnx_classifier import OnnxClassifier
from serving.local import REPO, Server


def percentiles(ms: list[float]) -> dict[str, float]:
    return {f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)}


def one_client(url: str, texts: list[str]) -> dict[str, float]:
    timings = []
    with httpx.Client(timeout=30) as client:
        for text in texts[:10]:  # warm-up
            client.post(f"{url}/predict", json={"text": text})
        for text in texts:
            start = time.perf_counter()
            response = client.post(f"{url}/predict", json={"text": text})
            timings.append(1000 * (time.perf_counter() - start))
            response.raise_for_status()
    return percentiles(timings)


async def _many_clients(
    url: str, texts: list[str], clients: int, requests: int
) -> dict[str, float]:
    timings: list[float] = []
    errors = 0
    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(texts[i % len(texts)])

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while not queue.empty():
            text = queue.get_nowait()
            start = time.perf_counter()
            response = await client.post(f"{url}/predict", json={"text": text})
            timings.append(1000 * (time.perf_counter() - start))
            errors += response.status_code != 200

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return {"requests_per_s": requests / elapsed, "errors": errors, **percentiles(timings)}


def many_clients(url: str, texts: list[str], clients: int, requests: int) -> dict[str, float]:
    return asyncio.run(_many_clients(url, texts, clients, requests))


def measure_server(model: str, texts: list[str], args: argparse.Namespace, **settings) -> dict:
    server = Server(model, dict(os.environ), access_log=False, **settings)
    try:
        server.wait_ready(timeout=120)
        return {
            "one": one_client(server.url, texts[: args.texts]),
            "many": many_clients(server.url, texts, args.clients, args.requests),
        }
    finally:
        server.stop()


def in_process_ms(predict, texts: list[str]) -> dict[str, float]:
    """Batch-1 latency of `predict` in this process (no HTTP), after 10 warm-up calls."""
    batch1_latency_ms(predict, texts[:10])
    return percentiles(batch1_latency_ms(predict, texts))


def pytorch_eager_ms(checkpoint: str, texts: list[str]) -> dict[str, float]:
    """The PyTorch fp32 eager model, same texts, truncated as the exported model is."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(available_cpus())
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    return in_process_ms(lambda batch: pytorch_logits(model, tokenizer, batch, 128), texts)


def export_random_distilbert(folder: Path, data: str) -> Path:
    """A DistilBERT-base-size model with random weights, exported like a trained one."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    from distrinews.config import DEFAULT_MODEL, LABELS
    from distrinews.model import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_MODEL))
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={v: k for k, v in enumerate(LABELS)},
    )
    DistilBertForSequenceClassification(config).save_pretrained(folder / "checkpoint")
    tokenizer.save_pretrained(folder / "checkpoint")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.export",
            "--checkpoint",
            str(folder / "checkpoint"),
            "--data",
            data,
            "--max-eval-rows",
            "200",
            "--latency-texts",
            "50",
            "--max-accuracy-drop",
            "100",
            "--output",
            str(folder / "int8"),
        ],
        cwd=REPO,
        check=True,
    )
    return folder / "int8"


def report(results: dict, args: argparse.Namespace) -> str:
    on, off, torch_ms = results["batching_on"], results["batching_off"], results["pytorch_fp32"]
    int8_ms = results["onnx_int8"]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} vCPUs; server and load "
        "generator share them. AG News test texts, `POST /predict` over HTTP on 127.0.0.1.",
        "",
        "| model | path | p50 ms | p95 ms | p99 ms |",
        "| --- | --- | --- | --- | --- |",
        f"| MiniLM-L6 | PyTorch fp32 eager, in process, batch 1 | {torch_ms['p50']:.1f} | "
        f"{torch_ms['p95']:.1f} | {torch_ms['p99']:.1f} |",
        f"| MiniLM-L6 | ONNX int8, in process, batch 1 | {int8_ms['p50']:.1f} | "
        f"{int8_ms['p95']:.1f} | {int8_ms['p99']:.1f} |",
        f"| MiniLM-L6 | ONNX int8 server, HTTP, 1 client | {off['one']['p50']:.1f} | "
        f"{off['one']['p95']:.1f} | {off['one']['p99']:.1f} |",
    ]
    if "distilbert" in results:
        d = results["distilbert"]["one"]
        lines.append(
            f"| DistilBERT-base size (random) | ONNX int8 server, HTTP, 1 client | "
            f"{d['p50']:.1f} | {d['p95']:.1f} | {d['p99']:.1f} |"
        )
    lines += [
        "",
        "int8 vs PyTorch fp32 eager, both in process: "
        f"p95 {torch_ms['p95'] / int8_ms['p95']:.1f}x, "
        f"p50 {torch_ms['p50'] / int8_ms['p50']:.1f}x faster. Over HTTP, the int8 server's p95 is "
        f"{torch_ms['p95'] / off['one']['p95']:.1f}x below PyTorch's in-process p95.",
        "",
        f"{args.clients} concurrent clients, {args.requests} requests each run:",
        "",
        "| micro-batching | requests/s | p50 ms | p99 ms | errors |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in (("off (default)", off), ("on (window 1 ms, up to 32 texts)", on)):
        m = r["many"]
        lines.append(
            f"| {name} | {m['requests_per_s']:.0f} | {m['p50']:.1f} | {m['p99']:.1f} "
            f"| {m['errors']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="exported int8 ONNX folder")
    parser.add_argument("--checkpoint", required=True, help="the PyTorch folder it came from")
    parser.add_argument("--data", default="../shared/data/ag_news")
    parser.add_argument("--texts", type=int, default=300, help="requests in the 1-client runs")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--requests", type=int, default=1000, help="requests in each concurrent run"
    )
    parser.add_argument(
        "--distilbert", action="store_true", help="also time a DistilBERT-size model"
    )
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "serving.md")
    parser.add_argument(
        "--run-id", default="", help="MLflow run to log the table to (e.g. the export run)"
    )
    args = parser.parse_args(argv)

    texts = (
        pd.read_parquet(Path(args.data) / "test.parquet")["text"]
        .sample(frac=1, random_state=0)
        .tolist()
    )
    results = {"pytorch_fp32": pytorch_eager_ms(args.checkpoint, texts[: args.texts])}
    results["onnx_int8"] = in_process_ms(OnnxClassifier(args.model).logits, texts[: args.texts])
    results["batching_off"] = measure_server(args.model, texts, args)
    results["batching_on"] = measure_server(
        args.model, texts, args, micro_batch_size=32, micro_batch_window_ms=1
    )
    if args.distilbert:
        with tempfile.TemporaryDirectory() as work:
            folder = export_random_distilbert(Path(work), args.data)
            one_arg = argparse.Namespace(**{**vars(args), "requests": args.clients})
            results["distilbert"] = measure_server(str(folder), texts, one_arg)
    text = "# Serving: latency and throughput\n\n" + report(results, args)
    args.output.write_text(text)
    print(text)

    import mlflow

    with mlflow.start_run(
        run_id=args.run_id or None, run_name=None if args.run_id else "serving-benchmark"
    ):
        mlflow.set_tag("benchmark", "serving")
        mlflow.log_text(text, "benchmarks/serving.md")
        mlflow.log_metrics(
            {
                "bench_server_p95_ms": results["batching_off"]["one"]["p95"],
                "bench_onnx_int8_p95_ms": results["onnx_int8"]["p95"],
                "bench_pytorch_p95_ms": results["pytorch_fp32"]["p95"],
                "bench_rps_16_clients_batching": results["batching_on"]["many"]["requests_per_s"],
                "bench_rps_16_clients_no_batching": results["batching_off"]["many"][
                    "requests_per_s"
                ],
            }
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
