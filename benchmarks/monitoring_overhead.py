"""What monitoring costs a request: the server with monitoring on vs off, in alternating rounds.

Starts two `python -m serving` on 127.0.0.1 from the same model folder, one with
DISTRINEWS_MONITORING=true (prediction counts, confidence histogram, the drift window)
and one with it off, then sends the same AG News test texts one at a time to each, in
alternating order round by round, so machine noise falls on both alike. Also times,
in this process, the monitor's work per prediction and per scrape. Bounded: a fixed
number of requests per round. Writes benchmarks/monitoring.md and logs it to MLflow.

    python -m benchmarks.monitoring_overhead --model <exported folder with its profile>
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from benchmarks.common import DATA, REPO, ag_news_test_texts, one_client, record
from devkit.servers import Server
from distrinews.runtime.onnx_classifier import OnnxClassifier
from distrinews.runtime.reference_profile import text_features
from serving.monitoring import DriftMonitor


def server_rounds(model: str, texts: list[str], rounds: int) -> dict[str, list[float]]:
    """p50 ms of each server in each round, the order alternating round by round."""
    env = dict(os.environ)
    servers = {
        "on": Server(model, env, access_log=False, monitoring=True),
        "off": Server(model, env, access_log=False, monitoring=False),
    }
    p50: dict[str, list[float]] = {"on": [], "off": []}
    try:
        for server in servers.values():
            server.wait_ready(timeout=120)
        for round_index in range(rounds):
            order = ("on", "off") if round_index % 2 == 0 else ("off", "on")
            for name in order:
                p50[name].append(one_client(servers[name].url, texts)["p50"])
    finally:
        for server in servers.values():
            server.stop()
    return p50


def in_process_costs(model: str, texts: list[str], window: int) -> dict[str, float]:
    """Microseconds the monitor adds per prediction (record) and per scrape (collect, with
    a full window), timed on real encodings and probabilities of the model."""
    classifier = OnnxClassifier(model)
    monitor = DriftMonitor(CollectorRegistry(), window)
    encoded = [classifier.encode([text]) for text in texts]
    rows = [classifier.calibrated(classifier.logits_of(encodings)) for encodings in encoded]
    single = [[text_features(e, classifier.unknown_id) for e in enc] for enc in encoded]
    start = time.perf_counter()
    for _ in range(max(1, window // len(single) + 1)):  # fills the window at least once
        for encodings, probabilities in zip(single, rows, strict=True):
            monitor.record(classifier, encodings, probabilities)
    calls = len(single) * max(1, window // len(single) + 1)
    record_us = 1e6 * (time.perf_counter() - start) / calls
    scrapes = []
    for _ in range(20):
        start = time.perf_counter()
        list(monitor.collect())
        scrapes.append(1e6 * (time.perf_counter() - start))
    return {"record_us": record_us, "scrape_us": statistics.median(scrapes)}


def table(p50: dict[str, list[float]], costs: dict[str, float], args) -> str:
    on, off = statistics.median(p50["on"]), statistics.median(p50["off"])
    paired = [a - b for a, b in zip(p50["on"], p50["off"], strict=True)]
    rows = "\n".join(
        f"| {i + 1} | {a:.3f} | {b:.3f} | {a - b:+.3f} |"
        for i, (a, b) in enumerate(zip(p50["on"], p50["off"], strict=True))
    )
    return f"""Two servers from `{Path(args.model).name}` (each ONNX Runtime with the default
threads, spinning off, no access log), {args.texts} requests one at a time per round,
{args.rounds} rounds in alternating order; p50 of each round in ms.

| round | monitoring on | monitoring off | on - off |
| --- | --- | --- | --- |
{rows}

- Median p50: **{on:.3f} ms on, {off:.3f} ms off: {on - off:+.3f} ms**
  (median of the paired differences {statistics.median(paired):+.3f} ms; goal: at most
  +0.3 ms). Ratio on/off {on / off:.3f}.
- In process: the monitor's work per prediction {costs["record_us"]:.1f} µs (in the
  inference thread); a scrape with a full window of {args.window} predictions
  {costs["scrape_us"]:.0f} µs (on the event loop, per scrape, not per request).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="exported int8 ONNX folder")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--texts", type=int, default=300, help="requests per server per round")
    parser.add_argument("--window", type=int, default=1000, help="drift window (the default)")
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "monitoring.md")
    args = parser.parse_args(argv)

    texts = ag_news_test_texts(args.data)[: args.texts]
    p50 = server_rounds(args.model, texts, args.rounds)
    costs = in_process_costs(args.model, texts, args.window)
    added = float(np.median(p50["on"]) - np.median(p50["off"]))
    record(
        "monitoring_overhead",
        "Monitoring: what it adds to a request",
        table(p50, costs, args),
        args.output,
        {"monitoring_added_p50_ms": added, **{f"monitor_{k}": v for k, v in costs.items()}},
        experiment=args.experiment,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
