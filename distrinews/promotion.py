"""The Model Registry: what an exported version says about itself, and the promotion gate.

Export registers each int8 ONNX model as a new version with its evidence as
tags. `promote` scores a candidate version beside the current `champion` on
the same test split, through the classifier the server runs, and moves the
alias only if the candidate is as accurate and fast enough.
"""

import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distrinews.config import DataConfig, PromoteConfig
from distrinews.errors import ModelFolderError, UserError
from distrinews.mlflow_runs import check_tracking_server, log_new_params, log_split, step_run
from distrinews.runtime.cpu import available_cpus, cpu_name
from distrinews.runtime.model_source import (
    ModelSource,
    alias_version,
    first_line,
    local_model_folder,
)
from distrinews.runtime.onnx_classifier import OnnxClassifier
from distrinews.runtime.scoring import batch1_latency_ms, batched_predictions, percentile
from distrinews.splits import load_splits
from distrinews.version_evidence import UNTRAINED

if TYPE_CHECKING:
    import pandas as pd

#: The alias the server follows and `promote` moves.
CHAMPION = "champion"

#: Float slack when comparing accuracy points with a limit: 100 * (182/200 - 181/200)
#: is 0.5000000000000004, and a drop of exactly the limit is allowed.
POINTS_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Score:
    """A registered version scored on the test split by the server's classifier."""

    accuracy: float
    latency_p95_ms: float = float("nan")
    production_accuracy: float | None = None  # on the candidate's production slice, if any


def run_promote(cfg: PromoteConfig, data_cfg: DataConfig) -> str:
    """Score the candidate (and the champion), decide, move the alias if won, record it.

    What is recorded is what happened: a version is tagged `promoted` only once
    the alias points to it. Returns what was done; a refusal raises UserError
    once it is recorded.
    """
    import mlflow

    check_tracking_server()
    client = mlflow.MlflowClient()
    name = cfg.registered_model
    versions = {"candidate": resolve_version(client, name, cfg.version)}
    if (holder := champion_version(name)) is not None:
        versions["champion"] = holder
    candidate_tags = client.get_model_version(name, versions["candidate"]).tags
    with (
        step_run("promote", f"promote {name} v{versions['candidate']}"),
        tempfile.TemporaryDirectory(prefix="distrinews-promote-") as work,
    ):
        log_new_params(
            asdict(cfg) | {"version": versions["candidate"], "champion_version": holder or ""}
        )
        models = open_versions(name, versions, Path(work))
        if candidate_tags.get(UNTRAINED) == "true" and not cfg.force:
            promoted, reason, scores = False, UNTRAINED_REASON, {}
        else:
            production = production_slice(candidate_tags, models["candidate"].labels, Path(work))
            promoted, reason, scores = judge(cfg, data_cfg, models, versions, production)
        if promoted and (lost := move_alias(client, name, versions)):
            promoted, reason = False, lost
        record_decision(client, name, versions, scores, promoted, reason)
        if not promoted:
            raise UserError(f"version {versions['candidate']} not promoted: {reason}")
    return f"{name}@{CHAMPION} -> version {versions['candidate']}: {reason}"


UNTRAINED_REASON = (
    "its classification head was never trained (an encoder exported with -P checkpoint=, "
    "to time it); export a trained model, or pass -P force=true"
)


def open_versions(name: str, versions: dict[str, str], work: Path) -> dict[str, OnnxClassifier]:
    """The candidate and the champion, downloaded into `work`. A champion that no longer
    loads is left out of the models (judged as if there were none), so it can be
    replaced; `versions` still names it, as the alias holder `move_alias` expects."""
    models = {"candidate": open_version(name, versions["candidate"], work / "candidate")}
    if "champion" in versions:
        try:
            models["champion"] = open_version(name, versions["champion"], work / "champion")
        except UserError as err:
            print(f"note: the champion does not load, judged as absent: {err}", file=sys.stderr)
    return models


def move_alias(client: Any, name: str, versions: dict[str, str]) -> str | None:
    """Point `champion` at the candidate, unless another promotion moved it meanwhile.

    Returns None once moved, else why not. MLflow has no compare-and-set for an
    alias: the holder is read again right before and right after the move.
    """
    if (before := champion_version(name)) != versions.get("champion"):
        return f"{name}@{CHAMPION} moved to version {before} during this promotion; run it again"
    client.set_registered_model_alias(name, CHAMPION, versions["candidate"])
    if (after := champion_version(name)) != versions["candidate"]:
        return f"{name}@{CHAMPION} was moved to version {after} by a concurrent promotion"
    return None


def judge(
    cfg: PromoteConfig,
    data_cfg: DataConfig,
    models: dict[str, OnnxClassifier],
    versions: dict[str, str],
    production: "pd.DataFrame | None" = None,
) -> tuple[bool, str, dict[str, Score]]:
    """(promote?, why, scores): the labels first, then both models on one test split, and on
    the candidate's production slice when its train run held one out."""
    candidate, champion = models["candidate"], models.get("champion")
    if champion is not None and champion.labels != candidate.labels:
        reason = (
            f"it predicts {', '.join(candidate.labels)}, the champion (version "
            f"{versions['champion']}) {', '.join(champion.labels)}; register it under another name"
        )
        return False, reason, {}
    test = load_splits(data_cfg, seed=0, model_labels=candidate.labels).test
    if test.empty:
        raise UserError(f"the test split of {data_cfg.data} is empty: nothing to score on")
    log_split(test, data_cfg.data, "test")
    texts, labels = test["text"].tolist(), test["label"].to_numpy()
    # Both timed here: the budget is about the machine the gate runs on, and a champion
    # over it (a slower CPU than the one it was exported on) may be replaced.
    scores = {"candidate": score(candidate, texts, labels, cfg.latency_texts)}
    if champion is not None:
        scores["champion"] = score(champion, texts, labels, cfg.latency_texts)
    if production is not None:
        scores = {
            role: replace(
                s,
                production_accuracy=accuracy_on(
                    models[role], production["text"].tolist(), production["label"].to_numpy()
                ),
            )
            for role, s in scores.items()
        }
    return (*decide(cfg, scores["candidate"], scores.get("champion"), versions), scores)


def production_slice(
    candidate_tags: dict[str, str], labels: tuple[str, ...], work: Path
) -> "pd.DataFrame | None":
    """The production slice the candidate's train run held out of its feedback (class ids in
    `label`), logged as this run's `production` dataset; None if it had none."""
    import mlflow
    import pandas as pd

    from distrinews.feedback_data import PRODUCTION_ARTIFACT
    from distrinews.mlflow_runs import download_if_logged, log_feedback_split

    run_id = candidate_tags.get("source_run_id")
    path = run_id and download_if_logged(run_id, PRODUCTION_ARTIFACT, work / "production")
    if not path:
        return None
    frame = pd.read_parquet(path)
    if frame.empty:
        return None
    params = mlflow.get_run(run_id).data.params
    log_feedback_split(
        frame, params.get("feedback", ""), params.get("feedback_since", ""), "production"
    )
    return frame.assign(label=frame["label"].map({name: i for i, name in enumerate(labels)}))


def accuracy_on(model: OnnxClassifier, texts: list[str], labels: np.ndarray) -> float:
    """Share of `texts` the classifier the server runs labels as `labels`."""
    return float((batched_predictions(model.logits, texts) == labels).mean())


def resolve_version(client: Any, name: str, version: str) -> str:
    """The version asked for, or the newest; UserError if there is none."""
    from mlflow.exceptions import MlflowException

    try:
        if version:
            # As text: a SQLite registry answers numbers, a tracking server strings.
            return str(client.get_model_version(name, version).version)
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as err:
        raise UserError(
            f"no version {version or ''} of registered model {name!r}: "
            f"{first_line(err)}; export a model first"
        ) from err
    if not versions:
        raise UserError(f"registered model {name!r} has no versions; export a model first")
    return str(max(int(v.version) for v in versions))


def champion_version(name: str) -> str | None:
    """The version `champion` points to, None if the alias is not set yet; a registry that
    does not answer or refuses must not read as "no champion" (it would skip the gate)."""
    try:
        return alias_version(name, CHAMPION)
    except ModelFolderError as err:
        raise UserError(f"cannot read {name}@{CHAMPION}: {err}") from err


def open_version(name: str, version: str, into: Path) -> OnnxClassifier:
    """The version's ONNX model, downloaded into `into`, in the classifier the server runs."""
    try:
        folder = local_model_folder(ModelSource(f"models:/{name}/{version}"), into)
        return OnnxClassifier(folder, threads=available_cpus())
    except ModelFolderError as err:
        raise UserError(f"version {version} of {name!r} does not load: {err}") from err


def score(
    model: OnnxClassifier, texts: list[str], labels: np.ndarray, latency_texts: int = 0
) -> Score:
    """Test accuracy, and with `latency_texts` the batch-1 p95 (after a short warm-up)."""
    accuracy = accuracy_on(model, texts, labels)
    if not latency_texts:
        return Score(accuracy)
    batch1_latency_ms(model.logits, texts[:10])
    timings = batch1_latency_ms(model.logits, texts[:latency_texts])
    return Score(accuracy, percentile(timings, 95))


def decide(
    cfg: PromoteConfig, candidate: Score, champion: Score | None, versions: dict[str, str]
) -> tuple[bool, str]:
    """(promote?, why): a candidate over the latency budget never; else no accuracy drop
    past the limit unless forced, a larger one (max_budget_drop) allowed when the champion
    is over the budget and the candidate within it."""
    p95 = f"p95 {candidate.latency_p95_ms:.1f} ms"
    if candidate.latency_p95_ms > cfg.max_p95_ms:
        return False, f"{p95} is over max_p95_ms={cfg.max_p95_ms:g}, whatever its accuracy"
    if champion is None and "champion" in versions:
        replaced = f"the champion (version {versions['champion']}) does not load: replaced"
        return True, f"{replaced}; {p95} within {cfg.max_p95_ms:g} ms"
    if champion is None:
        return True, f"first champion; {p95} within {cfg.max_p95_ms:g} ms"
    versus = (
        f"test accuracy {candidate.accuracy:.4f} vs the champion's (version "
        f"{versions['champion']}) {champion.accuracy:.4f}"
    )
    if candidate.production_accuracy is not None and champion.production_accuracy is not None:
        versus += (
            f"; production accuracy {candidate.production_accuracy:.4f} vs "
            f"{champion.production_accuracy:.4f}"
        )
    if cfg.force:
        return True, f"forced: {versus}, not gated; {p95}"
    limits = drop_limits(cfg, champion)
    for kind, drop, (limit, setting) in (
        ("test", 100 * (champion.accuracy - candidate.accuracy), limits["test"]),
        ("production", production_points(candidate, champion), limits["production"]),
    ):
        if drop > limit + POINTS_TOLERANCE:
            return False, f"{versus}: {drop:.2f} {kind} points lower ({setting}={limit:g})"
    budget = f"{p95} within {cfg.max_p95_ms:g} ms"
    if champion.latency_p95_ms > cfg.max_p95_ms:
        budget += f", the champion's p95 {champion.latency_p95_ms:.1f} ms over it"
    return True, f"{versus}; {budget}"


def drop_limits(cfg: PromoteConfig, champion: Score) -> dict[str, tuple[float, str]]:
    """How many points the candidate may lose on test and on production, and which setting
    says so: more (max_budget_drop) when the champion misses the budget, the candidate not."""
    limits = {
        "test": (cfg.max_accuracy_drop, "max_accuracy_drop"),
        "production": (cfg.max_production_drop, "max_production_drop"),
    }
    if champion.latency_p95_ms > cfg.max_p95_ms:  # NaN (not timed) compares False
        limits = {
            kind: max(limit, (cfg.max_budget_drop, "max_budget_drop"))
            for kind, limit in limits.items()
        }
    return limits


def production_points(candidate: Score, champion: Score) -> float:
    """How many points the candidate is below the champion on production (0: not scored)."""
    if candidate.production_accuracy is None or champion.production_accuracy is None:
        return 0.0
    return 100 * (champion.production_accuracy - candidate.production_accuracy)


def record_decision(
    client: Any,
    name: str,
    versions: dict[str, str],
    scores: dict[str, Score],
    promoted: bool,
    reason: str,
) -> None:
    """The decision, the scores and the reason: on the promote run and on the version."""
    import mlflow

    metrics = {f"{role}/accuracy": s.accuracy for role, s in scores.items()}
    metrics |= {
        f"{role}/production_accuracy": s.production_accuracy
        for role, s in scores.items()
        if s.production_accuracy is not None
    }
    metrics |= {
        f"{role}/latency_p95_ms": s.latency_p95_ms
        for role, s in scores.items()
        if not np.isnan(s.latency_p95_ms)
    }
    mlflow.log_metrics(metrics)
    decision = "promoted" if promoted else "refused"
    mlflow.set_tags({"decision": decision, "reason": reason})
    tags = {
        "promotion": decision,
        "promotion_reason": reason,
        "promotion_run_id": mlflow.active_run().info.run_id,
        "promotion_champion_version": versions.get("champion", ""),
        # Latency belongs to a CPU: the same model is 3-7 ms on one and 20-30 on another.
        "promotion_cpu": f"{cpu_name()}, {available_cpus()} vCPUs",
    }
    tags |= {f"promotion_{role}_accuracy": f"{s.accuracy:.4f}" for role, s in scores.items()}
    tags |= {
        f"promotion_{role}_latency_p95_ms": f"{s.latency_p95_ms:.2f}"
        for role, s in scores.items()
        if not np.isnan(s.latency_p95_ms)
    }
    tags |= {
        f"promotion_{role}_production_accuracy": f"{s.production_accuracy:.4f}"
        for role, s in scores.items()
        if s.production_accuracy is not None
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, versions["candidate"], key, value)
