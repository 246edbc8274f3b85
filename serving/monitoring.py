"""What the model answers, watched: predictions per label, a confidence histogram, and how
far a sliding window of the last predictions has drifted from the served version's
reference profile (distrinews.runtime.reference_profile), one gauge per signal.

Per prediction, the inference thread only counts and appends a small tuple to a bounded
window; the distances are computed when Prometheus scrapes /metrics, off the request path.
Label values come from the model's own labels, never from clients.
"""

import threading
import weakref
from collections import deque
from collections.abc import Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from distrinews.runtime.accuracy_estimate import estimate_accuracy, estimate_by_class
from distrinews.runtime.onnx_classifier import OnnxClassifier
from distrinews.runtime.prediction_store import UNREGISTERED
from distrinews.runtime.reference_profile import (
    CONFIDENCE_EDGES,
    TextFeatures,
    compared_histograms,
    js_distance,
)


class DriftMonitor:
    """Prediction counts and drift gauges for the served model, in `registry`."""

    def __init__(self, registry: CollectorRegistry, window: int):
        self.predictions = Counter(
            "distrinews_predictions",
            "Predictions answered, by predicted label",
            ["label"],
            registry=registry,
        )
        self.confidence = Histogram(
            "distrinews_prediction_confidence",
            "Confidence (calibrated top probability) of each prediction",
            buckets=CONFIDENCE_EDGES[1:],
            registry=registry,
        )
        self.size = window
        # (label index, confidence, tokens, unknown share) of the last `window` predictions.
        self.window: deque[tuple[int, float, int, float]] = deque(maxlen=window)
        self.lock = threading.Lock()  # the window is appended to and read from two threads
        self.classifier: OnnxClassifier | None = None
        # The registry version of each classifier served (ServerMetrics.describe_model).
        self.versions: weakref.WeakKeyDictionary[OnnxClassifier, str] = weakref.WeakKeyDictionary()
        registry.register(self)

    def record(
        self, classifier: OnnxClassifier, features: list[TextFeatures], rows: np.ndarray
    ) -> None:
        """One inference's predictions (on the event loop, after the answer: cheap work only)."""
        labels = rows.argmax(axis=1).tolist()
        confidences = rows.max(axis=1).tolist()
        with self.lock:
            if classifier is not self.classifier:
                # Another model serves: its predictions are compared with its own reference.
                self.classifier = classifier
                self.window.clear()
            for label, confidence, text in zip(labels, confidences, features, strict=True):
                self.window.append((label, confidence, text.tokens, text.unknown_share))
        for label, confidence in zip(labels, confidences, strict=True):
            self.predictions.labels(classifier.labels[label]).inc()
            self.confidence.observe(confidence)

    def snapshot(self) -> tuple[OnnxClassifier | None, list[tuple[int, float, int, float]]]:
        """The serving classifier and a copy of its window, taken together under the lock."""
        with self.lock:
            return self.classifier, list(self.window)

    @staticmethod
    def distances(classifier: OnnxClassifier | None, columns: np.ndarray) -> dict[str, float]:
        """The window's Jensen-Shannon distance from the reference, per signal ({} if the
        model has no reference profile or nothing was predicted yet). `columns`: the window
        as an array, one row per prediction."""
        if classifier is None or classifier.profile is None or not len(columns):
            return {}
        label, confidence, tokens, unknown = columns.T
        counts = np.bincount(label.astype(np.int64), minlength=len(classifier.labels))
        values = {"confidence": confidence, "token_length": tokens, "unknown_share": unknown}
        histograms = compared_histograms(classifier.profile, classifier.labels, counts, values)
        return {
            signal: js_distance(observed, reference)
            for signal, (_, observed, reference) in histograms.items()
        }

    def collect(self) -> Iterator[Metric]:
        """Called by prometheus_client at each scrape: every gauge from one copy of the window."""
        classifier, window = self.snapshot()
        # One array for every gauge: (label, confidence, tokens, unknown share) per row.
        columns = np.array(window, dtype=np.float64).reshape(-1, 4)
        drift = GaugeMetricFamily(
            "distrinews_drift",
            "Jensen-Shannon distance (0 same, 1 disjoint) of the last predictions' window "
            "from the served model's reference profile, by signal",
            labels=["signal"],
        )
        for signal, distance in self.distances(classifier, columns).items():
            drift.add_metric([signal], distance)
        yield drift
        yield from self.confidence_means(classifier, columns)
        yield from self.estimated_accuracy(classifier, columns)
        yield GaugeMetricFamily(
            "distrinews_drift_window_fill",
            "Share of the drift window filled (the distances are noisy while it is low)",
            value=len(window) / self.size,
        )

    @staticmethod
    def confidence_means(
        classifier: OnnxClassifier | None, columns: np.ndarray
    ) -> Iterator[Metric]:
        """The window's mean confidence and the reference's, for a "confidence falling"
        alert (absent until there is something to compare)."""
        if classifier is None or classifier.profile is None or not len(columns):
            return
        yield GaugeMetricFamily(
            "distrinews_window_confidence_mean",
            "Mean confidence over the drift window",
            value=float(columns[:, 1].mean()),
        )
        yield GaugeMetricFamily(
            "distrinews_reference_confidence_mean",
            "Mean confidence on the served version's reference (validation) data",
            value=classifier.profile["confidence_mean"],
        )

    def estimated_accuracy(
        self, classifier: OnnxClassifier | None, columns: np.ndarray
    ) -> Iterator[Metric]:
        """The window's accuracy estimated from its confidences alone
        (distrinews.runtime.accuracy_estimate), with its 95% interval, overall and per
        predicted class (absent until something was predicted)."""
        if classifier is None or not len(columns):
            return
        accuracy_map = (classifier.profile or {}).get("accuracy_map")
        confidence, predicted, tokens = columns[:, 1], columns[:, 0].astype(np.int64), columns[:, 2]
        version = self.versions.get(classifier, UNREGISTERED)
        overall = estimate_accuracy(confidence, accuracy_map, tokens)
        families = {
            name: GaugeMetricFamily(
                f"distrinews_estimated_accuracy{suffix}",
                f"{what} of the drift window's accuracy, estimated from the calibrated "
                "confidence alone (no labels; blind to concept shift)",
                labels=["model_version"],
            )
            for name, suffix, what in (
                ("accuracy", "", "Expected value"),
                ("low", "_low", "Low end of the 95% interval"),
                ("high", "_high", "High end of the 95% interval"),
            )
        }
        for name, family in families.items():
            family.add_metric([version], getattr(overall, name))
        yield from families.values()
        by_class = GaugeMetricFamily(
            "distrinews_estimated_accuracy_by_class",
            "Estimated share right of the drift window's predictions of each label",
            labels=["model_version", "label"],
        )
        labels = classifier.labels
        for label, estimate in estimate_by_class(
            confidence, predicted, labels, accuracy_map, tokens
        ).items():
            by_class.add_metric([version, label], estimate.accuracy)
        yield by_class

    def describe(self) -> Iterator[Metric]:
        """No samples at registration (the collector is called at scrape time only)."""
        return iter(())
