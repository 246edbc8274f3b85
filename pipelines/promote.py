"""Promotion gate: move the `champion` alias to a registered version if it earns it.

Launch:
    mlflow run . -e promote --env-manager local -P data=../shared/data/ag_news [-P version=<N>]
        [-P max_accuracy_drop=0.0] [-P max_p95_ms=20] [-P force=true]
or directly:
    python -m pipelines.promote --data ../shared/data/ag_news --version 3
"""

import sys

from distrinews.cli import parse_scoring_job
from distrinews.errors import run_reporting
from distrinews.promote.gate import run_promote


def main(argv: list[str] | None = None) -> int:
    return run_reporting(lambda: run_promote(*parse_scoring_job("promote", argv)))


if __name__ == "__main__":
    sys.exit(main())
