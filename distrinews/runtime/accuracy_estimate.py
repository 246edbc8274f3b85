"""Accuracy estimated without labels, from the served model's confidence alone.

A calibrated classifier's confidence is the probability that its prediction is right, so a
window's expected accuracy is the mean of its confidences (NannyML's CBPE, for accuracy).
Temperature scaling (distrinews.export) calibrates the model as a whole; the export also
fits a monotone map from confidence to the share right on the version's own held-out rows
(isotonic regression, by pool-adjacent-violators), which corrects what one temperature
leaves, bin by bin, and is stored in the reference profile.

The interval is that of the window's realized accuracy: given the probabilities, the
number right is a sum of independent Bernoulli draws (a Poisson binomial), with variance
the sum of p (1 - p). It holds while the relation between a text and its label stays as it
was on the held-out rows (covariate shift, not concept shift: docs/monitoring.md); where
labels arrive, a live accuracy outside it says the relation changed.

Torch-free: the server computes it at scrape time from the confidences it already keeps.
"""

import math
from dataclasses import dataclass

import numpy as np

#: Two-sided confidence of the interval (z for 95%).
Z_95 = 1.959963984540054


def fit_accuracy_map(confidence: np.ndarray, correct: np.ndarray) -> dict[str, list[float]]:
    """The isotonic (non-decreasing) fit of `correct` (0/1) on `confidence`: its
    breakpoints, `confidence` ascending and the share right at each."""
    order = np.argsort(confidence, kind="stable")
    x = np.asarray(confidence, dtype=np.float64)[order]
    y = np.asarray(correct, dtype=np.float64)[order]
    # Pool adjacent violators: blocks of (sum, count, right end), merged while a block's
    # mean is above the next one's.
    sums: list[float] = []
    counts: list[int] = []
    ends: list[float] = []
    for value, right in zip(x.tolist(), y.tolist(), strict=True):
        sums.append(right)
        counts.append(1)
        ends.append(value)
        while len(sums) > 1 and sums[-2] / counts[-2] > sums[-1] / counts[-1]:
            total, count, end = sums.pop(), counts.pop(), ends.pop()
            sums[-1] += total
            counts[-1] += count
            ends[-1] = end
    starts = [float(x[0])] + ends[:-1]
    # Each block as the middle of its confidence range, at its share right.
    points = [(start + end) / 2 for start, end in zip(starts, ends, strict=True)]
    shares = [s / c for s, c in zip(sums, counts, strict=True)]
    return {"confidence": points, "accuracy": shares}


def right_probabilities(confidence: np.ndarray, accuracy_map: dict | None) -> np.ndarray:
    """Each prediction's probability of being right: its confidence through the map
    (linear between breakpoints, flat beyond them), or as it is without one."""
    confidence = np.asarray(confidence, dtype=np.float64)
    if not accuracy_map:
        return confidence
    return np.interp(confidence, accuracy_map["confidence"], accuracy_map["accuracy"])


@dataclass(frozen=True)
class Estimate:
    """The expected accuracy of a window and the 95% interval of its realized accuracy."""

    accuracy: float
    low: float
    high: float
    predictions: int


def estimate_accuracy(confidence: np.ndarray, accuracy_map: dict | None = None) -> Estimate:
    """The estimate for a window of predictions' confidences (NaN for an empty one)."""
    p = right_probabilities(confidence, accuracy_map)
    n = len(p)
    if not n:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(p.mean())
    half = Z_95 * math.sqrt(float((p * (1 - p)).sum())) / n
    return Estimate(mean, max(0.0, mean - half), min(1.0, mean + half), n)


def estimate_by_class(
    confidence: np.ndarray,
    predicted: np.ndarray,
    labels: tuple[str, ...] | list[str],
    accuracy_map: dict | None = None,
) -> dict[str, Estimate]:
    """The estimate per predicted class (its precision, estimated), for the classes the
    window predicted."""
    confidence, predicted = np.asarray(confidence), np.asarray(predicted)
    return {
        label: estimate_accuracy(confidence[predicted == index], accuracy_map)
        for index, label in enumerate(labels)
        if (predicted == index).any()
    }
