"""Find an exported model from a folder or an MLflow URI, and follow a registry alias.

Torch-free: the server and the promotion gate both load models through here,
so the gate scores exactly what the server will serve.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path

from distrinews.errors import ModelFolderError, RegistryUnreachable

#: `models:/<name>@<alias>`: a registered model's alias (MLflow 3; stages are deprecated).
ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
#: `models:/<name>/<version>`: one version of a registered model.
VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>[0-9]+)$")


#: MLflow error codes for a registered model or alias that does not exist.
NO_SUCH_ALIAS = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}
#: MLflow error codes that mean the registry answered "no" (not "could not ask").
REGISTRY_ANSWERS = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "PERMISSION_DENIED"}
#: HTTP 4xx statuses that may pass: a request timeout, rate limiting.
PASSING_CLIENT_ERRORS = {408, 429}


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


def alias_version(name: str, alias: str) -> str | None:
    """The version `name@alias` points to now, None if the registry has no such alias (or
    model). The one reader of an alias: the server's, and the promotion gate's.

    RegistryUnreachable if the registry did not answer; ModelFolderError if it
    refused otherwise (access denied).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        # A string, as in models:/<name>/<version> (a SQLite registry answers an int).
        return str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)
    except Exception as err:  # MLflow raises several types (not found, unreachable)
        if isinstance(err, MlflowException) and err.error_code in NO_SUCH_ALIAS:
            return None
        # Any other "no" is an answer too; anything else (connection refused, a
        # timeout, a 5xx) may pass.
        kind = ModelFolderError if is_answer(err) else RegistryUnreachable
        raise kind(
            f"cannot resolve models:/{name}@{alias} at {mlflow.get_tracking_uri()}: "
            f"{first_line(err)}"
        ) from err


def no_such_alias(name: str, alias: str) -> ModelFolderError:
    import mlflow

    return ModelFolderError(
        f"cannot resolve models:/{name}@{alias} at {mlflow.get_tracking_uri()}: the registry "
        "has no such alias or registered model"
    )


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
        if (version := alias_version(name, alias)) is None:
            raise no_such_alias(name, alias)
        return ModelSource(f"models:/{name}/{version}", name, version, alias)
    return ModelSource(model)


def local_model_folder(source: ModelSource, into: Path | None = None) -> Path:
    """The ONNX folder of a source: a local folder as is; an MLflow URI downloaded first,
    into `into` (else a new temporary folder: the caller owns it either way).

    A registered (pyfunc) model holds the folder among its artifacts; a run's
    plain `onnx_model` artifacts are the folder itself.
    """
    uri = source.uri
    if not is_remote(uri):
        return Path(uri)
    import mlflow

    try:
        folder = Path(
            mlflow.artifacts.download_artifacts(uri, dst_path=str(into) if into else None)
        )
    except Exception as err:  # MLflow and the artifact stores raise many types
        # A "no" (no such run, access denied, files missing) is this version's for good;
        # anything else may pass, and is worth another try later.
        kind = ModelFolderError if is_answer(err) else RegistryUnreachable
        raise kind(f"cannot download {uri}: {first_line(err)}") from err
    onnx_files = sorted(folder.rglob("*.onnx"))
    return onnx_files[0].parent if len(onnx_files) == 1 else folder


def is_answer(err: BaseException) -> bool:
    """Whether a failed registry or artifact request was answered "no" (asking again
    gets the same answer), rather than not answered at all (it may pass)."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        return err.error_code in REGISTRY_ANSWERS
    if isinstance(err, requests.HTTPError) and err.response is not None:
        status = err.response.status_code
        return 400 <= status < 500 and status not in PASSING_CLIENT_ERRORS
    # A local or mounted artifact store: the files are not there, or not ours to read
    # (not any OSError: connection errors and timeouts are OSErrors too).
    return isinstance(
        err, (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)
    )


def is_remote(uri: str) -> bool:
    """An MLflow URI (downloaded before use), not a local folder."""
    return "://" in uri or uri.startswith(("runs:/", "models:/"))


def first_line(err: BaseException) -> str:
    """An exception's message in one line (MLflow's run to several), or its type."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
