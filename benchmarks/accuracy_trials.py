"""One accuracy trial: a recipe change, trained with several seeds, added to the trial table.

    python -m benchmarks.accuracy_trials --name "max_length 64, 3 epochs" \
        --seeds 42 43 44 --max-length 64 --epochs 3

Flags this script does not know go to pipelines.train as they are (the
default recipe plus those flags). Each seed trains on the whole shared subset under torchrun, as
`mlflow run . -e train` does. Settings are chosen on the validation split:
the table's first figure is the final validation accuracy; test accuracy is
reported beside it, never tuned on. Rows accumulate in
benchmarks/accuracy_trials.md, each with the CPU it ran on: compare epoch
times only between rows of one machine and day, with the baseline
(`--name default`, no flags) rerun beside the trials.
"""

import argparse
import statistics
import sys
import tempfile
from datetime import date
from pathlib import Path

from benchmarks.common import DATA, REPO, record, train_with_pipeline, unique_name
from distrinews.runtime.cpu import available_cpus, cpu_name

HEADER = (
    "| trial | flags | seeds | validation accuracy | test accuracy | epoch s (median) "
    "| wall s (mean) | machine |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
)


def run_seed(args: argparse.Namespace, seed: int, work: Path) -> dict[str, float]:
    """Train once; the final validation and test accuracy and the times of the run."""
    import mlflow

    flags = dict(zip(args.flags[::2], args.flags[1::2], strict=True))
    options = {key.lstrip("-").replace("-", "_"): value for key, value in flags.items()}
    options = {"data": args.data, "output_dir": work / f"seed-{seed}"} | options
    run, wall = train_with_pipeline(
        args.nproc, args.experiment, unique_name(f"trial-s{seed}"), seed=seed, **options
    )
    epoch_seconds = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train/epoch_seconds")
    return {
        "val": run.data.metrics["val/accuracy"],
        "test": run.data.metrics["test/accuracy"],
        "epoch_s": statistics.median(m.value for m in epoch_seconds),
        "wall_s": wall,
    }


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def table_row(args: argparse.Namespace, results: list[dict[str, float]]) -> str:
    cpu = f"{cpu_name()}, {available_cpus()} vCPUs, {date.today()}"
    return (
        f"| {args.name} | `{' '.join(args.flags) or '(defaults)'}` "
        f"| {' '.join(map(str, args.seeds))} | {mean_sd([r['val'] for r in results])} "
        f"| {mean_sd([r['test'] for r in results])} "
        f"| {statistics.median(r['epoch_s'] for r in results):.0f} "
        f"| {statistics.mean(r['wall_s'] for r in results):.0f} | {cpu} |\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--name", required=True, help="what the trial changes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--nproc", default="auto")
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "accuracy_trials.md")
    args, args.flags = parser.parse_known_args(argv)  # the rest: pipelines.train flags
    if len(args.flags) % 2 or "--seed" in args.flags or any("=" in f for f in args.flags[::2]):
        parser.error("give pipelines.train flags as '--name value' pairs; seeds go in --seeds")
    with tempfile.TemporaryDirectory() as work:
        results = [run_seed(args, seed, Path(work)) for seed in args.seeds]
    previous = args.output.read_text().split(HEADER, 1)[-1] if args.output.exists() else ""
    body = HEADER + previous + table_row(args, results)
    metrics = {f"{key}_mean": statistics.mean(r[key] for r in results) for key in results[0]}
    record(
        "accuracy_trials", "Accuracy trials", body, args.output, metrics, experiment=args.experiment
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
