"""Accuracy of the default model with the default (README) hyper-parameters, and a learning curve.

Trains on the whole shared train subset for `--epochs` epochs and scores every
epoch's checkpoint on the full test split (test accuracy and macro-F1 per
epoch), then trains on the first 2k, 5k and 10k rows the same way and plots
test accuracy against the number of training rows.

    python -m benchmarks.accuracy --epochs 2
"""

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks.common import DATA, REPO, record, train_with_pipeline, unique_name
from distrinews.config import DEFAULT_MODEL, DataConfig, TrainConfig
from distrinews.data.splits import load_splits
from distrinews.train.evaluation import evaluate_frame
from distrinews.train.model import load_model_and_tokenizer


def test_metrics(checkpoint: Path, data: str) -> dict[str, float]:
    """Accuracy and macro-F1 of a checkpoint on the whole test split, in this process."""
    cfg = DataConfig(data=data)
    splits = load_splits(cfg, TrainConfig.seed)
    model, tokenizer = load_model_and_tokenizer(str(checkpoint), splits.labels)
    metrics, _ = evaluate_frame(model, tokenizer, splits.test, cfg.max_length)
    return metrics


def train(rows: int, args: argparse.Namespace, work: Path) -> list[dict[str, float]]:
    """One training run on `rows` rows (0: all); per epoch, its test and run figures."""
    import mlflow

    output_dir = work / f"rows-{rows}"
    run, _ = train_with_pipeline(
        args.nproc,
        args.experiment,
        unique_name(f"accuracy-{rows or 'all'}"),
        data=args.data,
        model=args.model,
        max_train_rows=rows,
        epochs=args.epochs,
        output_dir=output_dir,
        keep_checkpoints=0,
    )
    client = mlflow.MlflowClient()
    logged = {
        "val_accuracy": "val/accuracy",
        "epoch_seconds": "train/epoch_seconds",
        "epoch_samples_per_second": "train/epoch_samples_per_second",
    }
    history = {
        name: [m.value for m in client.get_metric_history(run.info.run_id, key)]
        for name, key in logged.items()
    }
    return [
        test_metrics(output_dir / run.info.run_id / f"epoch-{epoch}", args.data)
        | {key: values[epoch - 1] for key, values in history.items()}
        | {"train_rows": int(run.data.params["train_rows"])}
        for epoch in range(1, args.epochs + 1)
    ]


def learning_curve_png(points: list[tuple[int, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    rows, accuracy = zip(*points, strict=True)
    ax.plot(rows, accuracy, marker="o")
    ax.set_xscale("log")
    ax.set_xticks(rows, [str(r) for r in rows])
    ax.minorticks_off()
    ax.set_xlabel("training rows")
    ax.set_ylabel("test accuracy")
    ax.set_title("Learning curve")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--nproc", default="auto")
    parser.add_argument(
        "--curve-rows", type=int, nargs="*", default=[2000, 5000, 10000], help="learning curve"
    )
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "accuracy.md")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as work:
        per_epoch = train(0, args, Path(work))
        curve = [train(rows, args, Path(work))[-1] for rows in args.curve_rows]
    curve.append(per_epoch[-1])
    lines = [
        f"Default model and hyper-parameters (batch {TrainConfig.batch_size} per process, "
        f"lr {TrainConfig.lr}, {args.nproc} processes), {per_epoch[0]['train_rows']} training "
        "rows; the official AG News test split (7,600 rows).",
        "",
        "| epoch | test accuracy | test macro-F1 | validation accuracy | epoch time (s) "
        "| samples/s |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {i} | {e['accuracy']:.4f} | {e['macro_f1']:.4f} | {e['val_accuracy']:.4f} "
            f"| {e['epoch_seconds']:.0f} | {e['epoch_samples_per_second']:.1f} |"
            for i, e in enumerate(per_epoch, start=1)
        ),
        "",
        f"Learning curve: test accuracy after {args.epochs} epochs on the first N rows "
        f"(`{args.output.with_suffix('.png').name}`).",
        "",
        "| training rows | test accuracy | test macro-F1 |",
        "| --- | --- | --- |",
        *(f"| {c['train_rows']} | {c['accuracy']:.4f} | {c['macro_f1']:.4f} |" for c in curve),
    ]
    plot = learning_curve_png(
        [(c["train_rows"], c["accuracy"]) for c in curve], args.output.with_suffix(".png")
    )
    record(
        "accuracy",
        "Accuracy of the default model",
        "\n".join(lines) + "\n",
        args.output,
        {f"test_accuracy_epoch_{i}": e["accuracy"] for i, e in enumerate(per_epoch, start=1)},
        plots=[plot],
        experiment=args.experiment,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
