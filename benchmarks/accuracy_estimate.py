"""Accuracy without labels: the server's estimate and the monitor step on shifted AG News
streams, against the true accuracy.

Each stream is `--windows` windows of `--window` texts of the official test split (never
trained on), served through `python -m serving` (a server per stream, its drift window one
window long, so each scrape of its `/metrics` holds one window alone). The estimate is read
from /metrics (distrinews_estimated_accuracy, with its 95% interval) after each window; the
true accuracy is the answers' against the window's labels, which are then given as
feedback. The stream's log then goes through the monitor step (run_monitor, a real MLflow
run): its concept-shift flag, and its domain classifier (distrinews.monitor.text_drift)
against the version's reference texts. The streams:

- like the reference: a random sample;
- one class over-represented: 70% Sports;
- headlines only: each text cut to its first 8 words;
- reformatted: lower case, punctuation swapped or dropped, HTML entities and extra
  spaces, as another feed's formatting would be;
- no headline: each text's last 12 words (beyond the issue's list: a shortening the
  accuracy map's copies were not made for);
- concept shift: the texts of the first stream, with half of World and Business swapped in
  the labels (what the model cannot see without them).

And the estimate's cost: the server's per-prediction work is unchanged (the drift window
already held each confidence and token count), so its cost is the scrape's, timed here per
window.

    python -m benchmarks.accuracy_estimate --model <int8 folder exported with its profile>
"""

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import DATA, record
from devkit.servers import Server
from distrinews.config import MonitorConfig
from distrinews.monitor.step import run_monitor
from distrinews.runtime.accuracy_estimate import estimate_accuracy
from distrinews.runtime.labels import LABELS
from distrinews.runtime.prediction_store import PREDICTIONS, open_store
from distrinews.runtime.reference_profile import read_profile, read_reference_texts

#: The feedback token of the benchmark's servers (127.0.0.1 only, stopped at the end).
TOKEN = "bench"
#: The acceptance goal: |estimated - true| within this many points on a window.
GOAL_POINTS = 1.5


def streams(test: pd.DataFrame, size: int, seed: int) -> dict[str, pd.DataFrame]:
    """One window of each stream: its texts and true labels (class ids)."""
    rng = np.random.default_rng(seed)
    like = test.sample(size, random_state=seed)
    sports = test[test["label"] == 1].sample(int(0.7 * size), random_state=seed)
    others = test[test["label"] != 1].sample(size - len(sports), random_state=seed)
    swapped = like["label"].to_numpy().copy()
    swap = rng.random(size) < 0.5
    world, business = swapped == 0, swapped == 2
    swapped[world & swap], swapped[business & swap] = 2, 0
    words = like["text"].str.split()
    return {
        "like the reference": like,
        "one class over-represented (70% Sports)": pd.concat([sports, others]).sample(
            frac=1, random_state=seed
        ),
        "headlines only (8 words)": like.assign(text=words.str[:8].str.join(" ")),
        "reformatted": like.assign(text=like["text"].map(reformat)),
        "no headline (last 12 words)": like.assign(text=words.str[-12:].str.join(" ")),
        "concept shift (half of World and Business swapped)": like.assign(label=swapped),
    }


def reformat(text: str) -> str:
    """Another feed's formatting of the same text."""
    text = text.lower().replace("&", "&amp;").replace(" - ", " -- ")
    text = re.sub(r"[.,;:]", lambda m: {".": " .", ",": "", ";": " ;", ":": " -"}[m[0]], text)
    return re.sub(r"\s+", "  ", text).replace("(", "[ ").replace(")", " ]")


def served(model: str, windows: list[pd.DataFrame], store: str) -> list[dict]:
    """The windows through one server logging to `store`, each labelled once answered:
    per window, its true accuracy and the estimate from /metrics."""
    size = len(windows[0])
    server = Server(
        model,
        dict(os.environ),
        access_log=False,
        drift_window=size,
        prediction_log=store,
        feedback_token=TOKEN,
        log_texts="true",
    )
    figures = []
    try:
        server.wait_ready(timeout=120)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            figures = [served_window(client, window) for window in windows]
    finally:
        server.stop()
    return figures


def served_window(client: httpx.Client, window: pd.DataFrame) -> dict:
    """One window's texts, then its labels as feedback, then the scrape."""
    answers = [client.post("/predict", json={"text": t}).json() for t in window["text"]]
    for answer, label in zip(answers, window["label"], strict=True):
        body = {"prediction_id": answer["prediction_id"], "label": LABELS[label]}
        auth = {"Authorization": f"Bearer {TOKEN}"}
        client.post("/feedback", json=body, headers=auth).raise_for_status()
    scraped = client.get("/metrics").text
    predicted = np.array([LABELS.index(a["label"]) for a in answers])
    gauges = {
        sample.name: sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name.startswith("distrinews_estimated_accuracy") and "class" not in sample.name
    }
    return {
        "true": float((predicted == window["label"].to_numpy()).mean()),
        "estimate": gauges["distrinews_estimated_accuracy"],
        "low": gauges["distrinews_estimated_accuracy_low"],
        "high": gauges["distrinews_estimated_accuracy_high"],
    }


def monitored(store: str, model: str, experiment: str) -> tuple[bool, dict | None]:
    """The monitor step over the stream's log: whether it flags a concept shift, and its
    domain classifier's result (None with too few texts)."""
    mlflow.set_experiment(experiment)
    run_monitor(MonitorConfig(store=store, since="1h", reference=model))
    run = mlflow.last_active_run()
    flagged = run.data.metrics.get("monitor/concept_shift") == 1.0
    try:
        drift = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/monitor/text_drift.json")
    except Exception:  # noqa: BLE001  (absent: too few texts a side)
        drift = None
    return flagged, drift


def domain_cells(drift: dict | None) -> str:
    """The domain classifier's three cells ("n/a" with too few texts a side)."""
    if drift is None:
        return "n/a (too few texts a side) | | "
    return (
        f"{drift['auc']:.3f} | {', '.join(drift['window_words'][:6])} | "
        f"{', '.join(drift['reference_words'][:6])}"
    )


def stream_row(name: str, figures: list[dict], flagged: bool, drift: dict | None) -> str:
    """The stream's table row over its windows."""
    errors = np.array([100 * (f["estimate"] - f["true"]) for f in figures])
    inside = sum(f["low"] <= f["true"] <= f["high"] for f in figures)
    within = int((np.abs(errors) <= GOAL_POINTS).sum())
    return (
        f"| {name} | {np.mean([f['true'] for f in figures]):.4f} | "
        f"{np.mean([f['estimate'] for f in figures]):.4f} | {errors.mean():+.2f} | "
        f"{errors.min():+.2f} to {errors.max():+.2f} | {within}/{len(figures)} | "
        f"{inside}/{len(figures)} | {'**yes**' if flagged else 'no'} | {domain_cells(drift)} |"
    )


def scrape_cost(store: str, accuracy_map: dict, window: int, repeats: int = 200) -> float:
    """Milliseconds to estimate a window of the log's last predictions (their confidences
    and token counts), as a scrape does."""
    engine = open_store(store)
    with engine.connect() as connection:
        rows = pd.read_sql(sa.select(PREDICTIONS.c.confidence, PREDICTIONS.c.tokens), connection)
    engine.dispose()
    confidence, tokens = (
        rows["confidence"].to_numpy()[-window:],
        rows["tokens"].to_numpy()[-window:],
    )
    start = time.perf_counter()
    for _ in range(repeats):
        estimate_accuracy(confidence, accuracy_map, tokens)
    return 1000 * (time.perf_counter() - start) / repeats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", default=str(Path(__file__).with_suffix(".md")))
    args = parser.parse_args(argv)
    folder = Path(args.model)
    profile, reference = read_profile(folder), read_reference_texts(folder)
    if not profile or not profile.get("accuracy_map") or not reference:
        parser.error(f"{folder} has no accuracy map or reference texts: export it again")
    test = pd.read_parquet(Path(args.data) / "test.parquet")
    drawn = [streams(test, args.window, args.seed + w) for w in range(args.windows)]
    lines = [
        f"Model `{folder.name}`; per stream, {args.windows} windows of {args.window} "
        "test-split texts through one server; the estimate from its /metrics after each "
        "window, the truth from the answers against the window's labels (then given as "
        "feedback). Concept shift flagged and domain AUC: the monitor step over the stream's "
        f"log, its classifier against the version's {len(reference)} reference texts.",
        "",
        "| stream | true accuracy | estimated | mean error (points) | error by window | "
        f"windows within {GOAL_POINTS} | inside the interval | concept shift flagged | "
        "domain AUC | most like the stream | most like the reference |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    metrics: dict[str, float] = {}
    costs = []
    with tempfile.TemporaryDirectory(prefix="distrinews-bench-") as work:
        for i, name in enumerate(drawn[0]):
            store = f"sqlite:///{work}/stream{i}.db"
            figures = served(args.model, [windows[name] for windows in drawn], store)
            flagged, drift = monitored(store, args.model, args.experiment)
            costs.append(scrape_cost(store, profile["accuracy_map"], args.window))
            lines.append(stream_row(name, figures, flagged, drift))
            errors = [100 * (f["estimate"] - f["true"]) for f in figures]
            metrics[f"stream{i}_error_points"] = float(np.mean(errors))
            metrics[f"stream{i}_max_error_points"] = float(np.max(np.abs(errors)))
            metrics[f"stream{i}_concept_shift"] = float(flagged)
            if drift is not None:
                metrics[f"stream{i}_domain_auc"] = drift["auc"]
    per_prediction = max(costs) / args.window
    lines += [
        "",
        "The estimate's cost: nothing per prediction on the request path (the drift window "
        "already held each confidence and token count); a scrape computes it over the "
        f"{args.window}-prediction window in {max(costs):.3f} ms at most here, "
        f"{1000 * per_prediction:.3f} us per prediction in the window.",
    ]
    metrics["scrape_ms"] = max(costs)
    record(
        "accuracy_estimate",
        "Accuracy without labels on shifted streams",
        "\n".join(lines) + "\n",
        Path(args.output),
        metrics,
        experiment=args.experiment,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
