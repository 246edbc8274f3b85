"""Temperature scaling: the fit finds the temperature that generated the labels, the ECE
measures what it should, and the classifier serves calibrated probabilities."""

import json
import shutil

import numpy as np
import pytest

from distrinews.errors import ModelFolderError
from distrinews.runtime.calibration import (
    CALIBRATION_FILE,
    expected_calibration_error,
    fit_temperature,
    log_softmax,
    read_temperature,
    reliability,
    softmax,
    write_temperature,
)
from distrinews.runtime.onnx_classifier import OnnxClassifier


def sampled(temperature: float, rows: int = 20_000, seed: int = 0):
    """Logits, and labels drawn from softmax(logits / temperature): calibrated at that T."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(rows, 4))
    probabilities = softmax(logits, temperature)
    labels = (probabilities.cumsum(axis=1) < rng.random((rows, 1))).sum(axis=1)
    return logits, labels


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_the_fit_recovers_the_temperature_the_labels_were_drawn_with(true_temperature):
    logits, labels = sampled(true_temperature)
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.06)


def test_the_fitted_temperature_minimises_the_log_likelihood():
    logits, labels = sampled(2.0, rows=2000, seed=1)
    fitted = fit_temperature(logits, labels)

    def nll(temperature: float) -> float:
        return -log_softmax(logits, temperature)[np.arange(len(labels)), labels].mean()

    assert all(nll(fitted) <= nll(fitted * factor) for factor in (0.9, 0.99, 1.01, 1.1))


def test_scaling_brings_an_overconfident_model_s_ece_down():
    logits, labels = sampled(2.0)  # the raw logits are twice as sharp as the truth
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, fit_temperature(logits, labels)), labels)
    assert before > 0.05 and after < 0.01
    assert (softmax(logits, 2.0).argmax(axis=1) == logits.argmax(axis=1)).all(), "same labels"


def test_ece_by_hand():
    # Two rows at confidence 0.9 (one right), two at 0.6 (both right): bins 14 and 9.
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    confidence, accuracy, counts = reliability(probabilities, labels)
    assert counts[13] == 2 and counts[8] == 2 and counts.sum() == 4
    assert accuracy[13] == 0.5 and accuracy[8] == 1.0
    # (2 * |0.9 - 0.5| + 2 * |0.6 - 1.0|) / 4
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.4)


def test_a_folder_without_a_temperature_is_served_unscaled(tmp_path):
    assert read_temperature(tmp_path) == 1.0


@pytest.mark.parametrize(
    "content",
    [
        '{"temperature": 0}',
        '{"temperature": -1}',
        '{"t": 2}',
        '{"temperature": true}',
        '{"temperature": NaN}',
        "[",
        "2",
    ],
)
def test_a_bad_temperature_is_a_model_folder_error(tmp_path, content):
    (tmp_path / CALIBRATION_FILE).write_text(content)
    with pytest.raises(ModelFolderError, match="re-export"):
        read_temperature(tmp_path)


def test_the_classifier_applies_the_folder_s_temperature(tmp_path, tiny_onnx, texts):
    folder = shutil.copytree(tiny_onnx, tmp_path / "model")
    plain = OnnxClassifier(folder)
    write_temperature(folder, 0.25, {"ece_test": 0.01})
    scaled = OnnxClassifier(folder)
    assert json.loads((folder / CALIBRATION_FILE).read_text())["ece_test"] == 0.01
    assert (plain.temperature, scaled.temperature) == (1.0, 0.25)
    logits = plain.logits(texts)
    np.testing.assert_allclose(scaled.probabilities(texts), softmax(logits / 0.25), atol=1e-6)
    assert (scaled.probabilities(texts).argmax(axis=1) == logits.argmax(axis=1)).all()
    assert (
        scaled.probabilities(texts).max(axis=1).mean()
        > plain.probabilities(texts).max(axis=1).mean()
    )
