"""The rows export fits the accuracy map on: shortened copies of the validation texts with
their labels, and the map they give a tiny int8 model."""

import numpy as np
import pandas as pd

from distrinews.export import accuracy_map
from distrinews.export.accuracy_map import COPIES, MIN_WORDS, fit_on_validation, shortened_copies
from distrinews.runtime.accuracy_estimate import LENGTH_BANDS, estimate_accuracy
from distrinews.runtime.onnx_classifier import OnnxClassifier


def test_copies_are_prefixes_and_spans_of_their_text_with_its_label():
    texts = ["one two three four five six seven eight nine ten", "too short", "a b c d e"]
    copies, sources = shortened_copies(texts)
    assert len(copies) == 4 * COPIES and sources.tolist() == [0] * 2 * COPIES + [2] * 2 * COPIES
    for copy, source in zip(copies, [texts[0]] * 2 * COPIES + [texts[2]] * 2 * COPIES, strict=True):
        words = copy.split()
        assert MIN_WORDS <= len(words) < len(source.split()) and copy in source
    prefixes = copies[:COPIES] + copies[2 * COPIES : 3 * COPIES]
    assert all(texts[0].startswith(p) or texts[2].startswith(p) for p in prefixes)
    assert copies == shortened_copies(texts)[0]  # seeded: reproducible


def test_at_most_max_texts_are_copied(monkeypatch):
    monkeypatch.setattr(accuracy_map, "MAX_TEXTS", 5)
    copies, _ = shortened_copies([f"w{i} a b c d e f" for i in range(40)])
    assert len(copies) == 5 * 2 * COPIES
    assert len({c.split()[0] for c in copies[:: 2 * COPIES]}) == 5


def test_the_map_has_a_curve_per_band_and_the_short_bands_see_the_short_copies(
    tiny_onnx, small_data
):
    frame = pd.read_parquet(small_data / "train.parquet").iloc[:300]
    texts, labels = frame["text"].tolist(), frame["label"].to_numpy()
    classifier = OnnxClassifier(tiny_onnx)
    fitted = fit_on_validation(classifier, texts, labels, classifier.logits(texts))
    assert len(fitted["curves"]) == len(fitted["curve_se"]) == LENGTH_BANDS
    # 300 texts: each band's level is known to within a few points, not exactly.
    assert all(0.005 < se < 0.1 for se in fitted["curve_se"]), fitted["curve_se"]
    shortest = min(len(e.ids) for e in classifier.encode(texts))
    assert fitted["token_edges"][0] < shortest  # a band of texts shorter than any whole one
    # Estimated on the whole texts, through the map, it is near their share right.
    probabilities = classifier.calibrated(classifier.logits(texts))
    tokens = np.array([len(e.ids) for e in classifier.encode(texts)])
    estimate = estimate_accuracy(probabilities.max(axis=1), fitted, tokens)
    right = (probabilities.argmax(axis=1) == labels).mean()
    assert abs(estimate.accuracy - right) < 0.1
