"""Temperature scaling (Guo et al., 2017): one scalar T divides the logits before the
softmax, so that the top probability served as `confidence` matches how often the label
is right. T changes no argmax, so accuracy is untouched.

Export fits T on the validation split and writes it into the model folder; the runtime
applies it. NumPy only: the server reads it too.
"""

import json
from pathlib import Path

import numpy as np

from distrinews.errors import ModelFolderError

CALIBRATION_FILE = "calibration.json"

#: Bins of the expected calibration error and the reliability diagram (the usual 15).
ECE_BINS = 15


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits.astype(np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    return scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities per row, in float64."""
    return np.exp(log_softmax(logits, temperature))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 that minimises the negative log-likelihood of `labels`.

    The NLL is convex in b = 1/T, and its derivative, the mean over rows of
    E_p[z] - z_label, rises with b: bisection on its sign finds the minimum.
    """
    logits = logits.astype(np.float64)
    true_logit = logits[np.arange(len(labels)), labels]

    def slope(b: float) -> float:
        probabilities = softmax(logits, 1 / b)
        return float(((probabilities * logits).sum(axis=1) - true_logit).mean())

    low, high = 1e-3, 1e3  # T from 1000 (uniform) to 0.001 (one-hot)
    if slope(high) <= 0:  # the data would have the model surer still: the sharpest T
        return 1 / high
    for _ in range(60):
        middle = (low * high) ** 0.5  # in log space: T spans six decades
        low, high = (middle, high) if slope(middle) < 0 else (low, middle)
    return float(1 / ((low * high) ** 0.5))


def reliability(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width confidence bin: mean confidence, accuracy, row count (0 if empty)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    # Bin i holds (i/bins, (i+1)/bins]; a confidence of 0 cannot occur (at least 1/classes).
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    safe = np.maximum(counts, 1)
    mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / safe
    accuracy = np.bincount(index, weights=correct, minlength=bins) / safe
    return mean_confidence, accuracy, counts


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """The row-weighted mean gap between confidence and accuracy over confidence bins."""
    mean_confidence, accuracy, counts = reliability(probabilities, labels, bins)
    return float((counts * np.abs(mean_confidence - accuracy)).sum() / counts.sum())


def write_temperature(folder: Path, temperature: float, evidence: dict | None = None) -> None:
    """`temperature` into the folder, with the figures that justify it (ECE before/after)."""
    record = (evidence or {}) | {"temperature": temperature}
    (folder / CALIBRATION_FILE).write_text(json.dumps(record, indent=2))


def read_temperature(folder: Path) -> float:
    """The folder's fitted temperature; 1 (no scaling) for a model exported without one."""
    path = folder / CALIBRATION_FILE
    if not path.is_file():
        return 1.0
    try:
        temperature = json.loads(path.read_text())["temperature"]
    except (ValueError, KeyError, TypeError) as err:
        raise ModelFolderError(f"{path} holds no temperature ({err}); re-export the model") from err
    number = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
    if not number or not 0 < temperature < float("inf"):
        raise ModelFolderError(f"{path}: temperature {temperature!r} is not > 0; re-export it")
    return float(temperature)
