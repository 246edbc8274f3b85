"""The monitor step: read a window of the prediction log, compare each (registered model,
version) in it with its own reference profile, decide whether to retrain, and log it all to
an MLflow run. No torch.
"""

import tempfile
from pathlib import Path

import pandas as pd

from distrinews.config import MonitorConfig
from distrinews.data.time_window import parse_window
from distrinews.errors import UserError
from distrinews.monitor.accuracy_timeline import accuracy_timeline
from distrinews.monitor.challenger import challenger_reports
from distrinews.monitor.drift import (
    VersionReport,
    compare,
    live_accuracy,
    read_window,
    reference_of,
    retrain_reasons,
    version_feedback,
)
from distrinews.monitor.report import log_monitor_run
from distrinews.monitor.text_drift import text_drift
from distrinews.runtime.prediction_store import shown


def run_monitor(cfg: MonitorConfig) -> str:
    """Read the window, compare each model version with its own reference, log it all to a
    run. The verdict is about `cfg.registered_model` (or a model served from a folder)."""
    start, end = parse_window(cfg.since, cfg.until)
    predictions, feedback = read_window(cfg.store, start, end)
    if predictions.empty:
        raise UserError(
            f"no predictions in {shown(cfg.store)} between {start.isoformat(timespec='seconds')} "
            f"and {end.isoformat(timespec='seconds')}; widen -P since= or -P until="
        )
    # Downloads of the versions' profiles, deleted when the step ends.
    with tempfile.TemporaryDirectory(prefix="distrinews-monitor-") as work:
        reports = version_reports(predictions, feedback, cfg, Path(work))
        challengers = challenger_reports(cfg, (start, end), Path(work) / "challengers")
    served = served_report(reports, cfg.registered_model)
    reasons = retrain_reasons(served, cfg)
    log_monitor_run(cfg, (start, end), reports, served, reasons, challengers)
    verdict = f"retrain recommended: {'; '.join(reasons)}" if reasons else "no retraining needed"
    compared = "".join(f"; challenger {c.live.describe()}" for c in challengers)
    return (
        f"{len(predictions)} predictions, {len(feedback)} feedback items; {served.label}: "
        f"{verdict}{compared}"
    )


def version_reports(
    predictions: pd.DataFrame, feedback: pd.DataFrame, cfg: MonitorConfig, work: Path
) -> list[VersionReport]:
    """One report per (registered model, version) in the window, each against its own
    profile: two models sharing one log each have a version 1."""
    reports = []
    for (name, version), rows in predictions.groupby(["model_name", "model_version"], sort=True):
        profile, reference_texts = reference_of(str(name), str(version), cfg, work)
        report = compare(rows, profile, list(profile["predicted_labels"]))
        window_texts = rows["text"].dropna().tolist() if "text" in rows else []
        if reference_texts:
            report.text_drift = text_drift(reference_texts, window_texts)
        mine, accuracy_map = version_feedback(report, feedback), profile.get("accuracy_map")
        live_accuracy(report, mine, accuracy_map)
        report.timeline = accuracy_timeline(rows, mine, accuracy_map)
        reports.append(report)
    return reports


def served_report(reports: list[VersionReport], name: str) -> VersionReport:
    """The version of `name` (or of a model served from a folder) that answered most in
    the window: the one the verdict is about."""
    mine = [r for r in reports if r.model_name in (name, "")]
    if not mine:
        present = ", ".join(f"{r.label} ({r.predictions})" for r in reports)
        raise UserError(
            f"no predictions of registered model {name!r} in the window (the log holds "
            f"{present}); pass -P registered_model=<one of them>"
        )
    return max(mine, key=lambda r: r.predictions)
