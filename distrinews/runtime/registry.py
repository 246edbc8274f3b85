"""Find an exported model from a folder or an MLflow URI, and follow a registry alias.

Torch-free: the server and the promotion gate both load models through here,
so the gate scores exactly what the server will serve.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path

from distrinews.runtime.onnx_classifier import ModelFolderError

#: `models:/<name>@<alias>`: a registered model's alias (MLflow 3; stages are deprecated).
ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
#: `models:/<name>/<version>`: one version of a registered model.
VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>[0-9]+)$")


@dataclass(frozen=True)
class ModelSource:
    """Where a served model came from: a folder or URI, and its registry version if any."""

    uri: str
    registered_model: str | None = None
    version: str | None = None
    alias: str | None = None


def fail_fast_on_unreachable_server() -> None:
    """Fewer, shorter retries than MLflow's default (7 retries, about 2 minutes).

    A server whose tracking server is down should say so in seconds. Values
    the user set are kept.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def alias_version(name: str, alias: str) -> str:
    """The version `name@alias` points to now; ModelFolderError if it cannot be read."""
    import mlflow

    try:
        return mlflow.MlflowClient().get_model_version_by_alias(name, alias).version
    except Exception as err:  # MLflow raises several types (not found, unreachable)
        raise ModelFolderError(
            f"cannot resolve models:/{name}@{alias} at {mlflow.get_tracking_uri()}: "
            f"{_first_line(err)}"
        ) from err


def resolve_source(model: str) -> ModelSource:
    """Pin an alias to the version it points to now, so a load never races a move."""
    if not model:
        raise ModelFolderError(
            "no model given: set DISTRINEWS_MODEL or pass --model <folder or URI>"
        )
    if match := VERSION_URI.match(model):
        return ModelSource(model, match["name"], match["version"])
    if match := ALIAS_URI.match(model):
        name, alias = match["name"], match["alias"]
        version = alias_version(name, alias)
        return ModelSource(f"models:/{name}/{version}", name, version, alias)
    return ModelSource(model)


def local_model_folder(source: ModelSource) -> Path:
    """The ONNX folder of a source: a local folder as is; an MLflow URI downloaded first.

    A registered (pyfunc) model holds the folder among its artifacts; a run's
    plain `onnx_model` artifacts are the folder itself.
    """
    uri = source.uri
    if "://" not in uri and not uri.startswith(("runs:/", "models:/")):
        return Path(uri)
    import mlflow

    try:
        folder = Path(mlflow.artifacts.download_artifacts(uri))
    except Exception as err:  # MLflow raises several types for a bad URI
        raise ModelFolderError(f"cannot download {uri}: {_first_line(err)}") from err
    onnx_files = sorted(folder.rglob("*.onnx"))
    return onnx_files[0].parent if len(onnx_files) == 1 else folder


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
