"""Serving: our int8 ONNX FastAPI server vs `mlflow models serve` on the same trained model.

`mlflow models serve` serves the train run's logged transformers model (fp32
PyTorch, one uvicorn worker: its default); ours serves the int8 ONNX model
exported from that run. Both on 127.0.0.1, driven from this process: AG News
test texts one at a time (p50/p95/p99), then from 16 concurrent clients
(requests/s). Rounds alternate the two servers; the table gives medians.

    python -m benchmarks.serving_vs_mlflow --run-id <train run> --model <int8 folder>
"""

import argparse
import os
import sys
from pathlib import Path

from benchmarks.common import (
    DATA,
    REPO,
    ag_news_test_texts,
    many_clients,
    median_of,
    one_client,
    record,
)
from devkit.servers import LocalServer, Server
from distrinews.train.logged_models import logged_model_id


def mlflow_server(run_id: str) -> LocalServer:
    def command(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{logged_model_id(run_id)}",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ]

    return LocalServer(command, dict(os.environ), ready_path="/ping")


#: How each server is called: route and JSON body for one text.
CALLS = {
    "mlflow models serve (PyTorch fp32)": ("/invocations", lambda text: {"inputs": [text]}),
    "ours (ONNX int8, FastAPI)": ("/predict", lambda text: {"text": text}),
}


def measure(server: LocalServer, name: str, texts: list[str], args: argparse.Namespace) -> dict:
    route, body = CALLS[name]
    try:
        server.wait_ready(timeout=300)
        one = one_client(server.url, texts[: args.texts], route, body)
        many = many_clients(server.url, texts, args.clients, args.requests, route, body)
    finally:
        server.stop()
    return {f"one_{k}": v for k, v in one.items()} | {
        "requests_per_s": many["requests_per_s"],
        "many_p99": many["p99"],
        "errors": many["errors"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", required=True, help="train run with a logged `model`")
    parser.add_argument("--model", required=True, help="the int8 ONNX folder exported from it")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--texts", type=int, default=200, help="requests in the 1-client runs")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=400, help="requests per concurrent run")
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "serving_vs_mlflow.md")
    args = parser.parse_args(argv)

    texts = ag_news_test_texts(args.data)
    servers = {
        "mlflow models serve (PyTorch fp32)": lambda: mlflow_server(args.run_id),
        # max_queue 0: every request admitted (queued), as MLflow's server does.
        "ours (ONNX int8, FastAPI)": lambda: Server(
            args.model, dict(os.environ), access_log=False, max_queue=0
        ),
    }
    per_server: dict[str, list[dict]] = {name: [] for name in servers}
    for _ in range(args.rounds):
        for name, start in servers.items():
            per_server[name].append(measure(start(), name, texts, args))
    results = {name: median_of(rounds) for name, rounds in per_server.items()}
    theirs, ours = (results[name] for name in servers)
    lines = [
        f"Train run `{args.run_id}`. Medians over {args.rounds} alternating rounds; "
        f"1 client: {args.texts} requests; {args.clients} clients: {args.requests} requests.",
        "",
        "| server | p50 ms | p95 ms | p99 ms | requests/s, "
        f"{args.clients} clients | p99 ms, {args.clients} clients | errors (all rounds) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {name} | {r['one_p50']:.1f} | {r['one_p95']:.1f} | {r['one_p99']:.1f} | "
            f"{r['requests_per_s']:.1f} | {r['many_p99']:.0f} | "
            f"{sum(x['errors'] for x in per_server[name]):.0f} |"
            for name, r in results.items()
        ),
        "",
        f"p95 at 1 client: **{theirs['one_p95'] / ours['one_p95']:.1f}x lower**; "
        f"requests/s at {args.clients} clients: "
        f"**{ours['requests_per_s'] / theirs['requests_per_s']:.1f}x higher**.",
    ]
    record(
        "serving_vs_mlflow",
        "Serving: ours vs `mlflow models serve`",
        "\n".join(lines) + "\n",
        args.output,
        {
            "p95_ratio_vs_mlflow": theirs["one_p95"] / ours["one_p95"],
            "rps_ratio_vs_mlflow": ours["requests_per_s"] / theirs["requests_per_s"],
        },
        experiment=args.experiment,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
