"""The alert rules in a real Prometheus (Debian's `prometheus`): promtool accepts them, and
with Prometheus scraping a real server, a stream like the reference fires nothing while a
shifted stream fires the input-drift alert, read back from Prometheus's API."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from devkit.processes import REPO
from devkit.servers import LocalServer, Server

pytestmark = pytest.mark.timeout(300)

RULES = REPO / "serving" / "prometheus" / "alerts.yml"


def prometheus_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: apt-get install prometheus (.ci/run installs it)")
    return path


def test_promtool_accepts_the_rules():
    result = subprocess.run(
        [prometheus_tool("promtool"), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def prometheus_for(target: str, folder: Path) -> LocalServer:
    """Prometheus scraping `target` every second, with the repository's rules (their
    expressions as they are; `for:` shortened to 2 s so the test need not wait minutes)."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "2s" if "for" in rule else "0s"
    (folder / "alerts.yml").write_text(yaml.safe_dump(rules))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [{"job_name": "distrinews", "static_configs": [{"targets": [target]}]}],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    binary = prometheus_tool("prometheus")

    def command(port: int) -> list[str]:
        return [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]

    return LocalServer(command, dict(os.environ), cwd=folder, ready_path="/-/ready")


def alerts(prometheus: LocalServer) -> dict[str, str]:
    """Alert name -> state (pending or firing), from Prometheus's API."""
    answer = httpx.get(f"{prometheus.url}/api/v1/alerts", timeout=5).json()
    return {a["labels"]["alertname"]: a["state"] for a in answer["data"]["alerts"]}


def send(server: Server, texts: list[str]) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for start in range(0, len(texts), 8):
            response = client.post("/predict/batch", json={"texts": texts[start : start + 8]})
            assert response.status_code == 200


def test_a_shifted_stream_fires_the_input_drift_alert(tmp_path, tiny_onnx_profiled, small_data):
    texts = pd.read_parquet(small_data / "test.parquet")["text"].tolist()
    server = Server(str(tiny_onnx_profiled), dict(os.environ), drift_window=100)
    prometheus = None
    try:
        server.wait_ready()
        prometheus = prometheus_for(server.url.removeprefix("http://"), tmp_path)
        prometheus.wait_ready(timeout=60)
        send(server, texts[:100])  # like the reference: real news
        time.sleep(6)  # several scrapes and evaluations
        assert "DistriNewsInputDrift" not in alerts(prometheus)
        # Headlines only, with characters the vocabulary lacks.
        send(server, [f"{text.split(' (')[0][:40]} ☃☃ ✈✈" for text in texts[:100]])
        start = time.monotonic()
        while alerts(prometheus).get("DistriNewsInputDrift") != "firing":
            assert time.monotonic() - start < 60, alerts(prometheus)
            time.sleep(0.5)
        print(f"input drift alert firing {time.monotonic() - start:.1f} s after the shift")
    finally:
        if prometheus is not None:
            prometheus.stop()
        server.stop()
