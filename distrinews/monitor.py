"""The monitor step: a window of the server's prediction log and feedback, reported to an
MLflow run. Per model version: drift of each signal from that version's reference profile
(the Jensen-Shannon distance the server's gauges use, and scipy's chi-square test of the
binned counts against the reference shares), live accuracy on the feedback, and whether
to retrain. No torch.
"""

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from distrinews.config import MonitorConfig
from distrinews.errors import UserError
from distrinews.runtime.model_source import ModelSource, local_model_folder
from distrinews.runtime.prediction_store import (
    FEEDBACK,
    PREDICTIONS,
    UNREGISTERED,
    LogUnavailable,
    open_store,
)
from distrinews.runtime.reference_profile import compared_histograms, js_distance, read_profile

#: The column of the prediction log that holds each numeric drift signal.
COLUMNS = {"confidence": "confidence", "token_length": "tokens", "unknown_share": "unknown_share"}
SPAN = re.compile(r"(\d+)([mhd])")
UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_window(since: str, until: str) -> tuple[datetime, datetime]:
    """(start, end) in UTC from `since` (ISO, or a span such as 24h before `until`)."""

    def instant(text: str) -> datetime:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as err:
            raise UserError(f"{text!r} is neither an ISO date/time nor a span like 24h") from err
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)

    end = instant(until) if until else datetime.now(timezone.utc)
    span = SPAN.fullmatch(since.strip())
    start = end - timedelta(**{UNITS[span[2]]: int(span[1])}) if span else instant(since)
    if start >= end:
        raise UserError(f"since ({start.isoformat()}) is not before until ({end.isoformat()})")
    return start, end


def read_window(store: str, start: datetime, end: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The predictions made in [start, end), and the feedback given on them (any time)."""
    try:
        engine = open_store(store)
    except LogUnavailable as err:
        raise UserError(f"{err}; pass -P store=<the server's DISTRINEWS_PREDICTION_LOG>") from err
    in_window = PREDICTIONS.c.time.between(start, end)
    with engine.connect() as connection:
        predictions = pd.read_sql(sa.select(PREDICTIONS).where(in_window), connection)
        feedback = pd.read_sql(
            sa.select(FEEDBACK, PREDICTIONS.c.label.label("predicted"), PREDICTIONS.c.model_version)
            .join(
                PREDICTIONS,
                (FEEDBACK.c.request_id == PREDICTIONS.c.request_id)
                & (FEEDBACK.c.position == PREDICTIONS.c.position),
            )
            .where(in_window),
            connection,
        )
    engine.dispose()
    for frame in (predictions, feedback):
        frame["model_version"] = frame["model_version"].fillna(UNREGISTERED)
    return predictions, feedback


@dataclass
class VersionReport:
    """What the window says about one model version."""

    version: str
    predictions: int
    drift: dict[str, float] = field(default_factory=dict)  # signal -> JS distance
    p_values: dict[str, float] = field(default_factory=dict)  # signal -> chi-square p
    feedback: int = 0
    live_accuracy: float | None = None
    histograms: dict[str, tuple[list, list, list]] = field(default_factory=dict)


def chi_square_p(counts: np.ndarray, reference: list[float]) -> float:
    """p-value of the window's bin counts under the reference's shares (smoothed, so an
    empty reference bin does not make every count there impossible)."""
    from scipy.stats import chisquare

    expected = np.asarray(reference, dtype=np.float64) + 1e-4
    expected = expected / expected.sum() * counts.sum()
    return float(chisquare(counts, expected).pvalue)


def compare(rows: pd.DataFrame, profile: dict, labels: list[str]) -> VersionReport:
    """Drift of each signal of `rows` (one version's predictions) from its profile."""
    report = VersionReport(str(rows["model_version"].iloc[0]), len(rows))
    counts = rows["label"].value_counts().reindex(labels, fill_value=0).to_numpy()
    values = {signal: rows[column].to_numpy() for signal, column in COLUMNS.items()}
    report.histograms = compared_histograms(profile, labels, counts, values)
    for signal, (_, window, reference) in report.histograms.items():
        report.drift[signal] = js_distance(window, reference)
        report.p_values[signal] = chi_square_p(np.array(window) * len(rows), reference)
    return report


def reference_profile(version: str, cfg: MonitorConfig) -> dict:
    """The reference profile of `version` (registered), or of `cfg.reference` (a folder)."""
    if version != UNREGISTERED:
        source = ModelSource(f"models:/{cfg.registered_model}/{version}")
    elif cfg.reference:
        source = ModelSource(cfg.reference)
    else:
        raise UserError(
            "the log holds predictions of a model served from a folder: pass its folder (or "
            "model URI) as -P reference=<folder> to compare them with its profile"
        )
    profile = read_profile(Path(local_model_folder(source)))
    if profile is None:
        raise UserError(f"{source.uri} has no reference profile: re-export it")
    return profile


def live_accuracy(report: VersionReport, feedback: pd.DataFrame) -> None:
    """Accuracy of `report`'s version on the feedback about its predictions."""
    mine = feedback[feedback["model_version"] == report.version]
    report.feedback = len(mine)
    if len(mine):
        report.live_accuracy = float((mine["label"] == mine["predicted"]).mean())


def retrain_reasons(report: VersionReport, cfg: MonitorConfig) -> list[str]:
    """Why the version should be retrained ([] if it need not)."""
    reasons = [
        f"{signal} drift {distance:.3f} > {cfg.max_drift}"
        for signal, distance in report.drift.items()
        if distance > cfg.max_drift
    ]
    if (
        report.live_accuracy is not None
        and report.feedback >= cfg.min_feedback
        and report.live_accuracy < cfg.min_live_accuracy
    ):
        reasons.append(
            f"live accuracy {report.live_accuracy:.3f} < {cfg.min_live_accuracy} on "
            f"{report.feedback} feedback items"
        )
    return reasons


def run_monitor(cfg: MonitorConfig) -> str:
    """Read the window, compare each version with its reference, log it all to a run."""
    from distrinews.monitor_report import log_monitor_run

    start, end = parse_window(cfg.since, cfg.until)
    predictions, feedback = read_window(cfg.store, start, end)
    if predictions.empty:
        raise UserError(
            f"no predictions in {cfg.store} between {start.isoformat(timespec='seconds')} and "
            f"{end.isoformat(timespec='seconds')}; widen -P since= or -P until="
        )
    reports = []
    for version, rows in predictions.groupby("model_version", sort=True):
        profile = reference_profile(str(version), cfg)
        report = compare(rows, profile, list(profile["predicted_labels"]))
        live_accuracy(report, feedback)
        reports.append(report)
    # The version that answered most in the window is the one the report is about.
    served = max(reports, key=lambda r: r.predictions)
    reasons = retrain_reasons(served, cfg)
    log_monitor_run(cfg, (start, end), reports, served, reasons)
    verdict = f"retrain recommended: {'; '.join(reasons)}" if reasons else "no retraining needed"
    return (
        f"{len(predictions)} predictions, {len(feedback)} feedback items; version "
        f"{served.version}: {verdict}"
    )
