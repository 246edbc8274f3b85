"""Training throughput: our DDP pipeline vs a plain Hugging Face `Trainer` script, same work.

Both sides train the same model on the same rows, with the same per-process
batch size, max length, learning rate, warm-up and schedule, for one pass
over the rows; each side is a fresh process. The `Trainer` runs as its usual
CPU recipe does: one process using every core, MLflow autologging on, padded
to max length, and again with its dynamic padding (DataCollatorWithPadding),
in fp32 as it defaults to and in bf16 as ours computes on a CPU with bf16.
Ours runs at its default (one process per core) and at one process with
every core, which takes exactly the `Trainer`'s steps. The loss reached is
the held-out loss on the same test rows, scored by the same code for all.

    python -m benchmarks.train_vs_trainer --rows 1920 --rounds 2
    python -m benchmarks.train_vs_trainer --trainers dynamic   # one Trainer recipe
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import DATA, REPO, median_of, record, train_with_pipeline, unique_name
from distrinews.config import DEFAULT_MODEL, DataConfig, TrainConfig

SIDES = ("ours (2 processes x 1 thread)", "ours (1 process x 2 threads)")
TRAINER_SIDES = {
    "Trainer, pad to max length": "max_length",
    "Trainer, dynamic padding": "dynamic",
    "Trainer, dynamic padding, bf16": "dynamic_bf16",
}


def trainer_side(args: argparse.Namespace) -> dict[str, float]:
    """The Trainer recipe, in this process. Returns its figures."""
    import datasets
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from distrinews.data.splits import load_splits
    from distrinews.train.evaluation import evaluate_frame
    from distrinews.train.model import load_model_and_tokenizer

    start = time.perf_counter()
    splits = load_splits(
        DataConfig(
            data=args.data,
            max_length=args.max_length,
            max_train_rows=args.rows,
            max_eval_rows=args.eval_rows,
        ),
        args.seed,
    )
    torch.manual_seed(args.seed)  # the same new head as our pipeline's
    model, tokenizer = load_model_and_tokenizer(args.model, splits.labels)
    padding = "max_length" if args.trainer_side == "max_length" else False

    def tokenize(batch: dict) -> dict:
        return tokenizer(
            batch["text"], truncation=True, max_length=args.max_length, padding=padding
        )

    train = datasets.Dataset.from_pandas(splits.train[["text", "label"]])
    train = train.map(tokenize, batched=True, remove_columns=["text"])
    with tempfile.TemporaryDirectory() as output_dir:
        training_args = TrainingArguments(
            output_dir=output_dir,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr,
            warmup_ratio=TrainConfig.warmup_ratio,
            weight_decay=TrainConfig.weight_decay,
            lr_scheduler_type="linear",
            num_train_epochs=1,
            logging_steps=10,
            save_strategy="no",
            report_to=["mlflow"],
            use_cpu=True,
            seed=args.seed,
            disable_tqdm=True,
            bf16=args.trainer_side.endswith("bf16"),
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=train,
            data_collator=DataCollatorWithPadding(tokenizer),
        )
        result = trainer.train()
    held_out, _ = evaluate_frame(model, tokenizer, splits.test, args.max_length)
    return {
        "samples_per_s": result.metrics["train_samples_per_second"],
        "wall_s": time.perf_counter() - start,
        "steps": result.global_step,
        "test_loss": held_out["loss"],
        "test_accuracy": held_out["accuracy"],
    }


def run_trainer(padding: str, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, "-m", "benchmarks.train_vs_trainer", "--trainer-side", padding]
    for key in ("data", "model", "rows", "eval_rows", "batch_size", "lr", "max_length", "seed"):
        command += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    start = time.perf_counter()
    result = subprocess.run(
        command,
        cwd=REPO,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ,
        timeout=3600,
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return figures | {"wall_s": time.perf_counter() - start}


def run_ours(nproc: int, threads: int, args: argparse.Namespace, work: Path) -> dict[str, float]:
    run, wall = train_with_pipeline(
        nproc,
        args.experiment,
        unique_name(f"vs-trainer-{nproc}x{threads}"),
        threads=threads,
        data=args.data,
        model=args.model,
        max_train_rows=args.rows,
        max_eval_rows=args.eval_rows,
        epochs=1,
        batch_size=args.batch_size,
        lr=args.lr,
        max_length=args.max_length,
        seed=args.seed,
        output_dir=work / f"ours-{nproc}x{threads}",
    )
    metrics = run.data.metrics
    return {
        "samples_per_s": metrics["train/epoch_samples_per_second"],
        "wall_s": wall,
        "steps": -(-args.rows // (args.batch_size * nproc)),
        "test_loss": metrics["test/loss"],
        "test_accuracy": metrics["test/accuracy"],
    }


def table(results: dict[str, dict], rounds: int, args: argparse.Namespace) -> str:
    fastest_trainer = max(trainer_sides(args), key=lambda s: results[s]["samples_per_s"])
    base = results[fastest_trainer]["samples_per_s"]
    lines = [
        f"Model `{args.model}`, {args.rows} training rows (one pass), batch {args.batch_size} "
        f"per process, max length {args.max_length}, lr {args.lr}, linear schedule with 6% "
        f"warm-up. Held-out loss and accuracy on {args.eval_rows} test rows. Medians over "
        f"{rounds} alternating rounds. Ours computes at its default precision (`auto`: bf16 "
        "autocast on a CPU with AVX512-BF16, as here).",
        "",
        "| training | optimizer steps | samples/s (train loop) | vs fastest Trainer | "
        "wall time of the process (s) | held-out loss | held-out accuracy |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['steps']:.0f} | {r['samples_per_s']:.1f} | "
            f"{r['samples_per_s'] / base:.2f}x | {r['wall_s']:.0f} | {r['test_loss']:.4f} | "
            f"{r['test_accuracy']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def trainer_sides(args: argparse.Namespace) -> dict[str, str]:
    """The Trainer recipes chosen with --trainers: table name -> padding."""
    return {name: padding for name, padding in TRAINER_SIDES.items() if padding in args.trainers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--rows", type=int, default=1920, help="training rows, one pass")
    parser.add_argument("--eval-rows", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--max-length", type=int, default=DataConfig.max_length)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "train_vs_trainer.md")
    parser.add_argument(
        "--trainers",
        nargs="+",
        choices=list(TRAINER_SIDES.values()),
        default=list(TRAINER_SIDES.values()),
        help="the Trainer recipes to run (default: all)",
    )
    parser.add_argument(
        "--trainer-side", choices=list(TRAINER_SIDES.values()), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)

    if args.trainer_side:  # the subprocess that runs one Trainer side
        print(json.dumps(trainer_side(args)))
        return 0

    os.environ["MLFLOW_EXPERIMENT_NAME"] = args.experiment  # where the Trainer autologs
    trainers = trainer_sides(args)
    per_side: dict[str, list[dict]] = {name: [] for name in (*SIDES, *trainers)}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.rounds):
            per_side[SIDES[0]].append(run_ours(2, 1, args, Path(work)))
            per_side[SIDES[1]].append(run_ours(1, 2, args, Path(work)))
            for name, padding in trainers.items():
                per_side[name].append(run_trainer(padding, args))
    results = {name: median_of(rounds) for name, rounds in per_side.items()}
    fastest_trainer = max(results[s]["samples_per_s"] for s in trainers)
    record(
        "train_vs_trainer",
        "Training throughput: our pipeline vs Hugging Face Trainer",
        table(results, args.rounds, args),
        args.output,
        {
            "ours_samples_per_s": results[SIDES[0]]["samples_per_s"],
            "trainer_samples_per_s": fastest_trainer,
            "speedup_vs_trainer": results[SIDES[0]]["samples_per_s"] / fastest_trainer,
        },
        experiment=args.experiment,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
