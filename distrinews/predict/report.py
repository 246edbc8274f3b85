"""What the predict step logs to MLflow: the model version and input dataset, rows and
throughput, the predicted-label distribution (a plot against the version's reference) and
its drift, and what became of each file."""

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from distrinews.config import PredictConfig
from distrinews.mlflow_runs import log_new_params, quiet_dataset_warnings, step_run
from distrinews.monitor.drift import VersionReport
from distrinews.monitor.png import png_image
from distrinews.monitor.report import signal_png
from distrinews.predict.files import BatchFile, read_input
from distrinews.predict.totals import BatchTotals
from distrinews.runtime.model_source import ModelSource, is_remote
from distrinews.runtime.onnx_classifier import read_labels
from distrinews.runtime.reference_profile import js_distance, read_profile


def model_name(source: ModelSource) -> str:
    """'distrinews/3' for a registered version; a run's URI as given; a folder's name."""
    if source.registered_model:
        return f"{source.registered_model}/{source.version}"
    return source.uri if is_remote(source.uri) else Path(source.uri).name


@contextmanager
def log_batch_run(
    cfg: PredictConfig, source: ModelSource, batch: list[BatchFile], folder: Path
) -> Iterator[Callable[[BatchTotals, int], None]]:
    """A run for the step; yields the function that logs its results. A stopped run (Ctrl-C,
    SIGTERM) ends KILLED, a failed one FAILED with its error."""
    import mlflow

    with step_run("predict", f"predict {model_name(source)} on {Path(cfg.input).name}"):
        log_new_params(asdict(cfg) | {"model_uri": source.uri})
        tags = {"model_uri": source.uri, "output": str(Path(cfg.output).resolve())}
        if source.registered_model:
            tags |= {"registered_model": source.registered_model, "model_version": source.version}
        if source.alias:
            tags["model_alias"] = source.alias
        mlflow.set_tags(tags)
        log_input_dataset(cfg, batch)
        try:
            yield lambda totals, removed: log_results(totals, removed, folder, source)
        except KeyboardInterrupt:
            mlflow.set_tag("error", "stopped by a signal before it finished")
            mlflow.end_run("KILLED")
            raise


def log_input_dataset(cfg: PredictConfig, batch: list[BatchFile]) -> None:
    """The input files as one dataset input of the run: its source the input path, its schema
    the first file's, its digest over the files' names, sizes and modification times (an
    archive is not read twice to be hashed)."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.models import infer_signature

    files = hashlib.sha1()
    for item in batch:
        stat = item.input.stat()
        files.update(f"{item.input.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    first = read_input(batch[0].input, cfg.text_column).head(100)
    path = str(Path(cfg.input).expanduser().resolve())
    with quiet_dataset_warnings():
        dataset = MetaDataset(
            source=resolve_dataset_source(path),
            name=Path(path).name,
            digest=files.hexdigest()[:8],
            schema=infer_signature(first).inputs,
        )
        mlflow.log_input(dataset, context="predict")


def log_results(totals: BatchTotals, removed: int, folder: Path, source: ModelSource) -> None:
    """Metrics, the label distribution's plot and drift, and a record of each file."""
    import mlflow

    labels = read_labels(folder)
    shares = totals.label_shares(labels)
    rows = totals.rows - totals.bad_rows
    metrics = {
        "rows": totals.rows,
        "bad_rows": totals.bad_rows,
        "files_scored": len(totals.scored),
        "files_kept": len(totals.files) - len(totals.scored),
        "partial_files_removed": removed,
        "seconds": totals.seconds,
        "texts_per_second": totals.rows / totals.seconds if totals.seconds else 0.0,
    }
    if rows:
        metrics["confidence_mean"] = totals.confidence_sum / rows
        shared = zip(labels, shares, strict=True)
        metrics |= {f"predicted_share/{label}": share for label, share in shared}
    profile = read_profile(folder)
    reference = [profile["predicted_labels"].get(label, 0.0) for label in labels] if profile else []
    report = VersionReport(model_name(source), rows)
    report.histograms["predicted_label"] = (list(labels), shares.tolist(), reference)
    if profile and rows:
        metrics["drift_predicted_label"] = report.drift["predicted_label"] = js_distance(
            shares, reference
        )
    mlflow.log_metrics(metrics)
    if rows:
        png = signal_png(report, "predicted_label", sample="this batch")
        mlflow.log_image(png_image(png), "predict/label_distribution.png")
    mlflow.log_dict({"files": [asdict(f) for f in totals.files]}, "predict/files.json")
