"""The exported ONNX classifier as an MLflow pyfunc model, for the Model Registry.

`mlflow.pyfunc.load_model("models:/distrinews@champion").predict(["headline"])`
answers labels and confidences with the same OnnxClassifier the server runs.
It carries the torch-free part of this package it needs (`distrinews.runtime`).
The ONNX folder is stored whole under the model's artifacts, so the server
downloads the registered model and reads the folder directly.
"""

import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc
from pydantic import BaseModel

#: The key of the ONNX folder among the pyfunc model's artifacts.
ONNX_FOLDER = "onnx_model"


class Prediction(BaseModel):
    label: str
    confidence: float


class OnnxTextClassifier(mlflow.pyfunc.PythonModel):
    """Texts in; a label and its confidence out for each."""

    def load_context(self, context: Any) -> None:
        from distrinews.runtime.onnx_classifier import OnnxClassifier

        self.classifier = OnnxClassifier(context.artifacts[ONNX_FOLDER])

    # MLflow reads these type hints: it checks and converts the input to a
    # list of strings (a one-column frame, a list, a Series all work).
    def predict(self, model_input: list[str], params: dict | None = None) -> list[Prediction]:
        rows = self.classifier.probabilities(model_input)
        labels = self.classifier.labels
        return [Prediction(label=labels[row.argmax()], confidence=row.max()) for row in rows]


def log_onnx_model(folder: Path, example_texts: list[str], registered_model: str) -> Any:
    """Log `folder` as a pyfunc model of the active run; register it unless the name is empty.

    MLflow stores this file with the model and runs it at load (models from
    code): its last line names the model; load_context opens the ONNX folder.
    The model carries the package's torch-free runtime as its code, so it
    loads wherever its pip requirements are installed.
    """
    import onnxruntime
    import tokenizers

    with tempfile.TemporaryDirectory() as work:
        return mlflow.pyfunc.log_model(
            name=ONNX_FOLDER,
            python_model=Path(__file__),  # models from code: nothing pickled
            artifacts={ONNX_FOLDER: str(folder)},
            input_example=example_texts,
            code_paths=[str(runtime_package(Path(work)))],
            pip_requirements=[
                f"onnxruntime=={onnxruntime.__version__}",
                f"tokenizers=={tokenizers.__version__}",
                f"mlflow-skinny=={mlflow.__version__}",
                "pandas",
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
