"""DDP scaling: global samples/s of our pipeline at 1 and 2 processes on this machine.

CPU (default): nproc=1 with 2 threads, nproc=1 with 1 thread, nproc=2 with
1 thread each; scaling efficiency = samples/s(nproc=2) / (2 x samples/s(nproc=1,
1 thread)). A last row runs two independent nproc=1 x 1 thread trainings side
by side: what the cores give together with no communication at all, the
ceiling DDP can reach on this machine. On a GPU machine, `--gpus` compares
1 GPU with every GPU (NCCL, one process per GPU). Each round runs every
configuration once; the table gives medians over rounds.

    python -m benchmarks.ddp_scaling --rows 1280 --rounds 3
    python -m benchmarks.ddp_scaling --gpus --rows 20000   # on a GPU machine
    python -m benchmarks.ddp_scaling --skip threads side-by-side   # the efficiency pair only
"""

import argparse
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from benchmarks.common import DATA, REPO, median_of, record, train_with_pipeline, unique_name
from distrinews.config import DEFAULT_MODEL


class Config(NamedTuple):
    processes: int
    threads: int  # per process; 0 = the pipeline's default
    copies: int = 1  # independent trainings run side by side, no communication


SIDE_BY_SIDE = "2 separate nproc=1 x 1 thread runs side by side (no communication)"


def configurations(gpus: bool) -> dict[str, Config]:
    """name -> configuration; the last two with one copy are the scaling pair."""
    if gpus:
        import torch

        count = torch.cuda.device_count()
        return {"1 GPU": Config(1, 0), f"{count} GPUs": Config(count, 0)}
    return {
        "nproc=1, 2 threads": Config(1, 2),
        "nproc=1, 1 thread": Config(1, 1),
        "nproc=2, 1 thread each": Config(2, 1),
        SIDE_BY_SIDE: Config(1, 1, copies=2),
    }


#: --skip names for the CPU configurations that the scaling figures do not need.
OPTIONAL = {"threads": "nproc=1, 2 threads", "side-by-side": SIDE_BY_SIDE}


def train_once(config: Config, args: argparse.Namespace, output_dir: Path) -> tuple[float, float]:
    """samples/s of the training loop and wall time of one run."""
    run, wall = train_with_pipeline(
        config.processes,
        args.experiment,
        unique_name(f"ddp-scaling-{config.processes}x{config.threads}"),
        threads=config.threads,
        data=args.data,
        model=args.model,
        max_train_rows=args.rows,
        max_eval_rows=64,
        epochs=1,
        batch_size=args.batch_size,
        output_dir=output_dir,
    )
    return run.data.metrics["train/epoch_samples_per_second"], wall


def measure(config: Config, args: argparse.Namespace, work: Path) -> dict[str, float]:
    """Global samples/s: the sum over the copies, which start together with equal work."""
    folders = [work / f"{config.processes}x{config.threads}-{i}" for i in range(config.copies)]
    with ThreadPoolExecutor(config.copies) as pool:
        results = list(pool.map(lambda folder: train_once(config, args, folder), folders))
    return {
        "samples_per_s": sum(sps for sps, _ in results),
        "wall_s": max(wall for _, wall in results),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--rows", type=int, default=1280, help="training rows, one pass")
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gpus", action="store_true", help="1 GPU vs every GPU (NCCL)")
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "ddp_scaling.md")
    parser.add_argument(
        "--skip", nargs="+", choices=list(OPTIONAL), default=[], help="CPU rows to leave out"
    )
    args = parser.parse_args(argv)

    configs = configurations(args.gpus)
    for name in args.skip:
        configs.pop(OPTIONAL[name], None)
    per_config: dict[str, list[dict]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.rounds):
            for name, config in configs.items():
                per_config[name].append(measure(config, args, Path(work)))
    results = {name: median_of(rounds) for name, rounds in per_config.items()}
    single, multi = [name for name, config in configs.items() if config.copies == 1][-2:]
    nproc = configs[multi].processes
    efficiency = results[multi]["samples_per_s"] / (nproc * results[single]["samples_per_s"])
    lines = [
        f"Model `{args.model}`, {args.rows} training rows (one pass), batch {args.batch_size} "
        f"per process, samples/s of the training loop. Medians over {args.rounds} rounds.",
        "",
        "| configuration | global samples/s | wall time of the run (s) |",
        "| --- | --- | --- |",
        *(
            f"| {name} | {r['samples_per_s']:.1f} | {r['wall_s']:.0f} |"
            for name, r in results.items()
        ),
        "",
        f"Scaling efficiency = samples/s({multi}) / ({nproc} x samples/s({single})) = "
        f"**{efficiency:.2f}**.",
    ]
    metrics = {"scaling_efficiency": efficiency}
    if SIDE_BY_SIDE in results:
        ceiling = results[SIDE_BY_SIDE]["samples_per_s"]
        metrics["hardware_ceiling_efficiency"] = ceiling / (2 * results[single]["samples_per_s"])
        metrics["ddp_share_of_ceiling"] = results[multi]["samples_per_s"] / ceiling
        lines += [
            "",
            f"Two separate 1-thread runs side by side, with no communication at all, reach "
            f"{metrics['hardware_ceiling_efficiency']:.2f} of twice one run alone: the ceiling "
            f"these cores give. DDP reaches {metrics['ddp_share_of_ceiling']:.2f} of that ceiling.",
        ]
    metrics |= {
        f"samples_per_s_{c.processes}x{c.threads}" + ("_side_by_side" if c.copies > 1 else ""): (
            results[name]["samples_per_s"]
        )
        for name, c in configs.items()
    }
    record(
        "ddp_scaling",
        "DDP scaling",
        "\n".join(lines) + "\n",
        args.output,
        metrics,
        experiment=args.experiment,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
