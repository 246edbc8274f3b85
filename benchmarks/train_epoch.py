"""Time full training epochs of the real pipeline and record them in benchmarks/training.md.

Runs `mlflow run . -e train` (real torchrun, real MLflow store: the one
MLFLOW_TRACKING_URI names, else ./mlflow.db), then reads the figures back
from the run it created.

    python benchmarks/train_epoch.py --data ../shared/data/ag_news --nproc 2 --epochs 1
"""

import argparse
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import mlflow

REPO = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def run_training(args: argparse.Namespace) -> tuple[str, float]:
    experiment = mlflow.set_experiment(args.experiment)
    before = {
        r.info.run_id for r in mlflow.search_runs([experiment.experiment_id], output_format="list")
    }
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(REPO),
        "-e",
        "train",
        "--env-manager",
        "local",
        "--experiment-id",
        experiment.experiment_id,
        "-P",
        f"nproc={args.nproc}",
        "-P",
        f"data={args.data}",
        "-P",
        f"epochs={args.epochs}",
    ]
    for extra in args.param:
        command += ["-P", extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    wall = time.perf_counter() - start
    (run_id,) = {
        r.info.run_id for r in mlflow.search_runs([experiment.experiment_id], output_format="list")
    } - before
    return run_id, wall


def table(run_id: str, wall: float) -> str:
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    epoch_rows = []
    accuracy = {m.step: m.value for m in client.get_metric_history(run_id, "val_accuracy")}
    for seconds, speed in zip(
        client.get_metric_history(run_id, "epoch_seconds"),
        client.get_metric_history(run_id, "epoch_samples_per_second"),
        strict=True,
    ):
        epoch_rows.append((seconds.value, speed.value, accuracy.get(seconds.step, float("nan"))))
    lines = [
        f"Measured {date.today()} on {cpu_name()}, {tags.get('world_size')} process(es) x "
        f"{tags.get('threads_per_process')} thread(s), backend {tags.get('backend')}; "
        f"MLflow run `{run_id}`.",
        "",
        f"Model `{params['model']}`, {params['train_rows']} training rows, "
        f"batch {params['batch_size']} per process, lr {params['lr']}, "
        f"max_length {params['max_length']}.",
        "",
        "| epoch | wall time (s) | samples/s | validation accuracy |",
        "| --- | --- | --- | --- |",
    ]
    for i, (seconds, speed, val) in enumerate(epoch_rows, start=1):
        lines.append(f"| {i} | {seconds:.0f} | {speed:.1f} | {val:.4f} |")
    lines += [
        "",
        "| test accuracy | test macro-F1 | whole `mlflow run` wall time (s) |",
        "| --- | --- | --- |",
        f"| {metrics['test_accuracy']:.4f} | {metrics['test_macro_f1']:.4f} | {wall:.0f} |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/ag_news")
    parser.add_argument("--nproc", default="2")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "training.md")
    parser.add_argument(
        "-P", "--param", action="append", default=[], help="extra MLproject param k=v"
    )
    args = parser.parse_args(argv)
    run_id, wall = run_training(args)
    text = "# Training: full epochs of the default model\n\n" + table(run_id, wall)
    args.output.write_text(text)
    print(text)
    mlflow.MlflowClient().set_tag(run_id, "benchmark", "train_epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
