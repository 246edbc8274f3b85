"""Shadow: what scoring a share of requests with a challenger costs the champion's clients.

Per share, a server (`python -m serving`, its defaults otherwise: prediction log and
monitoring on) serves `--model` with `--challenger` beside it in shadow
(DISTRINEWS_SHADOW_SHARE); share 0 is a server with no challenger at all, the baseline.
Two loads each:

- **open loop**: Poisson arrivals (independent clients) at `--load` times the baseline's
  capacity for `--seconds`, the clients' p50 and p95 against the baseline's in the same
  round;
- **one client back to back**: the next request leaves as soon as the answer arrives, so
  it always finds the shadow scoring under way and stops it (the worst case for the
  request, and the one where the challenger gets least).

And what became of the shadow work, from the server's `distrinews_shadow_total`: scored,
dropped (the server held a request), preempted (a request arrived meanwhile). Rounds
alternate every share; the table gives medians. The client is the raw-socket one of
benchmarks/overload.py: an HTTP library's CPU time would be taken from the server.

    python -m benchmarks.shadow --model <int8 folder> [--challenger <int8 folder>] \
        [--shares 0 0.1 0.25 0.5 1] [--load 0.5] [--seconds 20] [--rounds 3]
"""

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import DATA, ag_news_test_texts, median_of, one_client, percentiles, record
from benchmarks.overload import back_to_back, open_loop
from devkit.servers import Server


def shadow_outcomes(metrics_text: str) -> dict[str, float]:
    """The server's distrinews_shadow_total by outcome ({} without a challenger)."""
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(metrics_text)
        if family.name == "distrinews_shadow"
        for sample in family.samples
        if sample.name == "distrinews_shadow_total"
    }


def measure(share: str, texts: list[str], rate: float, round_: int, args) -> dict[str, float]:
    """One share's server under both loads."""
    settings = {}
    if float(share):
        settings = {"challenger": args.challenger, "shadow_share": share}
    server = Server(args.model, dict(os.environ), access_log=False, **settings)
    try:
        server.wait_ready(timeout=120)
        answers, _ = asyncio.run(
            open_loop(server.url, texts, rate, args.seconds, args.connections, seed=round_)
        )
        open_metrics = shadow_outcomes(httpx.get(f"{server.url}/metrics", timeout=10).text)
        one = one_client(server.url, texts[: args.one_client])
        after = shadow_outcomes(httpx.get(f"{server.url}/metrics", timeout=10).text)
    finally:
        server.stop()
    ok = [ms for status, ms in answers if status == 200]
    figures = {f"open_{k}": v for k, v in percentiles(ok).items()}
    figures |= {"errors": len(answers) - len(ok), "one_p50": one["p50"], "one_p95": one["p95"]}
    requests = len(answers)
    for outcome in ("scored", "dropped", "preempted"):
        figures[f"open_{outcome}"] = open_metrics.get(outcome, 0.0) / requests
        one_client_count = after.get(outcome, 0.0) - open_metrics.get(outcome, 0.0)
        figures[f"one_{outcome}"] = one_client_count / (args.one_client + 10)  # + warm-up
    return figures


def capacity(args, texts: list[str]) -> float:
    """Requests/s one client back to back gets from the baseline server (no challenger)."""
    server = Server(args.model, dict(os.environ), access_log=False)
    try:
        server.wait_ready(timeout=120)
        one_client(server.url, texts[:50])  # warm
        return asyncio.run(back_to_back(server.url, texts, 1, 5))
    finally:
        server.stop()


def table(rounds: list[dict], rate: float, full: float, args) -> tuple[str, dict[str, float]]:
    lines = [
        f"Open loop: Poisson arrivals at {rate:.0f} req/s ({args.load:g}x the {full:.0f} req/s "
        f"one client gets back to back from the baseline) for {args.seconds:g} s; one client: "
        f"{args.one_client} requests back to back. Challenger: "
        f"{'a copy of the model' if not args.challenger else Path(args.challenger).name}. "
        f"Medians over {len(rounds)} rounds; ratios against share 0 (no challenger) in the "
        "same rounds. Shadow outcomes: per request of that load.",
        "",
        "| shadow share | open p50 ms | open p95 ms | open p95 / baseline | scored | dropped "
        "| preempted | one-client p95 ms | one-client p95 / baseline | one-client scored |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    metrics: dict[str, float] = {}
    ratios = {
        share: [r[share]["open_p95"] / r["0"]["open_p95"] for r in rounds] for share in args.shares
    }
    one_ratios = {
        share: [r[share]["one_p95"] / r["0"]["one_p95"] for r in rounds] for share in args.shares
    }
    for share in args.shares:
        m = median_of([r[share] for r in rounds])
        ratio = sorted(ratios[share])[len(rounds) // 2]
        one_ratio = sorted(one_ratios[share])[len(rounds) // 2]
        name = "0 (no challenger)" if not float(share) else share
        lines.append(
            f"| {name} | {m['open_p50']:.2f} | {m['open_p95']:.2f} | {ratio:.3f} | "
            f"{m['open_scored']:.3f} | {m['open_dropped']:.3f} | {m['open_preempted']:.3f} | "
            f"{m['one_p95']:.2f} | {one_ratio:.3f} | {m['one_scored']:.3f} |"
        )
        metrics |= {f"open_p95_ratio_{share}": ratio, f"one_p95_ratio_{share}": one_ratio}
        metrics[f"scored_share_{share}"] = m["open_scored"]
        metrics[f"errors_{share}"] = sum(r[share]["errors"] for r in rounds)
    return "\n".join(lines) + "\n", metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the champion: an exported int8 folder")
    parser.add_argument("--challenger", default="", help="int8 folder (default: --model)")
    parser.add_argument("--shares", nargs="+", default=["0", "0.1", "0.25", "0.5", "1"])
    parser.add_argument("--load", type=float, default=0.5, help="offered load / capacity")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--one-client", type=int, default=400)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", default=str(Path(__file__).with_suffix(".md")))
    args = parser.parse_args(argv)
    if "0" not in args.shares:
        parser.error("--shares must include 0: the baseline")
    texts = ag_news_test_texts(args.data)
    with tempfile.TemporaryDirectory(prefix="distrinews-shadow-") as work:
        same = not args.challenger
        if same:  # a copy: the server never scores a model against itself
            args.challenger = shutil.copytree(args.model, Path(work) / "challenger")
        full = capacity(args, texts)
        rate = args.load * full
        rounds = [
            {share: measure(share, texts, rate, round_, args) for share in args.shares}
            for round_ in range(args.rounds)
        ]
        if same:
            args.challenger = ""
    text, metrics = table(rounds, rate, full, args)
    record(
        "shadow",
        "Shadow scoring's cost to the champion's clients",
        text,
        Path(args.output),
        metrics,
        experiment=args.experiment,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
