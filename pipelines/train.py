"""Fine-tune an encoder on AG News with DistributedDataParallel, tracked in MLflow.

Launch (one machine, 2 processes):
    torchrun --standalone --nproc-per-node 2 -m pipelines.train --data ../shared/data/ag_news
or through MLflow, which records the run it creates:
    mlflow run . -e train --env-manager local -P nproc=2 -P data=../shared/data/ag_news
"""

import sys

from distrinews.cli import parse_training_job
from distrinews.errors import UserError
from distrinews.train.distributed import DistInfo
from distrinews.train.loop import run_training


def main(argv: list[str] | None = None) -> int:
    try:
        run_training(parse_training_job(argv))
    except UserError as err:
        # Every rank hits the same bad input; one line from rank 0 is enough.
        if DistInfo.from_env().is_main:
            print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
