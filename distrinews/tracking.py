"""MLflow logging from the main process only.

`start_tracker` gives rank 0 an `MlflowTracker` and every other rank a
`Tracker` whose methods do nothing, so training code logs unconditionally
and no `if rank == 0` is scattered around (nanochat's DummyWandb idea).

Run selection: under `mlflow run` the run it created (MLFLOW_RUN_ID) is
used; after a torchrun restart, the run recorded in the checkpoint; else a
new run. Leaving the `with` block ends the run FINISHED, KILLED (Ctrl-C,
SIGTERM) or FAILED (any other exception).
"""

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distrinews.config import TrackingConfig, UserError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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

    def log_transformers_model(self, model: Any, tokenizer: Any) -> None: ...

    def metric_histories(self, keys: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
        return {key: [] for key in keys}


class MlflowTracker(Tracker):
    def __init__(self, run_id: str):
        import mlflow

        self._mlflow = mlflow
        self.run_id = run_id
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
            self._mlflow.end_run(status)
        finally:
            signal.signal(signal.SIGTERM, previous_handler)

    def log_params(self, params: dict[str, Any]) -> None:
        log_new_params(params)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._mlflow.set_tags(tags)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if step is not None:
            metrics = {k: v for k, v in metrics.items() if step > self._last_step.get(k, -1)}
        if metrics:
            # Asynchronous, so a slow tracking server does not stall training steps.
            self._mlflow.log_metrics(metrics, step=step, synchronous=False)

    def log_figure(self, draw: "Callable[[], Figure]", artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        figure = draw()
        self._mlflow.log_figure(figure, artifact_file)
        plt.close(figure)

    def log_transformers_model(self, model: Any, tokenizer: Any) -> None:
        """The save_pretrained folder as a transformers-flavour MLflow model."""
        self._mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer},
            name="model",
            task="text-classification",
            # Named explicitly: MLflow's inference of requirements probes
            # optional packages (torchvision) and fails where they are absent.
            pip_requirements=[
                f"{package}=={version(package).split('+')[0]}"
                for package in ("mlflow", "torch", "transformers", "tokenizers")
            ],
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


def start_tracker(is_main: bool, cfg: TrackingConfig, resume_run_id: str | None = None) -> Tracker:
    """Start (or re-open) the MLflow run on the main process."""
    if not is_main:
        return Tracker()
    import mlflow

    run_id = os.environ.get("MLFLOW_RUN_ID") or resume_run_id
    if run_id is None:
        mlflow.set_experiment(cfg.experiment)
    run = mlflow.start_run(run_id=run_id, run_name=None if run_id else (cfg.run_name or None))
    return MlflowTracker(run.info.run_id)


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


def load_logged_model(run_id: str) -> tuple[Any, Any, Any]:
    """(model, tokenizer, run) of a train run's logged transformers model."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from distrinews.config import UserError
    from distrinews.model import match_inputs_to_model

    try:
        run = mlflow.MlflowClient().get_run(run_id)
        components = mlflow.transformers.load_model(
            f"runs:/{run_id}/model", return_type="components"
        )
    except (MlflowException, OSError) as err:
        raise UserError(
            f"cannot load the model of run {run_id!r} from {mlflow.get_tracking_uri()} "
            f"({str(err).splitlines()[0]}); pass the id of a FINISHED train run"
        ) from err
    model, tokenizer = components["model"], components["tokenizer"]
    match_inputs_to_model(tokenizer, model)
    return model, tokenizer, run
