"""The server against a schema fuzzer and hostile clients: 4xx or a right answer, never down.

Every request goes to a server this test starts on 127.0.0.1, in bounded numbers.
"""

import os
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.servers import Server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tiny_onnx):
    """Default limits: 1 MB bodies, 10,000 characters a text, 64 texts a batch."""
    server = Server(str(tiny_onnx), dict(os.environ), access_log=False)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


#: What a fuzzed response must satisfy. Not positive_data_acceptance: the
#: schema cannot say "not whitespace only" or the configurable length limit,
#: which answer 422 by design.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def test_fuzzed_requests_get_no_5xx_and_match_the_schema(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/predict", "/predict/batch", "/health"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def responds_well(case) -> None:
            case.call_and_validate(checks=CHECKS)

        responds_well()
    assert httpx.get(f"{server.url}/health").json() == {"status": "healthy"}


def post(server, body: bytes, content_type: str = "application/json", route: str = "/predict"):
    return httpx.post(
        f"{server.url}{route}", content=body, headers={"content-type": content_type}, timeout=30
    )


HOSTILE = {
    "1 MB text": (b'{"text": "' + b"a" * 1_000_000 + b'"}', "application/json", {413}),
    "text just under the body limit, over the length limit": (
        b'{"text": "' + b"news " * 150_000 + b'"}',
        "application/json",
        {422},
    ),
    "deeply nested JSON": (
        b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "application/json",
        {400, 422},
    ),
    "invalid UTF-8": (b'{"text": "\xff\xfe\xfd news"}', "application/json", {400, 422}),
    "NUL bytes": (b'{"text": "news\\u0000\\u0000"}', "application/json", {422}),
    "wrong content type": (b'{"text": "news"}', "text/plain", {422}),
    "no body": (b"", "application/json", {422}),
    "huge batch": (
        b'{"texts": [' + b",".join([b'"news"'] * 50_000) + b"]}",
        "application/json",
        {413},
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input_gets_a_4xx_and_the_server_stays_up(server, case):
    body, content_type, statuses = HOSTILE[case]
    route = "/predict/batch" if case == "huge batch" else "/predict"
    response = post(server, body, content_type, route)
    assert response.status_code in statuses, response.text[:500]
    assert response.json()["detail"]
    assert httpx.get(f"{server.url}/health").json() == {"status": "healthy"}


def test_slow_clients_do_not_hold_up_others_or_memory(server, texts):
    """Clients that trickle their bodies in; others are answered meanwhile."""
    rss_before = rss_mb(server.process.pid)
    body = b'{"text": "' + b"slow news " * 20 + b'"}'

    def trickle() -> bytes:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            head = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode())
            for i in range(0, len(body), 20):
                sock.sendall(body[i : i + 20])
                time.sleep(0.5)
            return sock.recv(4096)

    answers: list[bytes] = []
    slow = [threading.Thread(target=lambda: answers.append(trickle())) for _ in range(8)]
    for thread in slow:
        thread.start()
    fast = [httpx.post(f"{server.url}/predict", json={"text": t}, timeout=10) for t in texts[:20]]
    assert all(thread.is_alive() for thread in slow), "answered while slow bodies trickle in"
    for thread in slow:
        thread.join(timeout=60)
    assert all(r.status_code == 200 for r in fast)
    assert len(answers) == 8 and all(a.startswith(b"HTTP/1.1 200") for a in answers)
    # Hostile bodies and hundreds of requests later, memory is where it was.
    for case in HOSTILE:
        post(server, HOSTILE[case][0], HOSTILE[case][1])
    assert rss_mb(server.process.pid) - rss_before < 150
