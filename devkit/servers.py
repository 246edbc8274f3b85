"""Server processes on 127.0.0.1 for the tests and benchmarks: `python -m serving` and others."""

import asyncio
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from devkit.processes import REPO


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
        """`settings` become DISTRINEWS_<NAME> variables; `python` picks the environment.

        Unless `prediction_log` is given, each server logs to a SQLite file of its own
        (`self.prediction_log`, deleted at stop), never to a shared one in `cwd`.
        """
        self.log_folder = tempfile.TemporaryDirectory(prefix="distrinews-log-")
        self.prediction_log = str(
            settings.pop("prediction_log", f"sqlite:///{self.log_folder.name}/predictions.db")
        )
        env = env | {f"DISTRINEWS_{k.upper()}": str(v) for k, v in settings.items()}
        env["DISTRINEWS_PREDICTION_LOG"] = self.prediction_log
        super().__init__(
            lambda port: [python, "-m", "serving", "--model", model, "--port", str(port)], env, cwd
        )

    def stop(self) -> None:
        super().stop()
        self.log_folder.cleanup()


class MlflowServer(LocalServer):
    """`mlflow server` on a SQLite store (`folder`/server.db unless given) with its
    artifact root under `folder`."""

    def __init__(self, folder: Path, env: dict[str, str], store_uri: str = ""):
        store_uri = store_uri or f"sqlite:///{folder / 'server.db'}"

        def command(port: int) -> list[str]:
            return [
                *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"),
                *("--port", str(port), "--workers", "1", "--backend-store-uri", store_uri),
                *("--artifacts-destination", str(folder / "artifacts")),
            ]

        super().__init__(command, env, cwd=folder, ready_path="/health")


def served_version(url: str) -> str:
    """The registry version the server at `url` says it serves (its /model)."""
    return httpx.get(f"{url}/model", timeout=10).json()["version"]


def wait_for_version(url: str, version: str, timeout: float = 60) -> float:
    """Seconds until the server's /model reports `version`; AssertionError after `timeout`."""
    start = time.monotonic()
    while served_version(url) != version:
        assert time.monotonic() - start < timeout, f"version {version} not served in {timeout} s"
        time.sleep(0.02)
    return time.monotonic() - start


@dataclass
class Answer:
    sent_at: float  # time.monotonic() when the request left
    ms: float
    status: int  # 0: no HTTP answer (connection error, timeout)


class BackgroundLoad:
    """`clients` concurrent connections posting /predict in a loop, in a thread, until stop().

    Bounded: it stops at `max_seconds` even if nobody calls stop().
    """

    def __init__(self, url: str, texts: list[str], clients: int = 16, max_seconds: float = 300):
        self.url, self.texts, self.clients = url, texts, clients
        self.deadline = time.monotonic() + max_seconds
        self.answers: list[Answer] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> "BackgroundLoad":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)

    async def _client(self, offset: int) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            sent = offset
            while not self.stopping.is_set() and time.monotonic() < self.deadline:
                text = self.texts[sent % len(self.texts)]
                sent += self.clients
                start = time.monotonic()
                try:
                    status = (
                        await client.post(f"{self.url}/predict", json={"text": text})
                    ).status_code
                except httpx.HTTPError:
                    status = 0
                self.answers.append(Answer(start, 1000 * (time.monotonic() - start), status))

    async def _run(self) -> None:
        await asyncio.gather(*(self._client(i) for i in range(self.clients)))


#: Chromium flags for this sandbox: headless, as root, and no background
#: connections (the network is closed; Chromium would retry them at start).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def headless_chromium(width: int = 1280, height: int = 900):
    """Debian's Chromium driven by selenium through Debian's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
