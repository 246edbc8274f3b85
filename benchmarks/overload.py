"""Overload: a server offered 10x what it can answer, by DISTRINEWS_MAX_QUEUE.

First the server's capacity (requests/s from one client sending back to back) and one
client's p95. Then an open-loop load: requests due at 10x that rate for `--seconds`,
from up to `--connections` kept-alive connections (a request whose connection is busy
waits for one, so the offered rate is bounded too). Per bound: what was answered 200,
429 or otherwise, the admitted requests' p50/p95 against the one-client p95, and the
requests/s answered 200 against the capacity. The client is a few lines of asyncio on
raw sockets: an HTTP library's own CPU time would be taken from the server on 2 vCPUs.

    python -m benchmarks.overload --model <int8 folder> [--bounds 0 1 2 3 4 8] [--rounds 2]
"""

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import (
    DATA,
    REPO,
    ag_news_test_texts,
    median_of,
    one_client,
    percentiles,
    record,
)
from devkit.servers import Server


class Connection:
    """One kept-alive HTTP/1.1 connection that POSTs JSON to /predict."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> "Connection":
        return cls(*await asyncio.open_connection(host, port), host)

    async def post(self, text: str) -> int:
        """The status of one POST /predict (its body read and dropped)."""
        body = json.dumps({"text": text}).encode()
        head = (
            f"POST /predict HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


async def open_loop(
    url: str, texts: list[str], rate: float, seconds: float, connections: int, seed: int = -1
):
    """Requests due every 1/`rate` s for `seconds` (with a `seed`: Poisson arrivals at that
    rate, the bursts and lulls of independent clients), on at most `connections`
    connections: (status, ms) of each, and the seconds it all took."""
    host, port = url.removeprefix("http://").split(":")
    pool = [await Connection.open(host, int(port)) for _ in range(connections)]
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for connection in pool:
        idle.put_nowait(connection)
    answers: list[tuple[int, float]] = []

    async def one(text: str) -> None:
        connection = await idle.get()
        start = time.perf_counter()
        try:
            answers.append((await connection.post(text), 1000 * (time.perf_counter() - start)))
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            answers.append((0, 1000 * (time.perf_counter() - start)))
        idle.put_nowait(connection)

    count = int(rate * seconds)
    due = np.arange(count) / rate
    if seed >= 0:
        due = np.cumsum(np.random.default_rng(seed).exponential(1 / rate, count))
    start = time.perf_counter()
    tasks = []
    for i, at in enumerate(due.tolist()):
        await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
        tasks.append(asyncio.create_task(one(texts[i % len(texts)])))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for connection in pool:
        connection.close()
    return answers, elapsed


async def back_to_back(url: str, texts: list[str], clients: int, seconds: float) -> float:
    """Requests/s answered 200 from `clients` connections each sending as soon as answered."""
    host, port = url.removeprefix("http://").split(":")
    done = 0
    end = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        nonlocal done
        connection = await Connection.open(host, int(port))
        i = offset
        while time.perf_counter() < end:
            status = await connection.post(texts[i % len(texts)])
            done += status == 200  # after the await: `done += await ...` reads done before it
            i += clients
        connection.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    return done / (time.perf_counter() - start)


def measure(model: str, texts: list[str], bound: str, args) -> dict[str, float]:
    """One bound ("default": the server sizes its own) under the open-loop load."""
    settings = {} if bound == "default" else {"max_queue": bound}
    server = Server(model, dict(os.environ), access_log=False, **settings)
    try:
        server.wait_ready(timeout=120)
        limit = queue_limit(httpx.get(f"{server.url}/metrics", timeout=10).text)
        one = one_client(server.url, texts[:300])
        # One client, back to back: never over any bound, and on 2 vCPUs as fast as more.
        capacity = asyncio.run(back_to_back(server.url, texts, 1, 3))
        answers, elapsed = asyncio.run(
            open_loop(server.url, texts, args.factor * capacity, args.seconds, args.connections)
        )
    finally:
        server.stop()
    admitted = [ms for status, ms in answers if status == 200]
    statuses = [status for status, _ in answers]
    return {
        "bound": limit,
        "one_p95": one["p95"],
        "capacity": capacity,
        "offered": len(answers) / args.seconds,
        "ok_per_s": len(admitted) / elapsed,
        "refused_share": statuses.count(429) / len(statuses),
        "errors": sum(s not in (200, 429) for s in statuses),
        **{f"admitted_{k}": v for k, v in percentiles(admitted or [float("nan")]).items()},
    }


def queue_limit(metrics_text: str) -> float:
    """The server's `distrinews_queue_limit`."""
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "distrinews_queue_limit":
            return family.samples[0].value
    raise ValueError("no distrinews_queue_limit on /metrics")


def table(rounds: list[dict], args) -> tuple[str, dict[str, float]]:
    lines = [
        f"Open loop: requests due at {args.factor:g}x the measured capacity for "
        f"{args.seconds:g} s, on up to {args.connections} connections; server defaults "
        "otherwise (prediction log and monitoring on, no access log); "
        f"medians over {len(rounds)} rounds (errors: the sum). Capacity: one client back to "
        "back for 3 s. Unset, the server sizes its bound from its model's speed. The load "
        "generator shares the server's 2 vCPUs: at 10x it takes about a core of its own.",
        "",
        "| DISTRINEWS_MAX_QUEUE | capacity req/s | offered req/s | answered 200 req/s "
        "| 429 share | other errors | admitted p50 ms | admitted p95 ms | one-client p95 ms "
        "| admitted p95 / one-client p95 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    metrics = {}
    for bound in args.bounds:
        m = median_of([r[bound] for r in rounds])
        errors = sum(r[bound]["errors"] for r in rounds)
        ratio = m["admitted_p95"] / m["one_p95"]
        name = {"0": "0 (no bound)", "default": f"unset: {m['bound']:.0f} here"}.get(bound, bound)
        lines.append(
            f"| {name} | {m['capacity']:.0f} | {m['offered']:.0f} | {m['ok_per_s']:.0f} | "
            f"{m['refused_share']:.2f} | {errors} | {m['admitted_p50']:.1f} | "
            f"{m['admitted_p95']:.1f} | {m['one_p95']:.1f} | {ratio:.2f} |"
        )
        metrics[f"admitted_p95_ratio_bound_{bound}"] = ratio
        metrics[f"errors_bound_{bound}"] = errors
    return "\n".join(lines) + "\n", metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="exported int8 ONNX folder")
    parser.add_argument(
        "--bounds",
        nargs="+",
        default=["default", "0", "1", "2", "4", "8"],
        help="DISTRINEWS_MAX_QUEUE values; default: leave it unset",
    )
    parser.add_argument("--factor", type=float, default=10, help="offered load / capacity")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "overload.md")
    args = parser.parse_args(argv)
    texts = ag_news_test_texts(args.data)
    rounds = [
        {bound: measure(args.model, texts, bound, args) for bound in args.bounds}
        for _ in range(args.rounds)
    ]
    body, metrics = table(rounds, args)
    record(
        "overload",
        "Overload: 10x capacity, by queue bound",
        body,
        args.output,
        metrics,
        experiment=args.experiment,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
