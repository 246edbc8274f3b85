"""Soak: the server under a bounded, sustained load, watched for errors, memory and liveness.

Starts `python -m serving` on 127.0.0.1 and drives it from this process with
32 concurrent clients for 60 s (AG News test texts), while a separate probe
calls `/health` every half second. Reports errors, p50/p99, the server's
memory before and after, and how `/health` answered throughout.

    python -m benchmarks.soak --model <int8 folder> --seconds 60 --clients 32
"""

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

import httpx

from benchmarks.common import DATA, REPO, ag_news_test_texts, drive, percentiles, record
from devkit.servers import Server

#: Largest memory growth (MB) over the soak that the table calls bounded.
MEMORY_BOUND_MB = 100


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def probe_health(url: str, stop: asyncio.Event) -> dict:
    """`/health` every 0.5 s until `stop`: how many answered 200, and how fast."""
    ok, timings = 0, []
    async with httpx.AsyncClient(timeout=10) as client:
        while not stop.is_set():
            start = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):  # a failed probe counts as not ok
                ok += (await client.get(f"{url}/health")).status_code == 200
            timings.append(1000 * (time.perf_counter() - start))
            await asyncio.sleep(0.5)
    return {"probes": len(timings), "ok": ok, **percentiles(timings)}


async def soak(url: str, texts: list[str], args: argparse.Namespace) -> tuple[dict, dict]:
    stop = asyncio.Event()
    health = asyncio.create_task(probe_health(url, stop))
    load = await drive(url, texts, args.clients, 10**9, seconds=args.seconds)
    stop.set()
    return load, await health


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="exported int8 ONNX folder")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "soak.md")
    args = parser.parse_args(argv)

    texts = ag_news_test_texts(args.data)
    # max_queue 0: every request of the clients admitted; a soak counts every non-200.
    server = Server(args.model, dict(os.environ), access_log=False, max_queue=0)
    try:
        server.wait_ready(timeout=120)
        asyncio.run(drive(server.url, texts, 4, 100))  # warm-up
        rss_before = rss_mb(server.process.pid)
        load, health = asyncio.run(soak(server.url, texts, args))
        rss_after = rss_mb(server.process.pid)
        alive = server.process.poll() is None
    finally:
        server.stop()
    growth = rss_after - rss_before
    lines = [
        f"{args.clients} concurrent clients for {args.seconds:.0f} s, `POST /predict` with AG "
        "News test texts; a probe calls `/health` every 0.5 s meanwhile.",
        "",
        "| requests | errors | requests/s | p50 ms | p99 ms | `/health` 200s | "
        "`/health` p99 ms | server RSS before -> after (MB) | growth | server up after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {load['requests']} | {load['errors']} | {load['requests_per_s']:.0f} | "
        f"{load['p50']:.1f} | {load['p99']:.1f} | {health['ok']}/{health['probes']} | "
        f"{health['p99']:.1f} | {rss_before:.0f} -> {rss_after:.0f} | {growth:+.1f} MB "
        f"({'within' if growth < MEMORY_BOUND_MB else 'OVER'} the {MEMORY_BOUND_MB} MB bound) | "
        f"{'yes' if alive else 'NO'} |",
    ]
    record(
        "soak",
        "Soak: sustained load",
        "\n".join(lines) + "\n",
        args.output,
        {
            "soak_errors": load["errors"],
            "soak_p99_ms": load["p99"],
            "soak_rss_growth_mb": growth,
            "soak_health_failures": health["probes"] - health["ok"],
        },
        experiment=args.experiment,
    )
    ok = load["errors"] == 0 and health["ok"] == health["probes"] and alive
    return 0 if ok and growth < MEMORY_BOUND_MB else 1


if __name__ == "__main__":
    sys.exit(main())
