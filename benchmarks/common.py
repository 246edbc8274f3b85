"""What every benchmark shares: test texts, percentiles, HTTP load, and recording a table.

Benchmarks run both sides of a comparison in one invocation, alternating
rounds, and report medians over the rounds: the machine is shared and noisy.
"""

import asyncio
import contextlib
import http.client
import json
import os
import statistics
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from distrinews.runtime.cpu import available_cpus, cpu_name

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "ag_news"


def machine_line() -> str:
    return f"Measured {date.today()} on {cpu_name()}, {available_cpus()} vCPUs."


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ag_news_test_texts(data: str | Path) -> list[str]:
    """AG News test texts in a fixed shuffled order (lengths as they come)."""
    frame = pd.read_parquet(Path(data) / "test.parquet")
    return frame["text"].sample(frac=1, random_state=0).tolist()


def percentiles(ms: Iterable[float]) -> dict[str, float]:
    ms = list(ms)
    return {f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)}


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Key by key, the median over rounds."""
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def one_client(url: str, texts: list[str], route: str = "/predict", body=None) -> dict:
    """Latency of requests sent one at a time on one kept-alive connection, after 10
    warm-up requests.

    The client is the standard library's http.client: on 2 vCPUs shared with the
    server, httpx's own work added about 1.5 ms to every request (2026-11-26), time
    spent in the client, not the server.
    """
    body = body or (lambda text: {"text": text})
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def post(text: str) -> None:
        # Bytes, so that headers and body leave in one packet (no Nagle wait).
        payload = json.dumps(body(text)).encode()
        connection.request("POST", route, payload, {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"{route} answered {response.status}: {answer[:200]!r}")

    try:
        for text in texts[:10]:
            post(text)
        timings = []
        for text in texts:
            start = time.perf_counter()
            post(text)
            timings.append(1000 * (time.perf_counter() - start))
    finally:
        connection.close()
    return percentiles(timings) | {"mean": statistics.fmean(timings)}


async def drive(
    url: str,
    texts: list[str],
    clients: int,
    requests: int,
    route: str = "/predict",
    body=None,
    seconds: float = float("inf"),
) -> dict:
    """Up to `requests` requests from `clients` concurrent connections, for at most
    `seconds`: requests/s, latency percentiles, errors."""
    body = body or (lambda text: {"text": text})
    timings: list[float] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors, sent
        while sent < requests and time.perf_counter() < deadline:
            text = texts[sent % len(texts)]
            sent += 1
            start = time.perf_counter()
            try:
                response = await client.post(f"{url}{route}", json=body(text))
                errors += response.status_code != 200
            except httpx.HTTPError:
                errors += 1
            timings.append(1000 * (time.perf_counter() - start))

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return {
        "requests": len(timings),
        "requests_per_s": len(timings) / elapsed,
        "errors": errors,
        **percentiles(timings),
    }


def many_clients(
    url: str, texts: list[str], clients: int, requests: int, route: str = "/predict", body=None
) -> dict:
    """`requests` requests from `clients` concurrent connections (see `drive`)."""
    return asyncio.run(drive(url, texts, clients, requests, route, body))


def record(
    name: str,
    title: str,
    body: str,
    output: Path,
    metrics: dict[str, float],
    plots: Iterable[Path] = (),
    run_id: str = "",
    experiment: str = "benchmarks",
) -> None:
    """Print the table, write it to `output`, and log it to an MLflow run tagged `benchmark`.

    The run is `run_id` if given (e.g. the export run), else a new one named
    after the benchmark in `experiment`.
    """
    import mlflow

    text = f"# {title}\n\n{machine_line()}\n\n{body}"
    output.write_text(text)
    print(text)
    if not run_id:
        mlflow.set_experiment(experiment)
    with mlflow.start_run(run_id=run_id or None, run_name=None if run_id else f"bench-{name}"):
        mlflow.set_tag("benchmark", name)
        mlflow.log_text(text, f"benchmarks/{output.name}")
        mlflow.log_metrics({f"bench_{k}": v for k, v in metrics.items()})
        for plot in plots:
            mlflow.log_artifact(str(plot), "benchmarks")


def train_with_pipeline(
    nproc: int | str, experiment: str, run_name: str, threads: int = 0, **options: object
):
    """Run our training pipeline under torchrun; its MLflow run and the wall time.

    `options` are pipelines.train flags (max_train_rows=..., epochs=...).
    """
    import subprocess

    import mlflow

    from distrinews.cli import torchrun_command

    command = torchrun_command(
        nproc, experiment=experiment, run_name=run_name, threads=threads, **options
    )
    start = time.perf_counter()
    # Bounded: a hung rank must fail the benchmark, not hold it forever.
    subprocess.run(command, cwd=REPO, check=True, timeout=6 * 3600)
    wall = time.perf_counter() - start
    client = mlflow.MlflowClient()
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    (run,) = client.search_runs(
        [experiment_id], f"attributes.run_name = '{run_name}'", order_by=["start_time DESC"]
    )[:1]
    return run, wall


def unique_name(prefix: str) -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{time.perf_counter_ns() % 10**6}"


@contextlib.contextmanager
def work_folder(keep: str, prefix: str) -> Iterator[Path]:
    """The folder a benchmark writes its data, checkpoints and models to: `keep` (made if
    need be, left afterwards) when given, else a temporary one deleted at the end."""
    with tempfile.TemporaryDirectory(prefix=prefix) as temporary:
        work = Path(keep or temporary)
        work.mkdir(parents=True, exist_ok=True)
        yield work
