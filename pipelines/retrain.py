"""Retrain: production feedback to a gated new champion, one parent run with a child run per
step (monitor -> train -> export -> promote).

Launch:
    mlflow run . -e retrain --env-manager local -P store=sqlite:///predictions.db \
        -P data=../shared/data/ag_news [-P since=7d] [-P force=true]
or directly:
    python -m pipelines.retrain --store sqlite:///predictions.db --data ../shared/data/ag_news
"""

import sys

from distrinews.cli import parse_retrain_job
from distrinews.errors import run_reporting
from distrinews.retrain.workflow import run_retrain
from distrinews.signals import raise_on_sigterm


def main(argv: list[str] | None = None) -> int:
    raise_on_sigterm()  # an orchestrator's stop ends the parent and child runs KILLED

    return run_reporting(lambda: run_retrain(parse_retrain_job(argv)))


if __name__ == "__main__":
    sys.exit(main())
