"""Overload is answered, not queued: a real server holding as many prediction requests as its
limit answers the rest 429 with Retry-After at once, and counts them on /metrics."""

import asyncio

import httpx
import pytest

from devkit.mlflow_store import MlflowStore
from devkit.servers import Server

pytestmark = pytest.mark.timeout(180)


async def flood(url: str, texts: list[str], clients: int, requests: int) -> list[httpx.Response]:
    """`requests` POST /predict from `clients` concurrent clients (bounded in count)."""
    todo = iter(range(requests))
    answers: list[httpx.Response] = []

    async def client(session: httpx.AsyncClient) -> None:
        for i in todo:
            answers.append(
                await session.post(f"{url}/predict", json={"text": texts[i % len(texts)]})
            )

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return answers


def test_past_its_limit_the_server_answers_429_with_retry_after_and_counts_it(
    tmp_path, tiny_onnx, texts
):
    env = MlflowStore(tmp_path).env
    server = Server(str(tiny_onnx), env, max_queue=1, threads=1)
    try:
        server.wait_ready()
        answers = asyncio.run(flood(server.url, texts, clients=24, requests=240))
        metrics = httpx.get(f"{server.url}/metrics").text
    finally:
        server.stop()
    statuses = [a.status_code for a in answers]
    assert set(statuses) == {200, 429}, sorted(set(statuses))
    refused = [a for a in answers if a.status_code == 429]
    assert all(a.headers["Retry-After"] == "1" for a in refused)
    assert "retry after" in refused[0].json()["detail"]
    assert f"distrinews_overloaded_total {float(len(refused))}" in metrics
    assert "distrinews_queue_limit 1.0" in metrics
    # Refused before the body is read, yet counted under its route.
    counted = 'distrinews_requests_total{method="POST",route="/predict",status="429"}'
    assert f"{counted} {float(len(refused))}" in metrics
