"""Accuracy estimated without labels, from the served model's confidence alone.

A calibrated classifier's confidence is the probability that its prediction is right, so a
window's expected accuracy is the mean of its confidences (NannyML's CBPE, for accuracy).
Temperature scaling (distrinews.export) calibrates the model as a whole; the export also
fits monotone maps from confidence to the share right on the version's own held-out rows
(isotonic regression, by pool-adjacent-violators), which correct what one temperature
leaves, and stores them in the reference profile.

One map per band of token counts: a transformer is surer of a short text than it is right
(8-word headlines scored 7 points over-confident on the README's model, through a map
fitted on whole articles), so the export fits the bands on the held-out texts and on
shortened copies of them, whose labels are the same (distrinews.export.accuracy_map).

The interval is that of the window's realized accuracy: given the probabilities, the
number right is a sum of independent Bernoulli draws (a Poisson binomial), with variance
the sum of p (1 - p). To that it adds the map's own error: each band's curve is fitted on a
few hundred labelled texts, so its level is known to a point or so. Export measures that
by refitting on bootstrap resamples of the texts (a text and its copies drawn together);
the window's share of each band weighs it. It holds while the relation between a text and
its label stays as it was on the held-out rows (covariate shift, not concept shift:
docs/monitoring.md); where labels arrive, a live accuracy outside it says the relation
changed.

Torch-free: the server computes it at scrape time from the confidences it already keeps.
"""

import math
from dataclasses import dataclass

import numpy as np

#: Two-sided confidence of the interval (z for 95%).
Z_95 = 1.959963984540054


#: Bands of token counts the map is fitted in: each holds a sixth of the rows it is fitted
#: on, several hundred on a validation split and its shortened copies.
LENGTH_BANDS = 6


#: Bootstrap resamples for the map's own error.
REPLICATES = 100


def fit_accuracy_map(
    confidence: np.ndarray,
    correct: np.ndarray,
    tokens: np.ndarray,
    groups: np.ndarray | None = None,
    bands: int = LENGTH_BANDS,
) -> dict:
    """One isotonic curve per band of `tokens` (bands of equal row count; fewer where
    counts tie): `token_edges` (a text of t tokens is in band searchsorted(edges, t,
    "right")) and `curves`. With `groups` (the text each row was made from), also
    `curve_se`: each band's standard error, by bootstrap over the texts."""
    confidence, correct = np.asarray(confidence), np.asarray(correct)
    tokens = np.asarray(tokens, dtype=np.float64)
    quantiles = np.quantile(tokens, np.arange(1, bands) / bands)
    # An edge at the smallest count would leave the first band empty.
    edges = [float(e) for e in np.unique(quantiles) if e > tokens.min()]
    band = np.searchsorted(edges, tokens, side="right")
    curves = [
        isotonic_curve(confidence[band == b], correct[band == b]) for b in range(len(edges) + 1)
    ]
    fitted = {"token_edges": edges, "curves": curves}
    if groups is not None:
        fitted["curve_se"] = band_errors(confidence, correct, band, np.asarray(groups))
    return fitted


def band_errors(
    confidence: np.ndarray, correct: np.ndarray, band: np.ndarray, groups: np.ndarray
) -> list[float]:
    """Per band, the standard deviation over bootstrap resamples of the texts (a text's
    rows drawn together: copies of one text are right or wrong together) of the band's
    mean share right as its refitted curve gives it, on the band's own rows."""
    rng = np.random.default_rng(0)
    texts, rows_of = np.unique(groups, return_inverse=True)
    means = np.empty((REPLICATES, band.max() + 1))
    for r in range(REPLICATES):
        weight = np.bincount(rng.integers(0, len(texts), len(texts)), minlength=len(texts))
        drawn = np.repeat(np.arange(len(groups)), weight[rows_of])
        for b in range(band.max() + 1):
            mine = drawn[band[drawn] == b]
            curve = isotonic_curve(confidence[mine], correct[mine])
            own = confidence[band == b]
            means[r, b] = np.interp(own, curve["confidence"], curve["accuracy"]).mean()
    return means.std(axis=0).tolist()


def isotonic_curve(confidence: np.ndarray, correct: np.ndarray) -> dict[str, list[float]]:
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


def right_probabilities(
    confidence: np.ndarray, accuracy_map: dict | None, tokens: np.ndarray | None = None
) -> np.ndarray:
    """Each prediction's probability of being right: its confidence through the curve of
    its band of token counts (linear between breakpoints, flat beyond them), or as it is
    without a map. A map of one curve (no `token_edges`) needs no `tokens`."""
    confidence = np.asarray(confidence, dtype=np.float64)
    if not accuracy_map:
        return confidence
    band = bands_of(accuracy_map, tokens, len(confidence))
    right = np.empty_like(confidence)
    for b, curve in enumerate(accuracy_map.get("curves", [accuracy_map])):
        mine = band == b
        right[mine] = np.interp(confidence[mine], curve["confidence"], curve["accuracy"])
    return right


def bands_of(accuracy_map: dict, tokens: np.ndarray | None, n: int) -> np.ndarray:
    """The band of each of n predictions (all 0 for a map of one curve)."""
    edges = accuracy_map.get("token_edges", [])
    if not edges:
        return np.zeros(n, dtype=np.int64)
    if tokens is None:
        raise ValueError("this accuracy map has bands of token counts: pass each text's tokens")
    return np.searchsorted(edges, np.asarray(tokens), side="right")


def map_error(accuracy_map: dict | None, tokens: np.ndarray | None, n: int) -> float:
    """The standard error the map adds to a window's estimate: each band's, weighed by the
    window's share in it, summed (the bands share their texts, so their errors are taken
    as moving together)."""
    if not accuracy_map or "curve_se" not in accuracy_map:
        return 0.0
    shares = np.bincount(bands_of(accuracy_map, tokens, n), minlength=len(accuracy_map["curve_se"]))
    return float(np.dot(shares / n, accuracy_map["curve_se"]))


@dataclass(frozen=True)
class Estimate:
    """The expected accuracy of a window and the 95% interval of its realized accuracy."""

    accuracy: float
    low: float
    high: float
    predictions: int


def estimate_accuracy(
    confidence: np.ndarray, accuracy_map: dict | None = None, tokens: np.ndarray | None = None
) -> Estimate:
    """The estimate for a window of predictions' confidences and token counts (NaN for an
    empty one)."""
    p = right_probabilities(confidence, accuracy_map, tokens)
    n = len(p)
    if not n:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(p.mean())
    variance = float((p * (1 - p)).sum()) / n**2 + map_error(accuracy_map, tokens, n) ** 2
    half = Z_95 * math.sqrt(variance)
    return Estimate(mean, max(0.0, mean - half), min(1.0, mean + half), n)


def estimate_by_class(
    confidence: np.ndarray,
    predicted: np.ndarray,
    labels: tuple[str, ...] | list[str],
    accuracy_map: dict | None = None,
    tokens: np.ndarray | None = None,
) -> dict[str, Estimate]:
    """The estimate per predicted class (its precision, estimated), for the classes the
    window predicted."""
    confidence, predicted = np.asarray(confidence), np.asarray(predicted)
    return {
        label: estimate_accuracy(
            confidence[predicted == index],
            accuracy_map,
            None if tokens is None else np.asarray(tokens)[predicted == index],
        )
        for index, label in enumerate(labels)
        if (predicted == index).any()
    }
