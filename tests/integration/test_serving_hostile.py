"""The server against a schema fuzzer and hostile clients: 4xx or a right answer, never down.

Every request goes to a server this test starts on 127.0.0.1, in bounded numbers.
"""

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from devkit.servers import Server

#: The feedback route is on, so the fuzzer reaches it too (with this token).
TOKEN = "fuzz-token"


@pytest.fixture(scope="module")
def server(tiny_onnx):
    """Default limits: 1 MB bodies, 10,000 characters a text, 64 texts a batch."""
    server = Server(str(tiny_onnx), dict(os.environ), access_log=False, feedback_token=TOKEN)
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


def test_schemathesis_finds_no_failure(server, tmp_path):
    """`schemathesis run --mode all`: positive and negative data, every check. Whatever the
    schema accepts is answered 200, whatever it refuses gets a documented 4xx, never a 5xx."""
    result = subprocess.run(
        [
            *(str(Path(sys.executable).parent / "schemathesis"), "run"),
            *(f"{server.url}/openapi.json", "--mode", "all", "--max-examples", "60"),
            *("--seed", "20261126", "--request-timeout", "10"),
            *("--header", f"Authorization: Bearer {TOKEN}"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,  # its example cache (.schemathesis/) stays out of the clone
    )
    assert result.returncode == 0, result.stdout[-4000:]
    # A case whose random keys hold lone surrogates cannot be sent as JSON: schemathesis
    # skips it ("N skipped"), which says nothing about the server.
    generated = re.search(r"(\d+) generated, (\d+) passed(, \d+ skipped)?\n", result.stdout)
    assert generated and generated[1] == generated[2], result.stdout[-2000:]
    # Six operations, /feedback among them: schemathesis sends it prediction ids from
    # /predict answers (recorded) and random ones (404).
    assert "Selected: 6/6" in result.stdout and "Tested: 6" in result.stdout
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
        {422},
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


def raw_exchange(port: int, head: bytes, chunks: list[bytes]) -> bytes:
    """Send a request as raw bytes; the first bytes of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading it all: fine
        return sock.recv(65536)


def test_an_oversized_chunked_body_gets_413(server):
    """No Content-Length to check: the limit is enforced while the chunks are read."""
    piece = b"a" * 65536
    chunks = [b'14\r\n{"text": "aaaaaaaaaa\r\n']
    chunks += [b"%x\r\n%s\r\n" % (len(piece), piece)] * 20  # 1.3 MB, over the 1 MB limit
    chunks += [b'2\r\n"}\r\n', b"0\r\n\r\n"]
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    answer = raw_exchange(server.port, head, chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert httpx.get(f"{server.url}/health").json() == {"status": "healthy"}


def test_a_false_content_length_reads_only_the_declared_bytes(server):
    """A body far over the limit behind `Content-Length: 20`: HTTP framing makes the body
    those 20 bytes (malformed JSON, 4xx); the rest is never read as this request's body."""
    body = b'{"text": "' + b"a" * 2_000_000 + b'"}'
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 20\r\n\r\n"
    )
    answer = raw_exchange(
        server.port, head, [body[i : i + 65536] for i in range(0, len(body), 65536)]
    )
    assert answer[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 422"), answer[:200]
    assert httpx.get(f"{server.url}/health").json() == {"status": "healthy"}
