"""What the server adds to its model: HTTP against in process, stage by stage, by thread policy.

The same texts go through the model in this process (tokenization, ONNX Runtime and
softmax, as the server runs them, with the same threads and spinning) and through
`python -m serving` on 127.0.0.1 with its defaults (prediction log and monitoring on),
one request at a time from one client. Each server spinning setting
(distrinews.runtime.onnx_classifier.SPINNING) is timed with the server's CPU time per
request (what a neighbour process loses). A server with DISTRINEWS_STAGE_TIMING on gives
the stage table: the means of its `distrinews_stage_duration_seconds`. A tiny model
(almost no arithmetic) shows the fixed cost alone. Rounds alternate every configuration;
the tables give medians over rounds. `--before` times an earlier commit's server in the
same rounds (a `git worktree add` checkout), for a before and after on one host.

    python -m benchmarks.http_overhead --model <int8 folder> [--texts 600] [--rounds 3] \
        [--before <checkout of an earlier commit>]
"""

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import (
    DATA,
    REPO,
    ag_news_test_texts,
    cpu_seconds,
    median_of,
    one_client,
    percentiles,
    record,
)
from devkit.servers import Server
from devkit.tiny_models import export_tiny_onnx, make_tiny_model
from distrinews.runtime.cpu import available_cpus
from distrinews.runtime.onnx_classifier import SPINNING, OnnxClassifier
from distrinews.runtime.scoring import batch1_latency_ms
from serving.settings import Settings
from serving.stages import STAGES

DEFAULT = Settings().spinning


def in_process(model: str, texts: list[str], spinning: str) -> dict[str, float]:
    """Latency of the server's own work on each text in this process, after 10 warm-up calls."""
    classifier = OnnxClassifier(model, threads=available_cpus(), spinning=spinning)
    # probabilities: tokens, model and softmax, as the server's inference runs them.
    batch1_latency_ms(classifier.probabilities, texts[:10])
    timings = batch1_latency_ms(classifier.probabilities, texts)
    del classifier  # its threads must not compete with the server's
    gc.collect()
    time.sleep(0.5)
    return percentiles(timings)


def over_http(
    model: str, texts: list[str], checkout: Path = REPO, **settings: object
) -> dict[str, float]:
    """One client's latency against a server with `settings` (its code from `checkout`),
    and the server's CPU milliseconds per request; with stage timing on, the mean ms of
    each stage too."""
    env = dict(os.environ) | {"PYTHONPATH": str(checkout)}
    server = Server(model, env, cwd=checkout, **settings)
    try:
        server.wait_ready(timeout=120)
        one_client(server.url, texts[:50])  # warm-up
        before = cpu_seconds(server.process.pid)
        result = one_client(server.url, texts)
        result["cpu_ms"] = 1000 * (cpu_seconds(server.process.pid) - before) / len(texts)
        if settings.get("stage_timing"):
            result |= stage_means(httpx.get(f"{server.url}/metrics", timeout=10).text)
    finally:
        server.stop()
    return result


def stage_means(metrics_text: str) -> dict[str, float]:
    """Mean ms per stage from the server's stage histogram (its _sum over its _count)."""
    sums, counts = {}, {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "distrinews_stage_duration_seconds":
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage")
            if sample.name.endswith("_sum"):
                sums[stage] = sample.value
            elif sample.name.endswith("_count"):
                counts[stage] = sample.value
    return {f"stage:{s}": 1000 * sums[s] / counts[s] for s in sums if counts.get(s)}


def one_round(model: str, tiny: str, texts: list[str], args) -> dict[str, dict]:
    result = {}
    if args.before:  # the server as it was, its own defaults (spinning off then)
        result["local before"] = in_process(model, texts, "off")
        result["http before"] = over_http(model, texts, args.before, access_log=False)
    for spinning in SPINNING:
        result[f"local {spinning}"] = in_process(model, texts, spinning)
        result[f"http {spinning}"] = over_http(model, texts, spinning=spinning, access_log=False)
    # Everything on, as served by default: the access log is stderr, to a file here.
    result["stages"] = over_http(model, texts, stage_timing=True)
    result["tiny local"] = in_process(tiny, texts, DEFAULT)
    result["tiny http"] = over_http(tiny, texts, access_log=False)
    return result


def policy_table(rounds: list[dict], before_name: str = "") -> tuple[list[str], dict[str, float]]:
    lines = [
        "| spinning (DISTRINEWS_SPINNING) | in process p50 / p95 ms "
        "| HTTP p50 / p95 ms | HTTP - in process, p50 / p95 ms | server CPU ms per request |",
        "| --- | --- | --- | --- | --- |",
    ]
    metrics = {}
    for spinning in [*(["before"] if "http before" in rounds[0] else []), *SPINNING]:
        local = median_of([r[f"local {spinning}"] for r in rounds])
        http = median_of([r[f"http {spinning}"] for r in rounds])
        gap = {
            q: statistics.median(
                r[f"http {spinning}"][q] - r[f"local {spinning}"][q] for r in rounds
            )
            for q in ("p50", "p95")
        }
        name = f"{spinning} (default)" if spinning == DEFAULT else spinning
        if spinning == "before":
            name = f"before: {before_name}, its defaults (off; inference in a thread)"
        lines.append(
            f"| {name} | {local['p50']:.2f} / {local['p95']:.2f} | {http['p50']:.2f} / "
            f"{http['p95']:.2f} | {gap['p50']:+.2f} / {gap['p95']:+.2f} | {http['cpu_ms']:.1f} |"
        )
        metrics |= {f"gap_p50_ms_{spinning}": gap["p50"], f"gap_p95_ms_{spinning}": gap["p95"]}
        metrics[f"cpu_ms_per_request_{spinning}"] = http["cpu_ms"]
    return lines, metrics


def stage_table(rounds: list[dict]) -> list[str]:
    stages = median_of([r["stages"] for r in rounds])
    local = median_of([r[f"local {DEFAULT}"] for r in rounds])
    inside = sum(stages.get(f"stage:{name}", 0.0) for name, *_ in STAGES[:-1])
    lines = [
        "| stage | mean ms |",
        "| --- | --- |",
        *(f"| {name} | {stages.get(f'stage:{name}', float('nan')):.3f} |" for name, *_ in STAGES),
        f"| the app, from its first look at the request to the answer sent | {inside:.3f} |",
        "| uvicorn (HTTP parsing, sockets) and the client: the client's mean minus the "
        f"app's | {stages['mean'] - inside:.3f} |",
        f"| the client's mean (for scale) | {stages['mean']:.3f} |",
        f"| in process, same texts, mean of the round's p50s (for scale) | {local['p50']:.3f} |",
    ]
    return lines


def tiny_table(rounds: list[dict]) -> tuple[list[str], dict[str, float]]:
    gaps = [{q: r["tiny http"][q] - r["tiny local"][q] for q in ("p50", "p95")} for r in rounds]
    per_round = "; ".join(f"{g['p50']:+.2f} / {g['p95']:+.2f}" for g in gaps)
    median = median_of(gaps)
    lines = [
        f"Tiny model (2 layers, 32 wide: the fixed cost alone), HTTP - in process, p50 / p95 ms, "
        f"per round: {per_round}; median **{median['p50']:+.2f} / {median['p95']:+.2f}**."
    ]
    return lines, {"tiny_gap_p50_ms": median["p50"], "tiny_gap_p95_ms": median["p95"]}


def before_name(checkout: Path) -> str:
    """The checkout's commit, short."""
    command = ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="exported int8 ONNX folder")
    parser.add_argument("--texts", type=int, default=600, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--before",
        type=Path,
        help="a checkout of an earlier commit (git worktree add): its server is timed too",
    )
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "http_overhead.md")
    args = parser.parse_args(argv)
    texts = ag_news_test_texts(args.data)[: args.texts]
    args.model = str(Path(args.model).resolve())  # servers may start in another checkout
    args.before_name = before_name(args.before) if args.before else ""
    with tempfile.TemporaryDirectory(prefix="http-overhead-") as work:
        tiny = str(export_tiny_onnx(make_tiny_model(Path(work) / "tiny"), Path(work)))
        rounds = [one_round(args.model, tiny, texts, args) for _ in range(args.rounds)]
    policies, metrics = policy_table(rounds, args.before_name)
    tiny_lines, tiny_metrics = tiny_table(rounds)
    body = "\n".join(
        [
            f"{args.texts} AG News test texts, one request at a time from one client on the "
            f"same vCPUs; server defaults (prediction log and monitoring on); medians over "
            f"{len(rounds)} rounds. The in-process figure is the server's own work "
            "(tokenization, ONNX Runtime, softmax) with the same threads and spinning.",
            "",
            *policies,
            "",
            f"Stages of a request in the server (default spinning `{DEFAULT}`, access log on, "
            "DISTRINEWS_STAGE_TIMING on), means:",
            "",
            *stage_table(rounds),
            "",
            *tiny_lines,
        ]
    )
    title = "HTTP against in process: what the server adds to its model"
    record(
        "http_overhead",
        title,
        body + "\n",
        args.output,
        metrics | tiny_metrics,
        experiment=args.experiment,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
