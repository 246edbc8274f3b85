"""The accuracy estimate against simulated classifiers whose accuracy is known: calibrated,
over-confident (then mapped on held-out rows), under covariate shift, and under concept
shift, which it cannot see."""

import numpy as np

from distrinews.runtime.accuracy_estimate import (
    estimate_accuracy,
    estimate_by_class,
    fit_accuracy_map,
    right_probabilities,
)

WINDOW = 1000


def calibrated(rng: np.random.Generator, n: int, a: float = 12.0, b: float = 1.2):
    """Confidences of a 4-class model (at least 1/4; about 0.93 on average, as the served
    MiniLM on AG News), and whether each prediction is right, drawn with exactly that
    probability."""
    confidence = 0.25 + 0.75 * rng.beta(a, b, n)
    return confidence, rng.random(n) < confidence


def test_on_a_calibrated_model_windows_of_1000_are_within_1_5_points_and_covered():
    """The realized accuracy of 1000 predictions varies by itself (a standard deviation of
    0.7 points here): 95% of windows within 1.5 points is what the sample allows."""
    rng = np.random.default_rng(0)
    errors, covered = [], 0
    for _ in range(400):
        confidence, right = calibrated(rng, WINDOW)
        estimate = estimate_accuracy(confidence)
        errors.append(abs(estimate.accuracy - right.mean()))
        covered += estimate.low <= right.mean() <= estimate.high
    assert np.percentile(errors, 95) <= 0.015, np.percentile(errors, 95)
    assert 0.92 <= covered / 400 <= 0.98, covered  # a 95% interval holds 95% of the time


def test_an_over_confident_model_is_mapped_on_held_out_rows_and_then_estimated_well():
    """Right with probability c**2 where it says c: its confidence alone is about 6 points
    high. The isotonic map fitted on 5000 held-out rows brings the estimate within a point
    of each window's expected accuracy, and its interval covers the realized one."""
    rng = np.random.default_rng(1)
    confidence, _ = calibrated(rng, 5000)
    accuracy_map = fit_accuracy_map(confidence, rng.random(5000) < confidence**2)
    assert np.all(np.diff(accuracy_map["accuracy"]) >= 0)  # monotone
    errors, raw_errors, covered = [], [], 0
    for _ in range(200):
        window, _ = calibrated(rng, WINDOW)
        right = rng.random(WINDOW) < window**2
        estimate = estimate_accuracy(window, accuracy_map)
        errors.append(abs(estimate.accuracy - (window**2).mean()))
        raw_errors.append(abs(estimate_accuracy(window).accuracy - right.mean()))
        covered += estimate.low <= right.mean() <= estimate.high
    assert np.median(raw_errors) > 0.05
    assert np.percentile(errors, 95) <= 0.01, np.percentile(errors, 95)
    assert 0.9 <= covered / 200 <= 0.99, covered


def test_covariate_shift_is_followed_and_concept_shift_is_not():
    """Harder texts (lower confidence, the same relation to being right) lower the
    estimate with the accuracy; labels reassigned (concept shift) leave the confidence,
    and so the estimate, where it was: only live accuracy shows it."""
    rng = np.random.default_rng(2)
    easy, _ = calibrated(rng, WINDOW)
    hard, hard_right = calibrated(rng, WINDOW, a=2.0, b=2.0)
    assert estimate_accuracy(hard).accuracy < estimate_accuracy(easy).accuracy - 0.1
    assert abs(estimate_accuracy(hard).accuracy - hard_right.mean()) <= 0.015
    concept_right = rng.random(WINDOW) < 0.5 * easy  # half the labels moved
    estimate = estimate_accuracy(easy)
    assert concept_right.mean() < estimate.low  # outside the interval: the flag to raise


def test_per_class_estimates_and_the_map_at_its_ends():
    confidence = np.array([0.3, 0.9, 0.95, 0.6])
    predicted = np.array([0, 1, 1, 3])
    per_class = estimate_by_class(confidence, predicted, ("a", "b", "c", "d"))
    assert set(per_class) == {"a", "b", "d"} and per_class["b"].predictions == 2
    assert per_class["b"].accuracy == 0.925
    accuracy_map = {"confidence": [0.4, 0.8], "accuracy": [0.5, 0.7]}
    assert right_probabilities(np.array([0.1, 0.6, 0.99]), accuracy_map).tolist() == [
        0.5,
        0.6,
        0.7,
    ]
    assert np.isnan(estimate_accuracy(np.array([])).accuracy)
