"""What a window of the prediction log says about one model version: drift of each signal
from that version's reference profile (the Jensen-Shannon distance the server's gauges use,
and scipy's chi-square test of the binned counts against the reference shares), live
accuracy on its feedback, and the reasons to retrain. No torch.
"""

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from distrinews.config import MonitorConfig
from distrinews.errors import ModelFolderError, UserError
from distrinews.monitor.accuracy_timeline import Stretch
from distrinews.monitor.text_drift import TextDrift
from distrinews.runtime.accuracy_estimate import Estimate, estimate_accuracy, estimate_by_class
from distrinews.runtime.model_source import ModelSource, local_model_folder
from distrinews.runtime.prediction_store import (
    FEEDBACK,
    PREDICTIONS,
    UNREGISTERED,
    LogUnavailable,
    feedback_on_prediction,
    open_store,
    served_rows,
)
from distrinews.runtime.reference_profile import (
    compared_histograms,
    js_distance,
    read_profile,
    read_reference_texts,
)

#: The column of the prediction log that holds each numeric drift signal.
COLUMNS = {"confidence": "confidence", "token_length": "tokens", "unknown_share": "unknown_share"}


def read_window(store: str, start: datetime, end: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The predictions made in [start, end), and the feedback given on them (any time): one
    label per prediction, the newest (a store written before feedback replaced repeats
    may hold several)."""
    try:
        engine = open_store(store)
    except LogUnavailable as err:
        raise UserError(f"{err}; pass -P store=<the server's DISTRINEWS_PREDICTION_LOG>") from err
    # The answers the clients got: a request a challenger also scored counts once.
    in_window = (PREDICTIONS.c.time >= start) & (PREDICTIONS.c.time < end) & served_rows()
    answered = (
        PREDICTIONS.c.id.label("prediction_row"),
        PREDICTIONS.c.label.label("predicted"),
        PREDICTIONS.c.model_name,
        PREDICTIONS.c.model_version,
        PREDICTIONS.c.confidence.label("predicted_confidence"),
        PREDICTIONS.c.tokens.label("predicted_tokens"),
    )
    with engine.connect() as connection:
        predictions = pd.read_sql(sa.select(PREDICTIONS).where(in_window), connection)
        feedback = pd.read_sql(
            sa.select(FEEDBACK, *answered)
            .join(PREDICTIONS, feedback_on_prediction())
            .where(in_window)
            .order_by(FEEDBACK.c.time, FEEDBACK.c.id),
            connection,
        )
    engine.dispose()
    feedback = feedback.drop_duplicates("prediction_row", keep="last")
    for frame in (predictions, feedback):
        frame["model_version"] = frame["model_version"].fillna(UNREGISTERED)
        frame["model_name"] = frame["model_name"].fillna("")
    return predictions, feedback


@dataclass
class VersionReport:
    """What the window says about one version of one model."""

    version: str
    predictions: int
    model_name: str = ""  # the registered model ("" for a model served from a folder)
    drift: dict[str, float] = field(default_factory=dict)  # signal -> JS distance
    p_values: dict[str, float] = field(default_factory=dict)  # signal -> chi-square p
    feedback: int = 0
    live_accuracy: float | None = None
    histograms: dict[str, tuple[list, list, list]] = field(default_factory=dict)
    # From the confidences alone (distrinews.runtime.accuracy_estimate): on every prediction
    # of the window, and on the labelled ones (to set beside their live accuracy).
    estimated: Estimate | None = None
    estimated_labelled: Estimate | None = None
    estimated_by_class: dict[str, Estimate] = field(default_factory=dict)  # predicted label
    # Both through the window, stretch by stretch (distrinews.monitor.accuracy_timeline).
    timeline: list[Stretch] = field(default_factory=list)
    # The domain classifier between the reference texts and the window's (if both exist).
    text_drift: TextDrift | None = None

    @property
    def concept_shift(self) -> bool:
        """Live accuracy below the interval the confidences give for the same predictions:
        the relation between text and label is no longer the one the model learned."""
        labelled = self.estimated_labelled
        return (
            self.live_accuracy is not None
            and labelled is not None
            and self.live_accuracy < labelled.low
        )

    @property
    def label(self) -> str:
        """'distrinews version 3', or 'version unregistered' for a folder's model."""
        return f"{self.model_name} version {self.version}".strip()


def chi_square_p(counts: np.ndarray, reference: list[float]) -> float:
    """p-value of the window's bin counts under the reference's shares (smoothed, so an
    empty reference bin does not make every count there impossible)."""
    from scipy.stats import chisquare

    expected = np.asarray(reference, dtype=np.float64) + 1e-4
    expected = expected / expected.sum() * counts.sum()
    return float(chisquare(counts, expected).pvalue)


def compare(rows: pd.DataFrame, profile: dict, labels: list[str]) -> VersionReport:
    """Drift of each signal of `rows` (one version's predictions) from its profile."""
    first = rows.iloc[0]
    report = VersionReport(str(first["model_version"]), len(rows), str(first["model_name"]))
    counts = rows["label"].value_counts().reindex(labels, fill_value=0).to_numpy()
    values = {signal: rows[column].to_numpy() for signal, column in COLUMNS.items()}
    report.histograms = compared_histograms(profile, labels, counts, values)
    confidence, tokens = rows["confidence"].to_numpy(), rows["tokens"].to_numpy()
    accuracy_map = profile.get("accuracy_map")
    report.estimated = estimate_accuracy(confidence, accuracy_map, tokens)
    predicted = rows["label"].map({label: i for i, label in enumerate(labels)}).to_numpy()
    report.estimated_by_class = estimate_by_class(
        confidence, predicted, labels, accuracy_map, tokens
    )
    for signal, (_, window, reference) in report.histograms.items():
        report.drift[signal] = js_distance(window, reference)
        report.p_values[signal] = chi_square_p(np.array(window) * len(rows), reference)
    return report


def reference_profile(name: str, version: str, cfg: MonitorConfig, work: Path) -> dict:
    """The reference profile of version `version` of registered model `name`, or of
    `cfg.reference` (a folder) for a model served from a folder; downloaded into `work`."""
    return reference_of(name, version, cfg, work)[0]


def reference_of(
    name: str, version: str, cfg: MonitorConfig, work: Path
) -> tuple[dict, list[str] | None]:
    """The version's reference profile and its reference texts (None if not exported)."""
    if version != UNREGISTERED:
        source = ModelSource(f"models:/{name or cfg.registered_model}/{version}")
    elif cfg.reference:
        source = ModelSource(cfg.reference)
    else:
        raise UserError(
            "the log holds predictions of a model served from a folder: pass its folder (or "
            "model URI) as -P reference=<folder> to compare them with its profile"
        )
    into = work / f"{name or 'folder'}-{version}"
    try:
        folder = local_model_folder(source, into)
    except ModelFolderError as err:
        raise UserError(f"cannot read the reference profile of {source.uri}: {err}") from err
    profile = read_profile(Path(folder))
    if profile is None:
        raise UserError(f"{source.uri} has no reference profile: re-export it")
    return profile, read_reference_texts(Path(folder))


def version_feedback(report: VersionReport, feedback: pd.DataFrame) -> pd.DataFrame:
    """The feedback on `report`'s model version's predictions."""
    return feedback[
        (feedback["model_name"] == report.model_name)
        & (feedback["model_version"] == report.version)
    ]


def live_accuracy(report: VersionReport, mine: pd.DataFrame, accuracy_map: dict | None) -> None:
    """Accuracy of `report`'s model version on `mine`, the feedback about its predictions
    (version_feedback), and the accuracy its confidences estimate for those same
    predictions."""
    report.feedback = len(mine)
    if len(mine):
        report.live_accuracy = float((mine["label"] == mine["predicted"]).mean())
        report.estimated_labelled = estimate_accuracy(
            mine["predicted_confidence"].to_numpy(dtype=np.float64),
            accuracy_map,
            mine["predicted_tokens"].to_numpy(dtype=np.float64),
        )


def retrain_reasons(report: VersionReport, cfg: MonitorConfig) -> list[str]:
    """Why the version should be retrained ([] if it need not)."""
    reasons = [
        f"{signal} drift {distance:.3f} > {cfg.max_drift}"
        for signal, distance in report.drift.items()
        if distance > cfg.max_drift
    ]
    enough_feedback = report.live_accuracy is not None and report.feedback >= cfg.min_feedback
    if enough_feedback and report.live_accuracy < cfg.min_live_accuracy:
        reasons.append(
            f"live accuracy {report.live_accuracy:.3f} < {cfg.min_live_accuracy} on "
            f"{report.feedback} feedback items"
        )
    if enough_feedback and report.concept_shift:
        low, high = report.estimated_labelled.low, report.estimated_labelled.high
        reasons.append(
            f"likely concept shift: live accuracy {report.live_accuracy:.3f} is below the "
            f"[{low:.3f}, {high:.3f}] the confidences estimate for the same "
            f"{report.feedback} predictions"
        )
    domain = report.text_drift
    if not enough_feedback and cfg.max_domain_auc and domain and domain.auc > cfg.max_domain_auc:
        reasons.append(
            f"the window's texts are told from the reference's with ROC AUC {domain.auc:.3f} "
            f"> max_domain_auc={cfg.max_domain_auc} (no labels; most characteristic: "
            f"{', '.join(domain.window_words[:5])})"
        )
    estimated = report.estimated
    if not enough_feedback and estimated and estimated.accuracy < cfg.min_estimated_accuracy:
        reasons.append(
            f"estimated accuracy {estimated.accuracy:.3f} (95% interval [{estimated.low:.3f}, "
            f"{estimated.high:.3f}], no labels) < min_estimated_accuracy="
            f"{cfg.min_estimated_accuracy} with {report.feedback} feedback items"
        )
    return reasons
