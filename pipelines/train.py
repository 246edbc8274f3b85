"""Fine-tune an encoder on AG News with DistributedDataParallel, tracked in MLflow.

Launch (one machine, 2 processes):
    torchrun --standalone --nproc-per-node 2 -m pipelines.train --data ../shared/data/ag_news
or through MLflow, which records the run it creates:
    mlflow run . -e train --env-manager local -P nproc=2 -P data=../shared/data/ag_news
"""

import sys

from distrinews.config import UserError, parse_training_job
from distrinews.distributed import DistInfo
from distrinews.training import run_training


def torchrun_command(
    nproc: int | str, launcher: tuple[str, ...] = ("--standalone",), **options: object
) -> list[str]:
    """`torchrun` launching this script, each option as `--key value`.

    `launcher` holds torchrun's own flags: one machine by default; a
    rendezvous (`--nnodes`, `--rdzv-endpoint`, ...) for several.
    """
    command = ["torchrun", *launcher, "--nproc-per-node", str(nproc), "-m", "pipelines.train"]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    return command


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
