"""What export adds for monitoring, in process on a tiny int8 model: the temperature fitted
on the train run's validation rows, the profile of those rows, the diagram in the run."""

import json
import shutil

import mlflow
import numpy as np

from devkit.mlflow_store import tracking_uri
from distrinews.config import DataConfig
from distrinews.data.splits import load_splits
from distrinews.export.calibration import calibrate_and_profile
from distrinews.runtime.calibration import log_softmax
from distrinews.runtime.labels import LABELS
from distrinews.runtime.onnx_classifier import OnnxClassifier


def test_calibrate_and_profile_writes_both_and_logs_the_diagram(
    tmp_path, tiny_onnx, small_data, mlflow_store
):
    folder = shutil.copytree(tiny_onnx, tmp_path / "model")
    splits = load_splits(DataConfig(data=str(small_data), max_eval_rows=60), 42, LABELS)
    test_labels = splits.test["label"].to_numpy()
    test_logits = OnnxClassifier(folder).logits(splits.test["text"].tolist())
    with tracking_uri(mlflow_store.uri):
        # Named: MLflow's fluent API remembers the last test's experiment id otherwise.
        mlflow.set_experiment("export")
        with mlflow.start_run() as run:
            figures = calibrate_and_profile(folder, splits, test_logits, test_labels)

    temperature = figures["temperature"]
    assert json.loads((folder / "calibration.json").read_text())["temperature"] == temperature
    assert OnnxClassifier(folder).temperature == temperature
    # The fit lowers the validation log-likelihood's loss below no scaling.
    validation = splits.validation
    logits = OnnxClassifier(folder).logits(validation["text"].tolist())
    rows = np.arange(len(validation))

    def nll(t: float) -> float:
        return -log_softmax(logits, t)[rows, validation["label"].to_numpy()].mean()

    assert nll(temperature) <= nll(1.0)
    assert 0 <= figures["ece_test"] <= 1 and 0 <= figures["ece_validation_uncalibrated"] <= 1
    profile = json.loads((folder / "reference_profile.json").read_text())
    assert profile["rows"] == len(validation) and profile["temperature"] == temperature
    prior = np.bincount(splits.train["label"], minlength=4) / len(splits.train)
    assert list(profile["class_prior"].values()) == prior.tolist()
    artifacts = mlflow_store.client.list_artifacts(run.info.run_id, "calibration")
    assert [a.path for a in artifacts] == ["calibration/reliability.png"]
