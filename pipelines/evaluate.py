"""Evaluate a train run's logged model on the test split, logging to that run.

Launch:
    mlflow run . -e evaluate --env-manager local \
        -P run_id=<train run id> -P data=../shared/data/ag_news
or directly:
    python -m pipelines.evaluate --run-id <train run id> --data ../shared/data/ag_news
"""

import sys

from distrinews.cli import parse_scoring_job
from distrinews.errors import run_reporting
from distrinews.train.evaluation import evaluate_logged_run


def main(argv: list[str] | None = None) -> int:
    def evaluate() -> str:
        metrics = evaluate_logged_run(*parse_scoring_job("evaluate", argv))
        return f"test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}"

    return run_reporting(evaluate)


if __name__ == "__main__":
    sys.exit(main())
