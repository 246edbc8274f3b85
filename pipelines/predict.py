"""Predict: score a whole archive (a file, or a folder of files) with a registered model.

Launch:
    mlflow run . -e predict --env-manager local -P input=news/ -P output=scored/
or directly:
    python -m pipelines.predict --input news/ --output scored/ --model models:/distrinews@champion
"""

import sys

from distrinews.cli import parse_step
from distrinews.config import PredictConfig
from distrinews.errors import run_reporting
from distrinews.predict.step import run_predict


def main(argv: list[str] | None = None) -> int:
    return run_reporting(lambda: run_predict(parse_step("predict", argv)[PredictConfig]))


if __name__ == "__main__":
    sys.exit(main())
