"""What the monitor step logs: `monitor/*` metrics, a plot per signal (the window against
the reference), an HTML report, and tags that say whether to retrain and why."""

import base64
import html
from dataclasses import asdict
from datetime import datetime

from distrinews.config import MonitorConfig
from distrinews.data.labels import metric_safe
from distrinews.mlflow_runs import log_new_params, step_run
from distrinews.monitor.accuracy_timeline import timeline_png
from distrinews.monitor.challenger import ChallengerReport, challenger_html, challenger_metrics
from distrinews.monitor.drift import VersionReport
from distrinews.monitor.png import figure_png, png_image, pyplot
from distrinews.runtime.prediction_store import shown


def version_metrics(report: VersionReport, prefix: str) -> dict[str, float]:
    metrics = {
        f"{prefix}predictions": report.predictions,
        f"{prefix}feedback_items": report.feedback,
    }
    metrics |= {f"{prefix}drift_{signal}": value for signal, value in report.drift.items()}
    metrics |= {f"{prefix}p_value_{signal}": value for signal, value in report.p_values.items()}
    if report.live_accuracy is not None:
        metrics[f"{prefix}live_accuracy"] = report.live_accuracy
    for name, estimate in (("", report.estimated), ("_labelled", report.estimated_labelled)):
        if estimate is not None:
            metrics[f"{prefix}estimated_accuracy{name}"] = estimate.accuracy
            metrics[f"{prefix}estimated_accuracy{name}_low"] = estimate.low
            metrics[f"{prefix}estimated_accuracy{name}_high"] = estimate.high
    for label, estimate in report.estimated_by_class.items():
        metrics[f"{prefix}estimated_accuracy_{metric_safe(label)}"] = estimate.accuracy
    if report.estimated_labelled is not None:
        metrics[f"{prefix}concept_shift"] = float(report.concept_shift)
    if report.text_drift is not None:
        metrics[f"{prefix}domain_auc"] = report.text_drift.auc
        metrics[f"{prefix}domain_texts"] = report.text_drift.texts
    return metrics


def signal_png(report: VersionReport, signal: str, sample: str = "this window") -> bytes:
    """The `sample`'s shares against the reference's (if any), bin by bin, as a PNG."""
    bins, window, reference = report.histograms[signal]
    names = (
        [str(b) for b in bins]
        if signal == "predicted_label"
        else [f"{bins[i]:g}" for i in range(len(window))]
    )
    positions = range(len(window))
    fig, ax = pyplot().subplots(figsize=(7, 3.5))
    if reference:
        ax.bar([p - 0.2 for p in positions], reference, width=0.4, label="reference (validation)")
    ax.bar([p + 0.2 for p in positions], window, width=0.4, label=sample)
    ax.set_xticks(list(positions), names, rotation=45 if len(names) > 6 else 0)
    ax.set_ylabel("share")
    drift = report.drift.get(signal)
    distance = "no reference" if drift is None else f"Jensen-Shannon {drift:.3f}"
    ax.set_title(f"{report.label}: {signal.replace('_', ' ')} ({distance})")
    ax.legend()
    fig.tight_layout()
    return figure_png(fig)


def html_report(
    window: tuple[datetime, datetime], reports: list[VersionReport], reasons: list[str], pngs: dict
) -> str:
    """One self-contained page: the verdict, a table per version, the plots inline."""
    start, end = (moment.isoformat(timespec="seconds") for moment in window)
    verdict = "Retrain recommended: " + "; ".join(reasons) if reasons else "No retraining needed."
    parts = [
        "<!doctype html><meta charset='utf-8'><title>DistriNews monitor</title>",
        f"<h1>DistriNews monitor, {html.escape(start)} to {html.escape(end)}</h1>",
        f"<p><b>{html.escape(verdict)}</b></p>",
    ]
    for report in reports:
        rows = "".join(
            f"<tr><td>{html.escape(signal)}</td><td>{distance:.4f}</td>"
            f"<td>{report.p_values[signal]:.3g}</td></tr>"
            for signal, distance in report.drift.items()
        )
        accuracy = "no feedback" if report.live_accuracy is None else f"{report.live_accuracy:.3f}"
        parts += [
            f"<h2>{html.escape(report.label)}</h2>",
            f"<p>{report.predictions} predictions; live accuracy {accuracy} on "
            f"{report.feedback} feedback items; {html.escape(estimate_text(report))}</p>",
            "<table border=1 cellpadding=4><tr><th>signal</th><th>Jensen-Shannon distance</th>"
            f"<th>chi-square p</th></tr>{rows}</table>",
            text_drift_html(report),
        ]
        parts += [
            f"<p><img alt='{html.escape(signal)}' src='data:image/png;base64,"
            f"{base64.b64encode(png).decode()}'></p>"
            for (key, signal), png in pngs.items()
            if key == (report.model_name, report.version)
        ]
    return "\n".join(parts) + "\n"


def log_monitor_run(
    cfg: MonitorConfig,
    window: tuple[datetime, datetime],
    reports: list[VersionReport],
    served: VersionReport,
    reasons: list[str],
    challengers: list[ChallengerReport] = (),
) -> None:
    import mlflow

    start, end = (moment.isoformat(timespec="seconds") for moment in window)
    with step_run("monitor", f"monitor {start} to {end}"):
        log_new_params(
            asdict(cfg) | {"store": shown(cfg.store), "window_start": start, "window_end": end}
        )
        metrics = version_metrics(served, "monitor/")
        for report in reports:
            metrics |= version_metrics(report, version_prefix(report, cfg.registered_model))
        mlflow.log_metrics(metrics | challenger_metrics(challengers))
        pngs = {
            ((report.model_name, report.version), signal): signal_png(report, signal)
            for report in reports
            for signal in report.drift
        } | {
            ((report.model_name, report.version), "accuracy"): timeline_png(
                report.timeline, f"{report.label}: accuracy, estimated and live"
            )
            for report in reports
            if report.timeline
        }
        for (key, signal), png in pngs.items():
            if key == (served.model_name, served.version):
                mlflow.log_image(png_image(png), f"monitor/{signal}.png")
        page = html_report(window, reports, reasons, pngs) + challenger_html(challengers)
        mlflow.log_text(page, "monitor/report.html")
        if served.text_drift is not None:
            mlflow.log_dict(served.text_drift.as_dict(), "monitor/text_drift.json")
        mlflow.set_tags(
            {
                "model_version": served.version,
                "registered_model": served.model_name or cfg.registered_model,
                "retrain_recommended": str(bool(reasons)).lower(),
                "retrain_reason": "; ".join(reasons) or "none",
            }
            | {f"challenger_{c.live.challenger}": c.live.describe()[:5000] for c in challengers}
        )


def version_prefix(report: VersionReport, name: str) -> str:
    """`monitor/version_3/` for the monitored model's versions (and a folder's model);
    another registered model sharing the log gets its name in the key too."""
    if report.model_name in (name, ""):
        return f"monitor/version_{report.version}/"
    return f"monitor/{metric_safe(report.model_name)}/version_{report.version}/"


def estimate_text(report: VersionReport) -> str:
    """The accuracy estimated without labels, beside live accuracy where there is some."""
    estimated = report.estimated
    if estimated is None:
        return "no estimate"
    text = (
        f"estimated accuracy (no labels) {estimated.accuracy:.3f}, 95% interval "
        f"[{estimated.low:.3f}, {estimated.high:.3f}]"
    )
    labelled = report.estimated_labelled
    if report.estimated_by_class:
        text += "; by predicted label " + ", ".join(
            f"{label} {estimate.accuracy:.3f}"
            for label, estimate in report.estimated_by_class.items()
        )
    if labelled is not None:
        text += (
            f"; on the labelled predictions, estimated {labelled.accuracy:.3f} "
            f"[{labelled.low:.3f}, {labelled.high:.3f}] against live {report.live_accuracy:.3f}"
        )
        if report.concept_shift:
            text += ": below the interval, a likely concept shift"
    return text


def text_drift_html(report: VersionReport) -> str:
    """What changed in the text: the domain classifier's AUC, its words, examples."""
    drift = report.text_drift
    if drift is None:
        return (
            "<p>What changed in the text: not measured (the window's texts are logged only "
            "with DISTRINEWS_LOG_TEXTS, and the version needs its reference texts)</p>"
        )
    examples = "".join(f"<li>{html.escape(text[:300])}</li>" for text in drift.examples)
    return (
        f"<h3>What changed in the text</h3><p>A classifier tells the window's texts from "
        f"the reference's with ROC AUC {drift.auc:.3f} ({drift.texts} texts a side; 0.5: "
        f"alike). Most like the window: {html.escape(', '.join(drift.window_words))}. Most "
        f"like the reference: {html.escape(', '.join(drift.reference_words))}.</p>"
        f"<p>The window's texts least like the reference:</p><ol>{examples}</ol>"
    )
