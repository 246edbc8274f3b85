"""The promotion gate: a registered candidate against the current `champion`, scored on
the same rows through the classifier the server runs, and the alias moved only for a
candidate shown to be good enough.

"Shown" is paired evidence: on the test split, and on the production slice the
candidate's train run held out of its feedback, the difference of the two accuracies
gets a confidence interval (distrinews.comparison), and the interval must clear
the limit (max_accuracy_drop, max_production_drop: the most points the candidate may be
worse by). A point estimate 2 points lower on 200 rows is noise; an interval says so,
and says how many rows it would take. The latency budget is a hard limit on this CPU.
"""

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distrinews.comparison import PairedComparison
from distrinews.config import DataConfig, PromoteConfig
from distrinews.data.feedback import PRODUCTION_ARTIFACT
from distrinews.data.live_pairs import LiveComparison
from distrinews.data.splits import load_splits
from distrinews.errors import UserError
from distrinews.mlflow_runs import (
    check_tracking_server,
    download_if_logged,
    log_feedback_split,
    log_new_params,
    log_split,
    step_run,
)
from distrinews.promote.evidence import UNTRAINED
from distrinews.promote.live import live_candidate, live_comparison, live_metrics, live_refusal
from distrinews.promote.registry import (
    CHAMPION,
    champion_version,
    move_alias,
    open_versions,
    read,
    registry_call,
    resolve_version,
    retire_challenger,
    write_tags,
)
from distrinews.runtime.cpu import available_cpus, cpu_name
from distrinews.runtime.onnx_classifier import OnnxClassifier
from distrinews.runtime.scoring import batch1_latency_ms, batched_predictions, percentile

if TYPE_CHECKING:
    import pandas as pd

#: The evidence the gate weighs, each with the setting that bounds it.
EVIDENCE_LIMITS = {
    "test": "max_accuracy_drop",
    "production": "max_production_drop",
    "live": "max_live_accuracy_drop",
}


@dataclass(frozen=True)
class Score:
    """A registered version scored by the server's classifier."""

    accuracy: float
    latency_p95_ms: float = float("nan")
    production_accuracy: float | None = None  # on the candidate's production slice, if any


@dataclass(frozen=True)
class Judgement:
    """What the gate decided and on what: the scores, and each paired comparison."""

    promoted: bool
    reason: str
    scores: dict[str, Score]
    evidence: dict[str, PairedComparison]
    live: LiveComparison | None = None  # with -P live_window=


def run_promote(cfg: PromoteConfig, data_cfg: DataConfig) -> str:
    """Score the candidate (and the champion), decide, record, then move the alias if won.

    What is recorded is what happened: every tag is written before the alias moves,
    and a move that fails is recorded as such. Returns what was done; a refusal
    raises UserError once it is recorded.
    """
    import mlflow

    check_tracking_server()
    client = mlflow.MlflowClient()
    name = cfg.registered_model
    live = cfg.live_window and not cfg.version  # the challenger is the candidate
    versions = {
        "candidate": live_candidate(name) if live else resolve_version(client, name, cfg.version)
    }
    if (holder := champion_version(name)) is not None:
        versions["champion"] = holder
    candidate_tags = read(
        f"read version {versions['candidate']} of {name!r}",
        lambda: client.get_model_version(name, versions["candidate"]).tags,
    )
    with (
        step_run("promote", f"promote {name} v{versions['candidate']}"),
        tempfile.TemporaryDirectory(prefix="distrinews-promote-") as work,
    ):
        log_new_params(
            asdict(cfg) | {"version": versions["candidate"], "champion_version": holder or ""}
        )
        judgement = judge_versions(cfg, data_cfg, name, versions, candidate_tags, Path(work))
        promoted, reason = record_and_move(client, name, versions, judgement)
        if not promoted:
            raise UserError(f"version {versions['candidate']} not promoted: {reason}")
        if judgement.live is not None:
            retired = retire_challenger(client, name, versions["candidate"])
            mlflow.set_tag("challenger_alias", retired)
            reason += f"; {retired}"
    return f"{name}@{CHAMPION} -> version {versions['candidate']}: {reason}"


UNTRAINED_REASON = (
    "its classification head was never trained (an encoder exported with -P checkpoint=, "
    "to time it); export a trained model, or pass -P force=true"
)


def judge_versions(
    cfg: PromoteConfig,
    data_cfg: DataConfig,
    name: str,
    versions: dict[str, str],
    candidate_tags: dict[str, str],
    work: Path,
) -> Judgement:
    """Download both versions (and the candidate's production slice) and judge them."""
    models = open_versions(name, versions, work)
    if candidate_tags.get(UNTRAINED) == "true" and not cfg.force:
        return Judgement(False, UNTRAINED_REASON, {}, {})
    production = production_slice(candidate_tags, models["candidate"].labels, work)
    live = None
    if cfg.live_window:
        live = live_comparison(cfg, name, versions, models["candidate"].labels)
    return judge(cfg, data_cfg, models, versions, production, live)


def record_and_move(
    client: Any, name: str, versions: dict[str, str], judgement: Judgement
) -> tuple[bool, str]:
    """Record the decision on the run and the version, then move the alias if it was won;
    a move that fails or loses a race is recorded on both as not promoted."""
    import mlflow

    promoted, reason = judgement.promoted, judgement.reason
    mlflow.log_metrics(
        run_metrics(judgement) | (live_metrics(judgement.live) if judgement.live else {})
    )
    mlflow.set_tags({"decision": decision_word(promoted), "reason": reason})
    write_tags(client, name, versions["candidate"], version_tags(versions, judgement))
    if promoted and (lost := try_move_alias(client, name, versions)):
        promoted, reason = False, lost
        after = "the alias did not move, but the version's tags still say promoted: fix them"
        lost_tags = {"promotion_reason": lost, "promotion": "refused"}
        write_tags(client, name, versions["candidate"], lost_tags, after)
        mlflow.set_tags({"decision": decision_word(promoted), "reason": reason})
    return promoted, reason


def try_move_alias(client: Any, name: str, versions: dict[str, str]) -> str | None:
    """`move_alias`, with a failed read of the alias before the move as one more reason
    it did not move (the tags, written already, are then set right)."""
    try:
        return move_alias(client, name, versions)
    except UserError as err:
        return str(err)


def decision_word(promoted: bool) -> str:
    return "promoted" if promoted else "refused"


def judge(
    cfg: PromoteConfig,
    data_cfg: DataConfig,
    models: dict[str, OnnxClassifier],
    versions: dict[str, str],
    production: "pd.DataFrame | None" = None,
    live: LiveComparison | None = None,
) -> Judgement:
    """The labels first, then both models on one test split, and on the candidate's
    production slice when its train run held one out: each row answered by both. With
    live evidence, its own conditions (distrinews.promote.live) and its feedback, paired,
    as one more kind of evidence."""
    candidate, champion = models["candidate"], models.get("champion")
    if champion is not None and champion.labels != candidate.labels:
        reason = (
            f"it predicts {', '.join(candidate.labels)}, the champion (version "
            f"{versions['champion']}) {', '.join(champion.labels)}; register it under another name"
        )
        return Judgement(False, reason, {}, {})
    test = load_splits(data_cfg, seed=0, model_labels=candidate.labels).test
    if test.empty:
        raise UserError(f"the test split of {data_cfg.data} is empty: nothing to score on")
    log_split(test, data_cfg.data, "test")
    rows = {"test": test}
    if production is not None:
        rows["production"] = production
    right = {role: answers_right(model, rows) for role, model in models.items()}
    # Both timed here: the budget is about the machine the gate runs on, and a champion
    # over it (a slower CPU than the one it was exported on) may be replaced.
    texts = test["text"].tolist()
    scores = {role: score(models[role], right[role], texts, cfg.latency_texts) for role in models}
    evidence = {}
    if "champion" in right:
        evidence = {
            kind: PairedComparison.of(right["candidate"][kind], right["champion"][kind])
            for kind in rows
        }
    if live is not None and (refusal := live_refusal(cfg, live)) and not cfg.force:
        return Judgement(False, refusal, scores, evidence, live)
    if live is not None:
        evidence["live"] = live.labelled
    promoted, reason = decide(cfg, scores["candidate"], scores.get("champion"), versions, evidence)
    if live is not None:
        reason += f"; live: {live.describe(paired=False)}"
    return Judgement(promoted, reason, scores, evidence, live)


def answers_right(model: OnnxClassifier, rows: dict[str, "pd.DataFrame"]) -> dict[str, np.ndarray]:
    """Per kind of evidence, which of its rows the classifier the server runs gets right."""
    return {
        kind: batched_predictions(model.logits, frame["text"].tolist()) == frame["label"].to_numpy()
        for kind, frame in rows.items()
    }


def production_slice(
    candidate_tags: dict[str, str], labels: tuple[str, ...], work: Path
) -> "pd.DataFrame | None":
    """The production slice the candidate's train run held out of its feedback (class ids in
    `label`), logged as this run's `production` dataset; None if it had none. A slice that
    could not be fetched stops the gate: judging without it would skip its limit."""
    import mlflow
    import pandas as pd

    run_id = candidate_tags.get("source_run_id")
    if not run_id:
        return None
    with registry_call(f"fetch the production slice of run {run_id}"):
        path = download_if_logged(run_id, PRODUCTION_ARTIFACT, work / "production")
        params = mlflow.get_run(run_id).data.params if path else {}
    if not path:
        return None
    frame = pd.read_parquet(path)
    if frame.empty:
        return None
    log_feedback_split(
        frame, params.get("feedback", ""), params.get("feedback_since", ""), "production"
    )
    return frame.assign(label=frame["label"].map({name: i for i, name in enumerate(labels)}))


def score(
    model: OnnxClassifier, right: dict[str, np.ndarray], texts: list[str], latency_texts: int
) -> Score:
    """Accuracies from `right`, and with `latency_texts` the batch-1 p95 (after a short
    warm-up)."""
    production = float(right["production"].mean()) if "production" in right else None
    accuracy = float(right["test"].mean())
    if not latency_texts:
        return Score(accuracy, production_accuracy=production)
    batch1_latency_ms(model.logits, texts[:10])
    timings = batch1_latency_ms(model.logits, texts[:latency_texts])
    return Score(accuracy, percentile(timings, 95), production)


def decide(
    cfg: PromoteConfig,
    candidate: Score,
    champion: Score | None,
    versions: dict[str, str],
    evidence: dict[str, PairedComparison] | None = None,
) -> tuple[bool, str]:
    """(promote?, why): a candidate over the latency budget never; else, unless forced,
    every paired comparison's interval must clear its limit: the candidate shown to be at
    most that many points worse (a larger limit, max_budget_drop, when the champion is
    over the budget and the candidate within it)."""
    p95 = f"p95 {candidate.latency_p95_ms:.1f} ms"
    if candidate.latency_p95_ms > cfg.max_p95_ms:
        return False, f"{p95} is over max_p95_ms={cfg.max_p95_ms:g}, whatever its accuracy"
    if champion is None and "champion" in versions:
        replaced = f"the champion (version {versions['champion']}) does not load: replaced"
        return True, f"{replaced}; {p95} within {cfg.max_p95_ms:g} ms"
    if champion is None:
        return True, f"first champion; {p95} within {cfg.max_p95_ms:g} ms"
    if not evidence:
        raise ValueError("a champion to beat needs paired evidence")
    versus = versus_text(candidate, champion, versions)
    if cfg.force:
        return True, f"forced: {versus}, not gated; {p95}"
    limits = drop_limits(cfg, champion)
    for kind, comparison in evidence.items():
        limit, setting = limits[kind]
        verdict = comparison.verdict(limit / 100)
        if not verdict.passed:
            why = verdict.explain(limit, setting)
            return False, f"{versus}; {kind}: {comparison.describe()}: {why}"
    shown = "; ".join(f"{kind}: {comparison.describe()}" for kind, comparison in evidence.items())
    budget = f"{p95} within {cfg.max_p95_ms:g} ms"
    if champion.latency_p95_ms > cfg.max_p95_ms:
        budget += f", the champion's p95 {champion.latency_p95_ms:.1f} ms over it"
    return True, f"{versus}; {shown}; {budget}"


def versus_text(candidate: Score, champion: Score, versions: dict[str, str]) -> str:
    text = (
        f"test accuracy {candidate.accuracy:.4f} vs the champion's (version "
        f"{versions['champion']}) {champion.accuracy:.4f}"
    )
    if candidate.production_accuracy is not None and champion.production_accuracy is not None:
        text += (
            f"; production accuracy {candidate.production_accuracy:.4f} vs "
            f"{champion.production_accuracy:.4f}"
        )
    return text


def drop_limits(cfg: PromoteConfig, champion: Score) -> dict[str, tuple[float, str]]:
    """How many points the candidate may be worse by on each kind of evidence, and which
    setting says so: more (max_budget_drop) when the champion misses the budget."""
    limits = {kind: (getattr(cfg, setting), setting) for kind, setting in EVIDENCE_LIMITS.items()}
    if champion.latency_p95_ms > cfg.max_p95_ms:  # NaN (not timed) compares False
        limits = {
            kind: max(limit, (cfg.max_budget_drop, "max_budget_drop"))
            for kind, limit in limits.items()
        }
    return limits


def run_metrics(judgement: Judgement) -> dict[str, float]:
    """The promote run's metrics: each score, and each comparison in points."""
    metrics = {}
    for role, s in judgement.scores.items():
        metrics[f"{role}/accuracy"] = s.accuracy
        if s.production_accuracy is not None:
            metrics[f"{role}/production_accuracy"] = s.production_accuracy
        if not np.isnan(s.latency_p95_ms):
            metrics[f"{role}/latency_p95_ms"] = s.latency_p95_ms
    for kind, comparison in judgement.evidence.items():
        low, high = comparison.interval()
        metrics |= {
            f"{kind}/difference_points": 100 * comparison.difference,
            f"{kind}/interval_low_points": 100 * low,
            f"{kind}/interval_high_points": 100 * high,
            f"{kind}/paired_rows": comparison.rows,
            f"{kind}/disagreements": comparison.disagreements,
            f"{kind}/mcnemar_p": comparison.p_value(),
        }
    return metrics


def version_tags(versions: dict[str, str], judgement: Judgement) -> dict[str, str]:
    """The decision, its evidence and the reason, for the version's page; `promotion`, the
    tag that says what was decided, comes last (the others explain it)."""
    import mlflow

    tags = {
        "promotion_reason": judgement.reason[:5000],
        "promotion_run_id": mlflow.active_run().info.run_id,
        "promotion_champion_version": versions.get("champion", ""),
        # Latency belongs to a CPU: the same model is 3-7 ms on one and 20-30 on another.
        "promotion_cpu": f"{cpu_name()}, {available_cpus()} vCPUs",
    }
    for role, s in judgement.scores.items():
        tags[f"promotion_{role}_accuracy"] = f"{s.accuracy:.4f}"
        if not np.isnan(s.latency_p95_ms):
            tags[f"promotion_{role}_latency_p95_ms"] = f"{s.latency_p95_ms:.2f}"
        if s.production_accuracy is not None:
            tags[f"promotion_{role}_production_accuracy"] = f"{s.production_accuracy:.4f}"
    for kind, comparison in judgement.evidence.items():
        tags[f"promotion_{kind}_evidence"] = comparison.describe()
    if judgement.live is not None:
        tags["promotion_live"] = judgement.live.describe()[:5000]
    return tags | {"promotion": decision_word(judgement.promoted)}
