"""Evaluate a train run's logged model on the test split, logging to that run.

Launch:
    mlflow run . -e evaluate --env-manager local \
        -P run_id=<train run id> -P data=../shared/data/ag_news
or directly:
    python -m pipelines.evaluate --run-id <train run id> --data ../shared/data/ag_news
"""

import sys

from distrinews.cli import parse_scoring_job
from distrinews.errors import UserError
from distrinews.evaluation import evaluate_logged_run


def main(argv: list[str] | None = None) -> int:
    try:
        metrics = evaluate_logged_run(*parse_scoring_job("evaluate", argv))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
