"""What every step's MLflow run shares: the run of an evaluate, export or promote step,
errors recorded as tags, params logged once, splits as datasets, and a tracking server
that answers before any work starts.
"""

import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distrinews.config import TrackingConfig
from distrinews.errors import UserError
from distrinews.run_names import data_name, name_unnamed_run
from distrinews.runtime.prediction_store import shown

if TYPE_CHECKING:
    import pandas as pd


def error_tag(exc: BaseException) -> dict[str, str]:
    """The `error` tag a FAILED run carries, so the UI says why it failed."""
    return {"error": f"{type(exc).__name__}: {exc}"[:500]}


@contextmanager
def tag_errors() -> Iterator[None]:
    """Tag the active run with any exception leaving the block (start_run marks it FAILED)."""
    import mlflow

    try:
        yield
    except Exception as err:
        mlflow.set_tags(error_tag(err))
        raise


def log_new_params(params: dict[str, Any]) -> None:
    """Log params to the active run, skipping keys it already has.

    `mlflow run` logs the MLproject parameters itself, as typed on its
    command line ("1e-4", "false", "''"); MLflow refuses to change a param,
    so only the keys it has not logged are added.
    """
    import mlflow

    logged = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    mlflow.log_params({k: v for k, v in params.items() if k not in logged})


def check_tracking_server(timeout: float = 10) -> None:
    """Fail fast when MLFLOW_TRACKING_URI names a tracking server that does not answer.

    MLflow itself would retry for minutes, and only once the first metric is
    logged; a local store (a path, sqlite:) needs no check.
    """
    import urllib.error
    import urllib.request

    import mlflow

    uri = mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # it answers (an auth proxy may refuse /health); MLflow takes it from here
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(
            f"the MLflow tracking server {uri} does not answer ({reason}); start it, "
            "or unset MLFLOW_TRACKING_URI to log to ./mlflow.db"
        ) from err


# MLflow imports PySpark to check whether an input example is a Spark DataFrame, and PySpark
# warns at that import that it does not fully support pandas 3: nothing a user of these steps
# can act on (the Spark path this project has is tested with pandas 3), so it is not shown.
warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)

#: The tag by which MLflow's UI chooses what an experiment opens on. Without it, MLflow 3
#: may open the GenAI "Overview" page (Traces: 0) instead of the runs table.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def prepare_experiment(run: Any) -> None:
    """The run's experiment opens on its runs table in the UI (a kind a user set is kept);
    and say so when `mlflow run` without --experiment-name put the run in Default."""
    import mlflow
    from mlflow.tracking.default_experiment import DEFAULT_EXPERIMENT_ID

    client, key = mlflow.MlflowClient(), EXPERIMENT_KIND[0]
    if key not in client.get_experiment(run.info.experiment_id).tags:
        client.set_experiment_tag(run.info.experiment_id, *EXPERIMENT_KIND)
    if run.info.experiment_id == DEFAULT_EXPERIMENT_ID:
        print(
            "note: this run is in MLflow's Default experiment; pass --experiment-name "
            f"{TrackingConfig.experiment} to mlflow run (or set MLFLOW_EXPERIMENT_NAME) "
            "to keep the project's runs together",
            file=sys.stderr,
        )


@contextmanager
def step_run(step: str, name: str, source_run: Any = None) -> Iterator[Any]:
    """The run of an evaluate or export step, named, nested under its source run.

    Under `mlflow run`, the run it created; else a new run in the source run's
    experiment. An exception leaving the block tags the run and marks it FAILED.
    """
    import mlflow

    under_mlflow_run = bool(os.environ.get("MLFLOW_RUN_ID"))
    experiment_id = None
    if source_run is not None and not under_mlflow_run:
        experiment_id = source_run.info.experiment_id
    # Under `mlflow run`, a run_name here would replace the user's --run-name.
    run_name = None if under_mlflow_run else name
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run, tag_errors():
        name_unnamed_run(run, name)
        prepare_experiment(run)
        tags = {"step": step}
        if source_run is not None:
            tags |= {
                "source_run_id": source_run.info.run_id,
                "source_run_name": source_run.info.run_name,
            }
            # Nested under its source run, unless a workflow (retrain) already made it a
            # child of its own run.
            if "mlflow.parentRunId" not in run.data.tags:
                tags["mlflow.parentRunId"] = source_run.info.run_id
        mlflow.set_tags(tags)
        yield run


def log_split(frame: "pd.DataFrame", data: str, split: str) -> Any:
    """Log one split as a dataset input of the active run (context: the split's name).

    Returns the MLflow dataset (source, digest, schema, row count), to link
    metrics computed on it.
    """
    import mlflow.data
    from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

    local = Path(data).expanduser()
    source: Any = str(local.resolve())
    if not local.exists():
        # Validation is carved out of the Hub's train split.
        source = HuggingFaceDatasetSource(path=data, split="test" if split == "test" else "train")
    with quiet_dataset_warnings():
        dataset = mlflow.data.from_pandas(
            frame, source=source, name=f"{data_name(data)}-{split}", targets="label"
        )
        mlflow.log_input(dataset, context=split)
    return dataset


@contextmanager
def quiet_dataset_warnings() -> Iterator[None]:
    """Without MLflow's warnings that do not apply to a split logged as a dataset."""
    with warnings.catch_warnings():
        # A local path matches two registered source types; both are the local one.
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
        # Integer labels are integers: MLflow's hint about missing values does not apply.
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer")
        yield


def log_feedback_split(frame: "pd.DataFrame", store: str, since: str, split: str) -> Any:
    """Log rows taken from the prediction log's feedback as a dataset input of the active run
    (context `split`: feedback or production), its source the log (password masked)."""
    import mlflow.data

    source = prediction_log_source(store, since)
    with quiet_dataset_warnings():
        dataset = mlflow.data.from_pandas(
            frame, source=source, name=f"feedback-{split}", targets="label"
        )
        mlflow.log_input(dataset, context=split)
    return dataset


def prediction_log_source(store: str, since: str) -> Any:
    """A dataset source that names a prediction log and the feedback window read from it.

    MLflow has no source type for a database URL; this one records where the rows came
    from, which is all the UI shows (the rows themselves are logged as an artifact).
    """
    from mlflow.data.dataset_source import DatasetSource

    class PredictionLogSource(DatasetSource):
        def __init__(self, url: str, feedback_since: str):
            self.url, self.feedback_since = url, feedback_since

        @staticmethod
        def _get_source_type() -> str:
            return "distrinews_prediction_log"

        def load(self) -> None:
            raise NotImplementedError("read it with distrinews.data.feedback.read_feedback")

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source: Any) -> "PredictionLogSource":
            raise NotImplementedError

        def to_dict(self) -> dict[str, str]:
            return {"url": self.url, "feedback_since": self.feedback_since}

        @classmethod
        def from_dict(cls, source_dict: dict) -> "PredictionLogSource":
            return cls(source_dict["url"], source_dict.get("feedback_since", ""))

    return PredictionLogSource(shown(store), since)


def download_if_logged(run_id: str, artifact: str, into: Path) -> Path | None:
    """The run's artifact `artifact` downloaded into `into`; None if the run has none.

    Listing its folder first: MLflow raises a different error per artifact store
    for a missing file, and an absent optional artifact is not an error here.
    """
    import mlflow

    folder, name = artifact.rsplit("/", 1)
    if name not in {
        Path(a.path).name for a in mlflow.MlflowClient().list_artifacts(run_id, folder)
    }:
        return None
    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact, dst_path=str(into)
        )
    )


def git_commit() -> str:
    """Commit of the code being run (mlflow run tags it too; plain torchrun does not)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
