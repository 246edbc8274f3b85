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
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from distrinews.config import FeedbackConfig, TrackingConfig
from distrinews.data.feedback import PRODUCTION_ARTIFACT, FeedbackRows, as_named
from distrinews.mlflow_runs import (
    error_tag,
    log_feedback_split,
    log_new_params,
    log_split,
    prepare_experiment,
)
from distrinews.run_names import name_unnamed_run

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

    def log_feedback(
        self, rows: FeedbackRows, cfg: FeedbackConfig, labels: tuple[str, ...]
    ) -> None:
        """Record the feedback rows trained on and the production slice as dataset inputs
        (contexts feedback, production), and keep the slice as an artifact for promote."""

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

    def log_feedback(
        self, rows: FeedbackRows, cfg: FeedbackConfig, labels: tuple[str, ...]
    ) -> None:
        import tempfile
        from pathlib import Path

        for split in ("feedback", "production"):
            frame = getattr(rows, split)
            if not frame.empty:
                self._datasets[split] = log_feedback_split(
                    frame, cfg.feedback, cfg.feedback_since, split
                )
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / Path(PRODUCTION_ARTIFACT).name
            as_named(rows.production, labels).to_parquet(path)
            self._mlflow.log_artifact(str(path), str(Path(PRODUCTION_ARTIFACT).parent))

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
    prepare_experiment(run)
    return MlflowTracker(run.info.run_id, cfg.system_metrics)


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
