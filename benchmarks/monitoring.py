"""Monitoring: what it costs a request, and what its drift gauges read for streams like the
reference and for shifted ones.

Starts two `python -m serving` on 127.0.0.1 from the same model folder, one with
DISTRINEWS_MONITORING=true (prediction counts, confidence histogram, the drift window)
and one with it off, then sends the same AG News test texts one at a time to each, in
alternating order round by round, so machine noise falls on both alike. Also times,
in this process, the monitor's work per prediction and per scrape. Bounded: a fixed
number of requests per round.

Then, on one server with a window of `--window` predictions, the drift gauges after a
window of AG News test texts (as the reference's validation texts), and after windows
shifted three ways: one class only (Sports), titles only, and texts with characters
the vocabulary lacks. Writes benchmarks/monitoring.md and logs it to MLflow.

    python -m benchmarks.monitoring --model <exported folder with its profile>
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import DATA, REPO, ag_news_test_texts, many_clients, one_client, record
from devkit.servers import Server
from distrinews.runtime.onnx_classifier import OnnxClassifier
from distrinews.runtime.prediction_store import open_store
from distrinews.runtime.reference_profile import TextFeatures, text_features
from serving.monitoring import DriftMonitor
from serving.prediction_log import Answered, PredictionLog, now


def logged(url: str) -> dict[str, float]:
    """The server's prediction-log counters: written, dropped, failed."""
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
        for sample in family.samples
        if sample.name == "distrinews_prediction_log_total"
    }


def server_rounds(model: str, texts: list[str], args) -> tuple[dict[str, list[float]], dict]:
    """p50 ms of each server in each round, the order alternating round by round; then
    `args.clients` concurrent clients on the monitored server, and what its log did."""
    env = dict(os.environ)
    servers = {
        # On: the defaults (drift window, counters, the prediction log in SQLite).
        # max_queue 0: the concurrent clients' requests are all admitted (queued).
        "on": Server(model, env, access_log=False, monitoring=True, max_queue=0),
        "off": Server(
            model, env, access_log=False, monitoring=False, prediction_log="", max_queue=0
        ),
    }
    p50: dict[str, list[float]] = {"on": [], "off": []}
    try:
        for server in servers.values():
            server.wait_ready(timeout=120)
        for round_index in range(args.rounds):
            order = ("on", "off") if round_index % 2 == 0 else ("off", "on")
            for name in order:
                p50[name].append(one_client(servers[name].url, texts)["p50"])
        load = many_clients(servers["on"].url, texts, args.clients, args.requests)
        time.sleep(2)  # the writer's last flush
        load |= {f"log_{k}": v for k, v in logged(servers["on"].url).items()}
    finally:
        for server in servers.values():
            server.stop()
    return p50, load


def log_cost_us(texts: list[str], predictions: int = 2000) -> float:
    """Writer-thread microseconds per logged prediction (SQLite, batched as the server does)."""
    rows = np.full((1, 4), 0.25)
    features = [TextFeatures(40, False, 0.0)]
    labels = ("a", "b", "c", "d")
    answered = Answered(now(), "id", "p-1", "distrinews", "1", labels, rows, features, None)
    with tempfile.TemporaryDirectory() as folder:
        log = PredictionLog(
            open_store(f"sqlite:///{folder}/log.db"), predictions, flush_seconds=0.05
        )
        start = time.perf_counter()
        for _ in range(predictions):
            log.add(answered)
        log.close()
        return 1e6 * (time.perf_counter() - start) / predictions


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
    return {
        "record_us": record_us,
        "scrape_us": statistics.median(scrapes),
        "log_us": log_cost_us(texts),
    }


def shifted_streams(data: str, count: int) -> dict[str, list[str]]:
    """Windows of `count` texts: like the reference, and shifted three ways."""
    frame = pd.read_parquet(Path(data) / "test.parquet").sample(frac=1, random_state=1)
    texts = frame["text"].tolist()[:count]
    return {
        "test texts (like the reference)": texts,
        "one class only (Sports)": frame[frame["label"] == 1]["text"].tolist()[:count],
        "titles only": [text.split(" (")[0].split(" - ")[0][:60] for text in texts],
        "with characters outside the vocabulary": [f"{t} ☃☃ ✈✈ ☂☂" for t in texts],
    }


def drift_readings(model: str, data: str, window: int) -> dict[str, dict[str, float]]:
    """The drift gauges after each stream has filled the window."""
    server = Server(model, dict(os.environ), access_log=False, drift_window=window)
    readings = {}
    try:
        server.wait_ready(timeout=120)
        for name, texts in shifted_streams(data, window).items():
            for start in range(0, len(texts), 32):
                batch = {"texts": texts[start : start + 32]}
                httpx.post(f"{server.url}/predict/batch", json=batch, timeout=60).raise_for_status()
            scrape = httpx.get(f"{server.url}/metrics", timeout=10).text
            readings[name] = {
                sample.labels["signal"]: sample.value
                for family in text_string_to_metric_families(scrape)
                for sample in family.samples
                if sample.name == "distrinews_drift"
            }
    finally:
        server.stop()
    return readings


def drift_table(readings: dict[str, dict[str, float]]) -> str:
    signals = ("predicted_label", "confidence", "token_length", "unknown_share")
    rows = "\n".join(
        f"| {name} | " + " | ".join(f"{values.get(s, float('nan')):.3f}" for s in signals) + " |"
        for name, values in readings.items()
    )
    return (
        "| window of predictions | " + " | ".join(signals) + " |\n"
        "| --- | " + " | ".join("---" for _ in signals) + " |\n" + rows + "\n"
    )


def table(p50: dict[str, list[float]], costs: dict[str, float], load: dict, args) -> str:
    on, off = statistics.median(p50["on"]), statistics.median(p50["off"])
    paired = [a - b for a, b in zip(p50["on"], p50["off"], strict=True)]
    rows = "\n".join(
        f"| {i + 1} | {a:.3f} | {b:.3f} | {a - b:+.3f} |"
        for i, (a, b) in enumerate(zip(p50["on"], p50["off"], strict=True))
    )
    return f"""Two servers from `{Path(args.model).name}` (each ONNX Runtime with the default
threads, spinning off, no access log): monitoring on (the defaults: drift window, counters,
the prediction log in SQLite) and off (`DISTRINEWS_MONITORING=false`,
`DISTRINEWS_PREDICTION_LOG=`); {args.texts} requests one at a time per round,
{args.rounds} rounds in alternating order; p50 of each round in ms.

| round | monitoring on | monitoring off | on - off |
| --- | --- | --- | --- |
{rows}

- Median p50: **{on:.3f} ms on, {off:.3f} ms off: {on - off:+.3f} ms**
  (median of the paired differences {statistics.median(paired):+.3f} ms; goal: at most
  +0.3 ms). Ratio on/off {on / off:.3f}.
- In process: the monitor's work per prediction {costs["record_us"]:.1f} µs (in the
  inference thread); a scrape with a full window of {args.window} predictions
  {costs["scrape_us"]:.0f} µs (on the event loop, per scrape, not per request); the log
  writer's work per prediction {costs["log_us"]:.1f} µs (its own thread, batched).
- {args.clients} concurrent clients, {load["requests"]} requests on the monitored server:
  {load["requests_per_s"]:.0f} requests/s, {load["errors"]} failed; the log wrote
  {load["log_written"]:.0f} predictions in all, dropped {load["log_dropped"]:.0f}, failed
  {load["log_failed"]:.0f}.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="exported int8 ONNX folder")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--texts", type=int, default=300, help="requests per server per round")
    parser.add_argument("--window", type=int, default=1000, help="drift window (the default)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=1000, help="requests from the clients")
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "monitoring.md")
    args = parser.parse_args(argv)

    texts = ag_news_test_texts(args.data)[: args.texts]
    p50, load = server_rounds(args.model, texts, args)
    costs = in_process_costs(args.model, texts, args.window)
    readings = drift_readings(args.model, args.data, args.window)
    added = float(np.median(p50["on"]) - np.median(p50["off"]))
    body = table(p50, costs, load, args) + (
        f"\nDrift gauges (Jensen-Shannon distance from the reference) once a window of "
        f"{args.window} predictions is filled by each stream, one after the other:\n\n"
        + drift_table(readings)
    )
    record(
        "monitoring",
        "Monitoring: what it adds to a request, what its drift gauges read",
        body,
        args.output,
        {
            "monitoring_added_p50_ms": added,
            "log_dropped_under_load": load["log_dropped"],
            **{f"monitor_{k}": v for k, v in costs.items()},
            **{f"drift_like_reference_{k}": v for k, v in next(iter(readings.values())).items()},
        },
        experiment=args.experiment,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
