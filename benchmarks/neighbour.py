"""What the server costs a neighbour process on the same vCPUs, by how ONNX Runtime's
threads wait for work: sleeping (off), spinning only while an inference runs
(inference), or also for a while after each (on).

A Space shares its host: CPU the server burns while waiting is CPU a
neighbour does not get. A neighbour process does fixed units of pure-Python
work for `--seconds` and reports units/s, in turn beside: no server; an idle
server; a server answering one client at a steady `--rate` requests/s (paced,
like real traffic); and one client sending back to back. Each server runs
with each spinning setting; the server's own CPU time and its p50/p95 latency
are recorded too. Rounds alternate the settings; the table gives medians.

    python -m benchmarks.neighbour --model <int8 folder> [--seconds 10] [--rounds 3]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks.common import (
    DATA,
    REPO,
    ag_news_test_texts,
    cpu_seconds,
    percentiles,
    record,
)
from devkit.servers import Server
from distrinews.runtime.onnx_classifier import SPINNING

#: The neighbour: counts units of pure-Python work done in the given seconds.
NEIGHBOUR = """
import sys, time
end = time.perf_counter() + float(sys.argv[1])
units = 0
while time.perf_counter() < end:
    sum(i * i for i in range(2000))
    units += 1
print(units / float(sys.argv[1]))
"""

LOADS = ("idle", "paced", "back to back")


def client(url: str, texts: list[str], load: str, seconds: float, rate: float) -> list[float]:
    """Requests for `seconds`: none, paced at `rate`/s, or back to back; their latencies."""
    timings: list[float] = []
    end = time.perf_counter() + seconds
    with httpx.Client(timeout=30) as http:
        while load != "idle" and time.perf_counter() < end:
            start = time.perf_counter()
            http.post(f"{url}/predict", json={"text": texts[len(timings) % len(texts)]})
            timings.append(1000 * (time.perf_counter() - start))
            if load == "paced":
                time.sleep(max(0.0, 1 / rate - (time.perf_counter() - start)))
    if load == "idle":
        time.sleep(seconds)
    return timings


def measure(server: Server | None, texts: list[str], load: str, args) -> dict[str, float]:
    """Neighbour units/s while the server is under `load`; server CPU and latency."""
    neighbour = subprocess.Popen(
        [sys.executable, "-c", NEIGHBOUR, str(args.seconds)], stdout=subprocess.PIPE, text=True
    )
    cpu_before = cpu_seconds(server.process.pid) if server else 0.0
    timings = client(server.url, texts, load, args.seconds, args.rate) if server else []
    if not server:
        time.sleep(args.seconds)
    cpu = cpu_seconds(server.process.pid) - cpu_before if server else 0.0
    units = float(neighbour.communicate(timeout=args.seconds + 60)[0])
    result = {"units_per_s": units, "server_cpu_s": cpu / args.seconds}
    if timings:
        result |= percentiles(timings[5:])
    return result


def one_round(texts: list[str], args) -> dict[str, dict[str, float]]:
    result = {"no server": measure(None, texts, "idle", args)}
    for spinning in SPINNING:
        server = Server(args.model, dict(os.environ), access_log=False, spinning=spinning)
        try:
            server.wait_ready(timeout=120)
            client(server.url, texts, "back to back", 2, args.rate)  # warm-up
            for load in LOADS:
                result[f"{load}, spinning {spinning}"] = measure(server, texts, load, args)
        finally:
            server.stop()
    return result


def table(rounds: list[dict], args) -> tuple[str, dict[str, float]]:
    baseline = statistics.median(r["no server"]["units_per_s"] for r in rounds)
    lines = [
        f"A single-threaded neighbour process runs {args.seconds:g} s of pure-Python work "
        "beside the server (ONNX Runtime: one thread per vCPU); medians over "
        f"{len(rounds)} rounds. 'paced': one client at {args.rate:g} requests/s; 'back to back': "
        "one client, the next request as soon as the answer comes.",
        "",
        "| server | neighbour work/s | vs no server | server CPU (cores) | p50 ms | p95 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    metrics = {}
    for name in rounds[0]:
        units = statistics.median(r[name]["units_per_s"] for r in rounds)
        cpu = statistics.median(r[name]["server_cpu_s"] for r in rounds)
        p50 = statistics.median(r[name].get("p50", float("nan")) for r in rounds)
        p95 = statistics.median(r[name].get("p95", float("nan")) for r in rounds)
        latency = f"{p50:.1f} | {p95:.1f}" if p50 == p50 else "- | -"
        lines.append(f"| {name} | {units:.0f} | {units / baseline:.2f} | {cpu:.2f} | {latency} |")
        metrics[f"neighbour_share_{name.replace(' ', '_').replace(',', '')}"] = units / baseline
    return "\n".join(lines) + "\n", metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="exported int8 ONNX folder")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=20, help="paced requests per second")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "neighbour.md")
    args = parser.parse_args(argv)
    texts = ag_news_test_texts(args.data)
    rounds = [one_round(texts, args) for _ in range(args.rounds)]
    body, metrics = table(rounds, args)
    title = "Spinning threads: the cost to a neighbour process"
    record("neighbour", title, body, args.output, metrics, experiment=args.experiment)
    return 0


if __name__ == "__main__":
    sys.exit(main())
