"""What export adds so the served model can be watched: a temperature fitted on the
validation split (so `confidence` means what it says) and the reference profile that
production traffic is compared with. Both go into the model folder before it is logged,
so every registered version carries them.
"""

from pathlib import Path

import numpy as np

from distrinews.data.splits import Splits
from distrinews.export.accuracy_map import fit_on_validation
from distrinews.plots import reliability_figure
from distrinews.runtime.calibration import (
    expected_calibration_error,
    fit_temperature,
    reliability,
    softmax,
    write_temperature,
)
from distrinews.runtime.onnx_classifier import OnnxClassifier
from distrinews.runtime.reference_profile import build_profile, write_reference_texts


def calibrate_and_profile(
    int8_dir: Path, splits: Splits, test_logits: np.ndarray, test_labels: np.ndarray
) -> dict[str, float]:
    """Fit T on the int8 model's validation logits; write it and the profile into
    `int8_dir`; log the calibration to the active run. Returns its figures for the report."""
    import mlflow

    model = OnnxClassifier(int8_dir, threads=0)
    texts = splits.validation["text"].tolist()
    labels = splits.validation["label"].to_numpy()
    validation_logits = model.logits(texts)
    temperature = fit_temperature(validation_logits, labels)
    test_before, test_after = softmax(test_logits), softmax(test_logits, temperature)
    figures = {
        "temperature": temperature,
        "ece_validation_uncalibrated": expected_calibration_error(
            softmax(validation_logits), labels
        ),
        "ece_validation": expected_calibration_error(
            softmax(validation_logits, temperature), labels
        ),
        "ece_test_uncalibrated": expected_calibration_error(test_before, test_labels),
        "ece_test": expected_calibration_error(test_after, test_labels),
    }
    write_temperature(int8_dir, temperature, figures | {"fitted_on_rows": len(labels)})
    model.temperature = temperature
    train_labels = splits.train["label"].to_numpy()
    accuracy_map = fit_on_validation(model, texts, labels, validation_logits)
    profile = build_profile(
        model, texts, train_labels, logits=validation_logits, accuracy_map=accuracy_map
    )
    profile.write(int8_dir)
    write_reference_texts(int8_dir, texts)
    curves = {
        f"uncalibrated (ECE {figures['ece_test_uncalibrated']:.4f})": reliability(
            test_before, test_labels
        ),
        f"T = {temperature:.3f} (ECE {figures['ece_test']:.4f})": reliability(
            test_after, test_labels
        ),
    }
    figure = reliability_figure(curves, f"int8 model on {len(test_labels)} test rows")
    mlflow.log_figure(figure, "calibration/reliability.png")
    return figures
