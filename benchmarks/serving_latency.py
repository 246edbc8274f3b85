"""Serving latency and throughput: the int8 ONNX server over HTTP vs PyTorch fp32 eager.

Starts `python -m serving` on 127.0.0.1 (this process is the load generator,
a second process) and sends AG News test texts one at a time, then from 16
concurrent clients. Each round measures every configuration once, in the
same order; the table gives medians over the rounds. Bounded: a fixed number
of requests per phase. Writes benchmarks/serving.md and logs it to MLflow.

    python -m benchmarks.serving_latency --model <int8 folder> --checkpoint <PyTorch folder> \\
        [--model-avx2 <the same model exported for avx2>] [--distilbert]
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import (
    DATA,
    REPO,
    ag_news_test_texts,
    many_clients,
    median_of,
    one_client,
    percentiles,
    record,
)
from devkit.servers import Server
from distrinews.export.checks import pytorch_logits
from distrinews.runtime.cpu import available_cpus
from distrinews.runtime.onnx_classifier import OnnxClassifier
from distrinews.runtime.scoring import batch1_latency_ms
from serving.inference import export_report
from serving.settings import Settings

#: Server configurations compared ("default": the server's defaults today), with no bound on
#: requests in hand: the concurrent clients' requests are queued, not refused, so that
#: requests/s measures the model (benchmarks/overload.py measures the bound).
SERVERS = {
    "default": {"max_queue": 0},
    "spinning": {"spinning": "on", "max_queue": 0},
    "batching": {"micro_batch_size": 32, "micro_batch_window_ms": 1, "max_queue": 0},
}


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


def pytorch_eager(checkpoint: str):
    """The PyTorch fp32 eager model's predict function, truncating as the export does."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(available_cpus())
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    return lambda batch: pytorch_logits(model, tokenizer, batch, 128)


def export_random_distilbert(folder: Path, data: str) -> Path:
    """A DistilBERT-base-size model with random weights, exported like a trained one."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    from distrinews.config import DEFAULT_MODEL
    from distrinews.runtime.labels import LABELS
    from distrinews.train.model import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_MODEL))
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={v: k for k, v in enumerate(LABELS)},
    )
    DistilBertForSequenceClassification(config).save_pretrained(folder / "checkpoint")
    tokenizer.save_pretrained(folder / "checkpoint")
    export = [sys.executable, "-m", "pipelines.export", "--checkpoint", str(folder / "checkpoint")]
    export += ["--data", data, "--max-eval-rows", "200", "--latency-texts", "50"]
    export += ["--max-accuracy-drop", "100", "--output", str(folder / "int8")]
    export += ["--registered-model", ""]  # a random model: not a version in the user's registry
    subprocess.run(export, cwd=REPO, check=True, timeout=3600)
    return folder / "int8"


def measure_round(texts: list[str], predictors: dict, args: argparse.Namespace) -> dict:
    result = {
        name: in_process_ms(predict, texts[: args.texts]) for name, predict in predictors.items()
    }
    for name, settings in SERVERS.items():
        result[name] = measure_server(args.model, texts, args, **settings)
    one = argparse.Namespace(**{**vars(args), "requests": args.clients})
    if args.distilbert_folder:
        result["distilbert"] = measure_server(
            str(args.distilbert_folder), texts, one, **SERVERS["default"]
        )
    if args.model_avx2:
        result["avx2"] = measure_server(args.model_avx2, texts, one, **SERVERS["default"])
    return result


def summarize(rounds: list[dict]) -> dict[str, dict[str, float]]:
    """Medians over rounds of every figure, and of the per-round int8 speed-up."""
    summary = {
        "pytorch": median_of([r["pytorch"] for r in rounds]),
        "int8": median_of([r["int8"] for r in rounds]),
        "speedup": median_of(
            [{q: r["pytorch"][q] / r["int8"][q] for q in ("p50", "p95")} for r in rounds]
        ),
    }
    for name in [*SERVERS, "distilbert", "avx2"]:
        if name in rounds[0]:
            summary[f"{name}_one"] = median_of([r[name]["one"] for r in rounds])
            summary[f"{name}_many"] = median_of([r[name]["many"] for r in rounds])
    return summary


def table(s: dict, rounds: list[dict], args: argparse.Namespace) -> str:
    def row(model: str, path: str, p: dict) -> str:
        return f"| {model} | {path} | {p['p50']:.1f} | {p['p95']:.1f} | {p['p99']:.1f} |"

    lines = [
        f"Medians over {len(rounds)} rounds. Server and load generator share the vCPUs. "
        "AG News test texts, `POST /predict` over HTTP on 127.0.0.1.",
        "",
        "| model | path | p50 ms | p95 ms | p99 ms |",
        "| --- | --- | --- | --- | --- |",
        row("MiniLM-L6", "PyTorch fp32 eager, in process, batch 1", s["pytorch"]),
        row("MiniLM-L6", "ONNX int8, in process, batch 1", s["int8"]),
        row(
            "MiniLM-L6",
            f"ONNX int8 server ({args.model_target} build), HTTP, 1 client",
            s["default_one"],
        ),
        row(
            "MiniLM-L6",
            "same, ONNX Runtime threads spinning also between requests",
            s["spinning_one"],
        ),
    ]
    if "avx2_one" in s:
        lines.append(
            row("MiniLM-L6", "ONNX int8 server (avx2 build), HTTP, 1 client", s["avx2_one"])
        )
    if "distilbert_one" in s:
        lines.append(
            row(
                "DistilBERT-base size (random)",
                "ONNX int8 server, HTTP, 1 client",
                s["distilbert_one"],
            )
        )
    p95_rounds = ", ".join(f"{r['default']['one']['p95']:.1f}" for r in rounds)
    lines += [
        "",
        f"int8 vs PyTorch fp32 eager, both in process (median of per-round ratios): "
        f"p50 {s['speedup']['p50']:.1f}x, p95 {s['speedup']['p95']:.1f}x faster. "
        f"MiniLM server p95 per round: {p95_rounds} ms.",
        "",
        f"{args.clients} concurrent clients, {args.requests} requests per run, every request "
        "admitted (DISTRINEWS_MAX_QUEUE=0: queued, not refused; see overload.md):",
        "",
        "| server | requests/s | p50 ms | p99 ms | errors (all rounds) |",
        "| --- | --- | --- | --- | --- |",
    ]
    names = {
        "default": f"default (spinning {Settings().spinning}, no micro-batching)",
        "spinning": "ONNX Runtime threads spinning also between requests",
        "batching": "micro-batching on (window 1 ms, up to 32 texts)",
    }
    for name, label in names.items():
        m = s[f"{name}_many"]
        errors = sum(r[name]["many"]["errors"] for r in rounds)
        lines.append(
            f"| {label} | {m['requests_per_s']:.0f} | {m['p50']:.1f} | {m['p99']:.1f} | {errors} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="exported int8 ONNX folder")
    parser.add_argument(
        "--model-avx2", default="", help="the same model exported with -P target=avx2, timed beside"
    )
    parser.add_argument("--checkpoint", required=True, help="the PyTorch folder it came from")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--texts", type=int, default=300, help="requests in the 1-client runs")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=1000, help="requests per concurrent run")
    parser.add_argument(
        "--distilbert", action="store_true", help="also time a DistilBERT-size model"
    )
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "serving.md")
    parser.add_argument("--run-id", default="", help="MLflow run to log to (e.g. the export run)")
    args = parser.parse_args(argv)

    texts = ag_news_test_texts(args.data)
    args.model_target = export_report(Path(args.model)).get("target", "?")
    predictors = {
        "pytorch": pytorch_eager(args.checkpoint),
        "int8": OnnxClassifier(args.model).logits,
    }
    with tempfile.TemporaryDirectory() as work:
        args.distilbert_folder = (
            export_random_distilbert(Path(work), args.data) if args.distilbert else None
        )
        rounds = [measure_round(texts, predictors, args) for _ in range(args.rounds)]
    s = summarize(rounds)
    metrics = {
        "server_p95_ms": s["default_one"]["p95"],
        "onnx_int8_p95_ms": s["int8"]["p95"],
        "pytorch_p95_ms": s["pytorch"]["p95"],
        "int8_speedup_p95": s["speedup"]["p95"],
        "rps_16_clients": s["default_many"]["requests_per_s"],
        "rps_16_clients_batching": s["batching_many"]["requests_per_s"],
    }
    if "distilbert_one" in s:
        metrics["distilbert_server_p95_ms"] = s["distilbert_one"]["p95"]
    if "avx2_one" in s:
        metrics["avx2_server_p95_ms"] = s["avx2_one"]["p95"]
    record(
        "serving_latency",
        "Serving: latency and throughput",
        table(s, rounds, args),
        args.output,
        metrics,
        run_id=args.run_id,
        experiment=args.experiment,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
