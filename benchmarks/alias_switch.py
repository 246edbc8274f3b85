"""The served model changing version under load: errors, p99 before and during, time to serve.

Against a real `mlflow server` on 127.0.0.1 (SQLite, local artifacts):
exports the MiniLM (`-P checkpoint=`, a new untrained head: a real-size model
for timing, its accuracy means nothing) and registers it as versions 1 and 2,
points `champion` at version 1,
starts `python -m serving` from `models:/distrinews@champion` with
DISTRINEWS_RELOAD_SECONDS, drives it with concurrent clients, then moves the
alias to version 2 and watches `/model` until version 2 serves.

    python -m benchmarks.alias_switch [--clients 16] [--reload-seconds 1]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import mlflow

from benchmarks.common import DATA, REPO, ag_news_test_texts, percentiles, record
from devkit.mlflow_store import MlflowStore
from devkit.servers import Answer, BackgroundLoad, MlflowServer, Server, wait_for_version
from distrinews.config import DEFAULT_MODEL, REGISTERED_MODEL


def register_two_versions(
    store: MlflowStore, client: mlflow.MlflowClient, model: str, data: str
) -> None:
    """Export once (version 1), and register the same model again as version 2: the switch
    downloads, loads and warms version 2 as it would any other model of that size."""
    params = {"checkpoint": model, "data": data, "max_eval_rows": 200, "latency_texts": 20}
    params["max_accuracy_drop"] = 100  # an untrained head: its accuracy means nothing
    result = store.mlflow_run("export", "alias-switch", params, timeout=1800)
    if result.returncode:
        raise SystemExit(f"export failed: {result.stderr[-2000:]}")
    first = client.get_model_version(REGISTERED_MODEL, "1")
    # The source is the logged model (models:/m-...), which MLflow wants named by its id too.
    model_id = first.model_id or first.source.removeprefix("models:/")
    client.create_model_version(REGISTERED_MODEL, first.source, first.run_id, model_id=model_id)


def switch(server: Server, client: mlflow.MlflowClient, texts: list[str], args) -> dict:
    """Load for `--seconds` before the move, the move, load until version 2 serves and after."""
    with BackgroundLoad(server.url, texts, clients=args.clients) as load:
        time.sleep(args.seconds)
        moved = time.monotonic()
        client.set_registered_model_alias(REGISTERED_MODEL, "champion", "2")
        wait_for_version(server.url, "2", timeout=120)
        served = time.monotonic()
        time.sleep(args.seconds)
    return {"moved": moved, "served": served, "answers": load.answers}


def window(answers: list[Answer], start: float, end: float) -> list[Answer]:
    return [a for a in answers if start <= a.sent_at < end]


def table(result: dict, args) -> tuple[str, dict[str, float]]:
    moved, served, answers = result["moved"], result["served"], result["answers"]
    phases = {
        f"before ({args.seconds:.0f} s)": window(answers, moved - args.seconds, moved),
        "switch (alias move to version 2 serving, + 1 s)": window(answers, moved, served + 1),
        "after": window(answers, served + 1, float("inf")),
    }
    lines = [
        f"{args.clients} clients sending `POST /predict` (AG News test texts) throughout; "
        f"`DISTRINEWS_RELOAD_SECONDS={args.reload_seconds:g}`. Alias moved from version 1 to 2 "
        f"at t=0; version 2 served after **{served - moved:.2f} s** (a reload check, the "
        "download, the ONNX Runtime session and its warm-up, all off the request path).",
        "",
        "| phase | requests | errors | p50 ms | p99 ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    metrics = {"seconds_to_serve": served - moved, "requests": len(answers)}
    metrics["errors"] = sum(a.status != 200 for a in answers)
    for name, phase in phases.items():
        ms = percentiles(a.ms for a in phase)
        errors = sum(a.status != 200 for a in phase)
        lines.append(f"| {name} | {len(phase)} | {errors} | {ms['p50']:.1f} | {ms['p99']:.1f} |")
        metrics[f"p99_ms_{name.split()[0]}"] = ms["p99"]
    lines.append(f"| all | {len(answers)} | {metrics['errors']} | | |")
    return "\n".join(lines) + "\n", metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="encoder exported twice")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--reload-seconds", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=10, help="load before and after")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "alias_switch.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="alias-switch-") as work:
        store = MlflowStore(Path(work))
        tracking = MlflowServer(Path(work), store.env)
        try:
            tracking.wait_ready(timeout=120)
            store.env["MLFLOW_TRACKING_URI"] = tracking.url
            client = mlflow.MlflowClient(tracking.url)
            register_two_versions(store, client, args.model, args.data)
            client.set_registered_model_alias(REGISTERED_MODEL, "champion", "1")
            env = store.env | {"PATH": os.environ["PATH"]}
            server = Server(
                f"models:/{REGISTERED_MODEL}@champion",
                env,
                access_log=False,
                reload_seconds=args.reload_seconds,
                max_queue=0,  # every request admitted: each must be answered 200
            )
            try:
                server.wait_ready(timeout=120)
                result = switch(server, client, ag_news_test_texts(args.data), args)
            finally:
                server.stop()
        finally:
            tracking.stop()
    body, metrics = table(result, args)
    title = "Switching the served version under load"
    record("alias_switch", title, body, args.output, metrics, experiment=args.experiment)
    return 0 if metrics["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
