"""The accuracy estimate against simulated classifiers whose accuracy is known: calibrated,
over-confident (then mapped on held-out rows), under covariate shift, and under concept
shift, which it cannot see."""

import numpy as np
import pytest

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
    tokens = rng.integers(20, 60, 5000)
    accuracy_map = fit_accuracy_map(confidence, rng.random(5000) < confidence**2, tokens)
    assert len(accuracy_map["curves"]) == 6
    assert all(np.all(np.diff(c["accuracy"]) >= 0) for c in accuracy_map["curves"])  # monotone
    errors, raw_errors, covered = [], [], 0
    for _ in range(200):
        window, _ = calibrated(rng, WINDOW)
        right = rng.random(WINDOW) < window**2
        estimate = estimate_accuracy(window, accuracy_map, rng.integers(20, 60, WINDOW))
        errors.append(abs(estimate.accuracy - (window**2).mean()))
        raw_errors.append(abs(estimate_accuracy(window).accuracy - right.mean()))
        covered += estimate.low <= right.mean() <= estimate.high
    assert np.median(raw_errors) > 0.05
    assert np.percentile(errors, 95) <= 0.01, np.percentile(errors, 95)
    assert 0.9 <= covered / 200 <= 0.99, covered


def over_confident_when_short(rng: np.random.Generator, n: int, short_share: float):
    """Confidences, token counts, probabilities of being right and rightness of a model
    right with probability c where it says c on texts of 30 to 60 tokens, and c**3 on texts
    of 8 to 16 tokens."""
    confidence, _ = calibrated(rng, n)
    short = rng.random(n) < short_share
    tokens = np.where(short, rng.integers(8, 17, n), rng.integers(30, 61, n))
    p = np.where(short, confidence**3, confidence)
    return confidence, tokens, p, rng.random(n) < p


def test_a_stream_of_short_texts_is_estimated_through_the_bands_fitted_on_short_copies():
    """A map fitted on whole texts alone cannot know that the model is over-confident on
    short ones: on windows of short texts it is about 10 points high. Fitted on whole
    texts and short copies (as export fits it), each band has its own curve: the estimate
    is within a point of each window's expected accuracy, on short windows and on windows
    like the first."""
    rng = np.random.default_rng(3)
    confidence, tokens, _, right = over_confident_when_short(rng, 4000, short_share=0.5)
    long = tokens >= 30
    whole_texts_map = fit_accuracy_map(confidence[long], right[long], tokens[long], bands=1)
    banded = fit_accuracy_map(confidence, right, tokens)
    assert banded["token_edges"][0] > 8 and any(e > 17 for e in banded["token_edges"])
    for short_share in (1.0, 0.0):
        errors, whole_map_errors = [], []
        for _ in range(100):
            window, window_tokens, p, _ = over_confident_when_short(rng, WINDOW, short_share)
            estimate = estimate_accuracy(window, banded, window_tokens)
            errors.append(abs(estimate.accuracy - p.mean()))
            unbanded = estimate_accuracy(window, whole_texts_map, window_tokens).accuracy
            whole_map_errors.append(unbanded - p.mean())
        assert np.percentile(errors, 95) <= 0.01, (short_share, np.percentile(errors, 95))
        if short_share:
            assert np.min(whole_map_errors) > 0.08


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
    curve = {"confidence": [0.4, 0.8], "accuracy": [0.5, 0.7]}
    assert right_probabilities(np.array([0.1, 0.6, 0.99]), curve).tolist() == [0.5, 0.6, 0.7]
    banded = {"token_edges": [20.0], "curves": [{"confidence": [0.5], "accuracy": [0.3]}, curve]}
    both = right_probabilities(np.array([0.6, 0.6, 0.6]), banded, np.array([5, 20, 40]))
    assert both.tolist() == [0.3, 0.6, 0.6]  # a text of 20 tokens is in the second band
    with pytest.raises(ValueError, match="pass each text's tokens"):
        right_probabilities(np.array([0.6]), banded)
    assert np.isnan(estimate_accuracy(np.array([])).accuracy)
