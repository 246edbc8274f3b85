"""Monitor: a window of the server's prediction log and feedback, reported to MLflow.

Launch:
    mlflow run . -e monitor --env-manager local -P store=sqlite:///predictions.db -P since=24h
or directly:
    python -m pipelines.monitor --store sqlite:///predictions.db --since 7d
"""

import sys

from distrinews.cli import parse_step
from distrinews.config import MonitorConfig
from distrinews.errors import run_reporting
from distrinews.monitor.step import run_monitor


def main(argv: list[str] | None = None) -> int:
    return run_reporting(lambda: run_monitor(parse_step("monitor", argv)[MonitorConfig]))


if __name__ == "__main__":
    sys.exit(main())
