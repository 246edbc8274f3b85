"""The exported ONNX classifier as an MLflow pyfunc model, for the Model Registry.

`mlflow.pyfunc.load_model("models:/distrinews@champion").predict(["headline"])`
answers a DataFrame of labels, confidences and class probabilities with the same
OnnxClassifier the server runs; `mlflow.pyfunc.spark_udf` runs it on Spark.
It carries the torch-free part of this package it needs (`distrinews.runtime`).
The ONNX folder is stored whole under the model's artifacts, so the server
downloads the registered model and reads the folder directly.
"""

import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

#: The key of the ONNX folder among the pyfunc model's artifacts.
ONNX_FOLDER = "onnx_model"


class OnnxTextClassifier(mlflow.pyfunc.PythonModel):
    """Texts in; per text a label, its confidence, each class's probability, and an error
    for a row that is not a text (its label empty), as a DataFrame."""

    def load_context(self, context: Any) -> None:
        from distrinews.runtime.onnx_classifier import OnnxClassifier

        self.classifier = OnnxClassifier(context.artifacts[ONNX_FOLDER])

    # A DataFrame, as MLflow hands it over after applying the signature (a list becomes a
    # one-column frame). Not list[str]: MLflow would then check that each value is a string
    # and fail a whole batch (a Spark partition) on one missing text.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        from distrinews.runtime.table_scoring import score_values, texts_of

        return score_values(self.classifier, texts_of(model_input))


def signature(labels: tuple[str, ...]) -> Any:
    """One column of texts in (unnamed: a list, a Series or any one-column frame fits); the
    answer columns out (Spark's UDF takes its result type here)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    from distrinews.runtime.table_scoring import CONFIDENCE, ERROR, LABEL, probability_column

    outputs = [ColSpec(DataType.string, LABEL), ColSpec(DataType.double, CONFIDENCE)]
    outputs += [ColSpec(DataType.double, probability_column(label)) for label in labels]
    outputs.append(ColSpec(DataType.string, ERROR, required=False))
    return ModelSignature(Schema([ColSpec(DataType.string)]), Schema(outputs))


def log_onnx_model(folder: Path, example_texts: list[str], registered_model: str) -> Any:
    """Log `folder` as a pyfunc model of the active run; register it unless the name is empty.

    MLflow stores this file with the model and runs it at load (models from
    code): its last line names the model; load_context opens the ONNX folder.
    The model carries the package's torch-free runtime as its code, so it
    loads wherever its pip requirements are installed.
    """
    import onnxruntime
    import tokenizers

    from distrinews.runtime.onnx_classifier import read_labels
    from distrinews.runtime.table_scoring import TEXT

    with tempfile.TemporaryDirectory() as work:
        return mlflow.pyfunc.log_model(
            name=ONNX_FOLDER,
            python_model=Path(__file__),  # models from code: nothing pickled
            artifacts={ONNX_FOLDER: str(folder)},
            input_example=pd.DataFrame({TEXT: example_texts}),
            signature=signature(read_labels(folder)),
            code_paths=[str(runtime_package(Path(work)))],
            pip_requirements=[
                f"onnxruntime=={onnxruntime.__version__}",
                f"tokenizers=={tokenizers.__version__}",
                f"mlflow-skinny=={mlflow.__version__}",
                f"pandas=={pd.__version__}",
            ],
            registered_model_name=registered_model or None,
        )


#: The modules of `distrinews` outside `runtime/` that the runtime imports (torch-free).
RUNTIME_NEEDS = ("errors.py",)


def runtime_package(work: Path) -> Path:
    """A copy of `distrinews` holding only `runtime/` and what it imports, in `work`."""
    package = work / "distrinews"
    runtime = Path(__file__).parent
    shutil.copytree(runtime, package / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
    for module in RUNTIME_NEEDS:
        shutil.copy2(runtime.parent / module, package / module)
    (package / "__init__.py").write_text("")
    return package


mlflow.models.set_model(OnnxTextClassifier())
