"""Server processes on 127.0.0.1 for the tests and benchmarks: `python -m serving` and others."""

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """A server process on 127.0.0.1 at a free port, stopped at the end.

    `command(port)` gives its command line; it is ready once `ready_path`
    answers 200.
    """

    def __init__(
        self,
        command: Callable[[int], list[str]],
        env: dict[str, str],
        cwd: Path = REPO,
        ready_path: str = "/ready",
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_path = ready_path
        # A file, not a pipe: nobody reads a pipe while the server runs, and a
        # full one would block the server's logging.
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (read by output() after stop)
        self.process = subprocess.Popen(
            command(self.port),
            cwd=cwd,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.output()[-3000:]}")
            try:
                if httpx.get(f"{self.url}{self.ready_path}", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("server not ready in time")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Server(LocalServer):
    """`python -m serving` in a subprocess on 127.0.0.1."""

    def __init__(
        self,
        model: str,
        env: dict[str, str],
        python: str = sys.executable,
        cwd: Path = REPO,
        **settings: object,
    ):
        """`settings` become DISTRINEWS_<NAME> variables; `python` picks the environment."""
        env = env | {f"DISTRINEWS_{k.upper()}": str(v) for k, v in settings.items()}
        super().__init__(
            lambda port: [python, "-m", "serving", "--model", model, "--port", str(port)], env, cwd
        )
