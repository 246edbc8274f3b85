"""The monitor's comparison of each challenger with the champion it ran beside, on the texts
both scored (distrinews.data.live_pairs): agreement with an interval, label shares,
confidence, the challenger's drift from its own reference, live accuracy of both on the
same feedback (paired), and each one's p95 on the serving CPU. In the run's metrics
(`monitor/challenger_<version>/...`) and its HTML report.
"""

import html
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from distrinews.config import MonitorConfig
from distrinews.data.live_pairs import LiveComparison, read_pairs, role_rows, summarize
from distrinews.monitor.drift import VersionReport, compare, reference_profile


@dataclass(frozen=True)
class ChallengerReport:
    live: LiveComparison
    drift: VersionReport  # the challenger's, on the texts both scored


def challenger_reports(
    cfg: MonitorConfig, window: tuple[datetime, datetime], work: Path
) -> list[ChallengerReport]:
    """A report per (champion, challenger) pair of versions of the monitored model that
    scored texts in the window ([] without a challenger)."""
    pairs = read_pairs(cfg.store, *window, cfg.registered_model)
    work.mkdir(exist_ok=True)
    reports = []
    versions = ["champion_version", "challenger_version"]
    for (champion, challenger), rows in pairs.groupby(versions, sort=True):
        profile = reference_profile(cfg.registered_model, str(challenger), cfg, work)
        labels = list(profile["predicted_labels"])
        live = summarize(rows, str(champion), str(challenger), labels)
        challenger_rows = role_rows(rows, "challenger", cfg.registered_model)
        reports.append(ChallengerReport(live, compare(challenger_rows, profile, labels)))
    return reports


def challenger_metrics(reports: list[ChallengerReport]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for report in reports:
        live, prefix = report.live, f"monitor/challenger_{report.live.challenger}/"
        low, high = live.agreement_interval()
        metrics |= {
            f"{prefix}texts": live.texts,
            f"{prefix}canary_texts": live.canary,
            f"{prefix}agreement": live.agreement,
            f"{prefix}agreement_low": low,
            f"{prefix}agreement_high": high,
            f"{prefix}labelled": live.labelled.rows,
        }
        for role in ("champion", "challenger"):
            metrics[f"{prefix}{role}_confidence"] = live.confidence[role]
            if not math.isnan(live.p95_ms[role]):
                metrics[f"{prefix}{role}_p95_ms"] = live.p95_ms[role]
        for role, accuracy in live.accuracies().items():
            metrics[f"{prefix}{role}_live_accuracy"] = accuracy
        if live.labelled.rows:
            low, high = live.labelled.interval()
            metrics |= {
                f"{prefix}live_difference_points": 100 * live.labelled.difference,
                f"{prefix}live_interval_low_points": 100 * low,
                f"{prefix}live_interval_high_points": 100 * high,
            }
        metrics |= {f"{prefix}drift_{s}": d for s, d in report.drift.drift.items()}
    return metrics


def challenger_html(reports: list[ChallengerReport]) -> str:
    """A section per challenger: the comparison in words, and a table by role."""
    parts = []
    for report in reports:
        live = report.live
        rows = "".join(role_row(live, role) for role in ("champion", "challenger"))
        shares = "".join(
            f"<tr><td>{html.escape(label)}</td>"
            f"<td>{live.label_shares['champion'][label]:.3f}</td>"
            f"<td>{live.label_shares['challenger'][label]:.3f}</td></tr>"
            for label in live.label_shares["champion"]
        )
        drift = ", ".join(f"{s} {d:.3f}" for s, d in report.drift.drift.items())
        parts += [
            f"<h2>Challenger version {html.escape(live.challenger)}</h2>",
            f"<p>{html.escape(live.describe())}</p>",
            "<table border=1 cellpadding=4><tr><th>role</th><th>mean confidence</th>"
            f"<th>p95 inference (ms)</th><th>live accuracy</th></tr>{rows}</table>",
            "<table border=1 cellpadding=4><tr><th>label</th><th>champion share</th>"
            f"<th>challenger share</th></tr>{shares}</table>",
            f"<p>The challenger's drift from its own reference (Jensen-Shannon): "
            f"{html.escape(drift)}</p>",
        ]
    return "\n".join(parts)


def role_row(live: LiveComparison, role: str) -> str:
    """One role's line of the report's table."""
    accuracy = live.accuracies()
    shown = f"{accuracy[role]:.4f}" if accuracy else "no feedback"
    return (
        f"<tr><td>{role} (version {html.escape(getattr(live, role))})</td>"
        f"<td>{live.confidence[role]:.3f}</td><td>{live.p95_ms[role]:.2f}</td>"
        f"<td>{shown}</td></tr>"
    )
