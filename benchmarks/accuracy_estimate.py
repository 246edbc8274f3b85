"""Accuracy without labels: the server's estimate and the monitor's domain classifier on
shifted AG News streams, against the true accuracy.

Each stream is `--window` texts of the official test split (never trained on), served
through `python -m serving` (a fresh server per stream, so its drift window holds that
stream alone). The estimate is read from its `/metrics` (distrinews_estimated_accuracy,
with its 95% interval); the true accuracy is the answers' against the stream's labels; the
domain classifier (distrinews.monitor.text_drift) compares the stream's texts with the
version's reference texts. The streams:

- like the reference: a random sample;
- one class over-represented: 70% Sports;
- headlines only: each text cut to its first 8 words;
- reformatted: lower case, punctuation swapped or dropped, HTML entities and extra
  spaces, as another feed's formatting would be;
- concept shift: the same texts as the first stream, with half of World and Business
  swapped in the labels (what the model cannot see without them).

And the estimate's cost: the server's per-prediction work is unchanged (the drift window
already held each confidence), so its cost is the scrape's, timed here per window.

    python -m benchmarks.accuracy_estimate --model <int8 folder exported with its profile>
"""

import argparse
import os
import re
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import DATA, record
from devkit.servers import Server
from distrinews.monitor.text_drift import MIN_TEXTS, TextDrift, text_drift
from distrinews.runtime.accuracy_estimate import estimate_accuracy
from distrinews.runtime.labels import LABELS
from distrinews.runtime.reference_profile import read_profile, read_reference_texts


def streams(test: pd.DataFrame, size: int, seed: int) -> dict[str, pd.DataFrame]:
    """Each stream's texts and true labels (class ids)."""
    rng = np.random.default_rng(seed)
    like = test.sample(size, random_state=seed)
    sports = test[test["label"] == 1].sample(int(0.7 * size), random_state=seed)
    others = test[test["label"] != 1].sample(size - len(sports), random_state=seed)
    swapped = like["label"].to_numpy().copy()
    swap = rng.random(size) < 0.5
    world, business = swapped == 0, swapped == 2
    swapped[world & swap], swapped[business & swap] = 2, 0
    return {
        "like the reference": like,
        "one class over-represented (70% Sports)": pd.concat([sports, others]).sample(
            frac=1, random_state=seed
        ),
        "headlines only (8 words)": like.assign(
            text=like["text"].str.split().str[:8].str.join(" ")
        ),
        "reformatted": like.assign(text=like["text"].map(reformat)),
        "concept shift (half of World and Business swapped)": like.assign(label=swapped),
    }


def reformat(text: str) -> str:
    """Another feed's formatting of the same text."""
    text = text.lower().replace("&", "&amp;").replace(" - ", " -- ")
    text = re.sub(r"[.,;:]", lambda m: {".": " .", ",": "", ";": " ;", ":": " -"}[m[0]], text)
    return re.sub(r"\s+", "  ", text).replace("(", "[ ").replace(")", " ]")


def served(model: str, stream: pd.DataFrame, window: int) -> dict[str, float]:
    """The stream through a fresh server: true accuracy, and the estimate from /metrics."""
    server = Server(model, dict(os.environ), access_log=False, drift_window=window)
    try:
        server.wait_ready(timeout=120)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            answers = [client.post("/predict", json={"text": t}).json() for t in stream["text"]]
            scraped = client.get("/metrics").text
    finally:
        server.stop()
    predicted = np.array([LABELS.index(a["label"]) for a in answers])
    gauges = {
        sample.name: sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name.startswith("distrinews_estimated_accuracy") and "class" not in sample.name
    }
    return {
        "true": float((predicted == stream["label"].to_numpy()).mean()),
        "estimate": gauges["distrinews_estimated_accuracy"],
        "low": gauges["distrinews_estimated_accuracy_low"],
        "high": gauges["distrinews_estimated_accuracy_high"],
        "confidences": [a["confidence"] for a in answers],
    }


def domain_cells(drift: TextDrift | None) -> str:
    """The domain classifier's three cells ("n/a" with too few texts a side)."""
    if drift is None:
        return f"n/a (under {MIN_TEXTS} texts a side) | | "
    return (
        f"{drift.auc:.3f} | {', '.join(drift.window_words[:6])} | "
        f"{', '.join(drift.reference_words[:6])}"
    )


def scrape_cost(confidences: list[float], accuracy_map: dict | None, repeats: int = 200) -> float:
    """Milliseconds to estimate a window of these confidences, as a scrape does."""
    values = np.array(confidences)
    start = time.perf_counter()
    for _ in range(repeats):
        estimate_accuracy(values, accuracy_map)
    return 1000 * (time.perf_counter() - start) / repeats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--experiment", default="benchmarks")
    parser.add_argument("--output", default=str(Path(__file__).with_suffix(".md")))
    args = parser.parse_args(argv)
    folder = Path(args.model)
    profile, reference = read_profile(folder), read_reference_texts(folder)
    if not profile or not profile.get("accuracy_map") or not reference:
        parser.error(f"{folder} has no accuracy map or reference texts: export it again")
    test = pd.read_parquet(Path(args.data) / "test.parquet")
    lines = [
        f"Model `{folder.name}`; {args.window} test-split texts per stream, each through its own "
        "server; the estimate from its /metrics, the truth from the answers against the "
        "stream's labels. Domain AUC: the monitor's classifier against the version's "
        f"{len(reference)} reference texts.",
        "",
        "| stream | true accuracy | estimated | 95% interval | error (points) | inside | "
        "domain AUC | most like the stream | most like the reference |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    metrics: dict[str, float] = {}
    costs = []
    for i, (name, stream) in enumerate(streams(test, args.window, args.seed).items()):
        figures = served(args.model, stream, args.window)
        drift = text_drift(reference, stream["text"].tolist())
        costs.append(scrape_cost(figures["confidences"], profile["accuracy_map"]))
        error = 100 * (figures["estimate"] - figures["true"])
        inside = figures["low"] <= figures["true"] <= figures["high"]
        lines.append(
            f"| {name} | {figures['true']:.4f} | {figures['estimate']:.4f} | "
            f"[{figures['low']:.4f}, {figures['high']:.4f}] | {error:+.2f} | "
            f"{'yes' if inside else '**no**'} | {domain_cells(drift)} |"
        )
        metrics[f"stream{i}_error_points"] = error
        if drift is not None:
            metrics[f"stream{i}_domain_auc"] = drift.auc
    per_prediction = max(costs) / args.window
    lines += [
        "",
        f"The estimate's cost: nothing per prediction on the request path (the drift window "
        f"already held each confidence); a scrape computes it over the {args.window}-prediction "
        f"window in {max(costs):.3f} ms at most here, {1000 * per_prediction:.3f} us per "
        "prediction in the window.",
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
