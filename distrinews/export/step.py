"""The export step: a train run's model (or a checkpoint folder) to a checked, logged and
registered int8 ONNX model, in an MLflow run nested under the train run.

The conversion is `onnx_conversion`'s, the checks `export_checks`'. The int8
model is registered only if its test accuracy stays within `max_accuracy_drop`
points of the PyTorch model it came from.
"""

import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from distrinews.config import DataConfig, ExportConfig, TrainConfig
from distrinews.data.splits import Splits, load_splits
from distrinews.errors import UserError
from distrinews.export.calibration import calibrate_and_profile
from distrinews.export.checks import compare_with_pytorch, int8_drop_points
from distrinews.export.conversion import describe_graph, quantize_to_int8
from distrinews.mlflow_runs import log_new_params, log_split, step_run
from distrinews.promote.evidence import UNTRAINED, describe_version
from distrinews.runtime.cpu import available_cpus, cpu_name, detect_target
from distrinews.runtime.labels import LABELS, class_names
from distrinews.runtime.pyfunc import log_onnx_model
from distrinews.train.logged_models import load_logged_model
from distrinews.train.model import load_model_and_tokenizer, resolve_model_path

#: Float slack when comparing accuracy points with a limit: 100 * (182/200 - 181/200)
#: is 0.5000000000000004, and a drop of exactly the limit is allowed.
POINTS_TOLERANCE = 1e-9


def run_export(cfg: ExportConfig, data_cfg: DataConfig) -> dict[str, float]:
    """The export step: resolve the source, then export and check it in a run of its own."""
    target = detect_target() if cfg.target == "auto" else cfg.target
    if cfg.output:
        check_replaceable(Path(cfg.output))  # before the run: a refusal leaves nothing behind
    with tempfile.TemporaryDirectory(prefix="distrinews-export-") as work:
        work_dir = Path(work)
        source_run, checkpoint, untrained = resolve_checkpoint(cfg, work_dir)
        data_cfg, seed = as_trained(data_cfg, source_run)
        source = source_run.info.run_name if source_run else Path(cfg.checkpoint).name
        with step_run("export", f"export {source} int8-{target}", source_run) as run:
            import mlflow

            mlflow.set_tags({"quantization": describe_graph(target)})
            if untrained:  # the registered version says so, and promote refuses it
                mlflow.set_tag(UNTRAINED, "true")
            int8_dir, report = export_and_check(cfg, data_cfg, checkpoint, (target, seed), work_dir)
            report["export_run_id"] = run.info.run_id
        if cfg.output:
            publish(int8_dir, Path(cfg.output))
    return report


REPORT = "export_report.json"


def as_trained(data_cfg: DataConfig, source_run: Any) -> tuple[DataConfig, int]:
    """The data settings and seed of the train run (the defaults for a checkpoint folder):
    truncate as it was trained, and carve the same validation rows, which it never saw."""
    params = source_run.data.params if source_run is not None else {}
    max_length = int(params.get("max_length", data_cfg.max_length))
    val_fraction = float(params.get("val_fraction", data_cfg.val_fraction))
    seed = int(params.get("seed", TrainConfig.seed))
    return replace(data_cfg, max_length=max_length, val_fraction=val_fraction), seed


def check_replaceable(output: Path) -> None:
    """`output` may be written: new, empty, or an earlier export (which is replaced). A
    mistyped `-P output=` must not delete a folder of something else."""
    if output.is_file() or (
        output.is_dir() and any(output.iterdir()) and not (output / REPORT).is_file()
    ):
        raise UserError(
            f"output={output} exists and is not an exported model folder (no {REPORT}); "
            "pass a new folder, an empty one, or an earlier export's"
        )


def publish(folder: Path, output: Path) -> None:
    """Copy `folder` to `output` whole or not at all: a server started from `output` never
    finds half a model, even if the export is killed while copying."""
    staging = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    retired = output.with_name(f".{output.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(folder, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if output.exists():
        os.replace(output, retired)
    os.replace(staging, output)
    shutil.rmtree(retired, ignore_errors=True)


def export_and_check(
    cfg: ExportConfig,
    data_cfg: DataConfig,
    checkpoint: Path,
    target_and_seed: tuple[str, int],
    work_dir: Path,
) -> tuple[Path, dict[str, float]]:
    """Quantize, check against PyTorch, calibrate and profile, log it all to the active run,
    register it if its accuracy holds; UserError (once logged) if int8 loses more than the
    limit."""
    target, seed = target_and_seed
    splits = export_splits(cfg, data_cfg, checkpoint, target, seed)
    fp32_dir, int8_dir = quantize_to_int8(
        checkpoint, work_dir / "onnx", target, data_cfg.max_length
    )
    test = splits.test
    texts, labels = test["text"].tolist(), test["label"].to_numpy()
    report, int8_logits = compare_with_pytorch(
        checkpoint, fp32_dir, int8_dir, texts, labels, cfg.latency_texts
    )
    report["int8_accuracy_drop_points"] = drop_points = int8_drop_points(report)
    report |= calibrate_and_profile(int8_dir, splits, int8_logits, labels)
    evidence = record_evidence(cfg, target, len(test), report, int8_dir)
    accepted = drop_points <= cfg.max_accuracy_drop + POINTS_TOLERANCE
    # A rejected model is still logged, to look into, but never registered.
    version = log_and_register(int8_dir, texts[:2], cfg.registered_model if accepted else "")
    if version:
        describe_version(cfg.registered_model, version, evidence | report)
        report["registered_version"] = int(version)
    if not accepted:
        raise UserError(
            f"int8 accuracy {report['accuracy_onnx_int8']:.4f} is {drop_points:.2f} points "
            f"below PyTorch's {report['accuracy_pytorch_fp32']:.4f} (limit "
            f"{cfg.max_accuracy_drop}); try another target or raise max_accuracy_drop"
        )
    return int8_dir, report


def export_splits(
    cfg: ExportConfig, data_cfg: DataConfig, checkpoint: Path, target: str, seed: int
) -> Splits:
    """The splits, labelled as the checkpoint's classes; the test split logged with the
    settings. Validation is the train run's (its `seed`): the temperature and the reference
    profile are fitted on rows it never trained on. Test is the rows `promote` scores
    (seed 0 picks them when max_eval_rows caps it), so the two compare."""
    config = json.loads((checkpoint / "config.json").read_text())
    labels = class_names(config.get("id2label"))
    splits = load_splits(data_cfg, seed=seed, model_labels=labels)
    if seed != 0 and data_cfg.max_eval_rows:
        splits = replace(splits, test=load_splits(data_cfg, seed=0, model_labels=labels).test)
    if splits.validation.empty:
        raise UserError(
            f"no validation rows in {data_cfg.data} (val_fraction={data_cfg.val_fraction}): "
            "the temperature and the reference profile are fitted on them"
        )
    log_split(splits.test, data_cfg.data, "test")
    log_split(splits.validation, data_cfg.data, "validation")
    log_new_params(
        asdict(cfg)
        | {"resolved_target": target, "test_rows": len(splits.test), "seed": seed}
        | {"validation_rows": len(splits.validation), "max_length": data_cfg.max_length}
    )
    return splits


def record_evidence(
    cfg: ExportConfig, target: str, test_rows: int, report: dict[str, float], int8_dir: Path
) -> dict[str, Any]:
    """The checks as `export/` metrics of the run, and with where the model came from,
    as the folder's export_report.json; returns that provenance."""
    import mlflow

    mlflow.log_metrics({f"export/{key}": value for key, value in report.items()})
    run = mlflow.get_run(mlflow.active_run().info.run_id)
    evidence = {
        "target": target,
        "quantization": describe_graph(target),
        "source": run.data.tags.get("source_run_name") or Path(cfg.checkpoint).name,
        "source_run_id": run.data.tags.get("source_run_id"),
        "export_run_id": run.info.run_id,
        "test_rows": test_rows,
        UNTRAINED: run.data.tags.get(UNTRAINED),
        # The latency figures hold for this CPU only; a student's size is on its page too.
        "latency_cpu": f"{cpu_name()}, {available_cpus()} vCPUs",
        "layers": encoder_layers(int8_dir),
    }
    (int8_dir / REPORT).write_text(json.dumps(evidence | report, indent=2))
    return evidence


def encoder_layers(folder: Path) -> int | None:
    """How many encoder layers the exported model has (BERT's or DistilBERT's config key)."""
    config = json.loads((folder / "config.json").read_text())
    return config.get("num_hidden_layers", config.get("n_layers"))


def log_and_register(int8_dir: Path, example_texts: list[str], registered_model: str) -> str:
    """Log the int8 folder as an MLflow model; its registered version ("" if not registered)."""
    info = log_onnx_model(int8_dir, example_texts, registered_model)
    return str(info.registered_model_version or "")


def resolve_checkpoint(cfg: ExportConfig, work_dir: Path) -> tuple[Any, Path, bool]:
    """(source MLflow run or None, a local save_pretrained folder, whether its head is new)."""
    if cfg.checkpoint:
        folder = Path(resolve_model_path(cfg.checkpoint))
        if not (folder / "config.json").is_file():
            raise UserError(
                f"checkpoint {folder} has no config.json; pass a save_pretrained folder"
            )
        architectures = json.loads((folder / "config.json").read_text()).get("architectures")
        if not any(a.endswith("ForSequenceClassification") for a in architectures or []):
            # A pretrained encoder (e.g. the untrained default model, to time
            # it): a seeded new head, saved, so ONNX and PyTorch share it.
            print(
                f"note: {folder} has no classification head; exporting it with a new, "
                f"untrained head for the {len(LABELS)} AG News topics (for timing; its "
                "accuracy means nothing)",
                file=sys.stderr,
            )
            torch.manual_seed(0)
            model, tokenizer = load_model_and_tokenizer(str(folder))
            folder = work_dir / "checkpoint"
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            return None, folder, True
        return None, folder, False
    model, tokenizer, run = load_logged_model(cfg.run_id or newest_finished_train_run())
    folder = work_dir / "checkpoint"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return run, folder, False


def newest_finished_train_run() -> str:
    import mlflow

    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string="tags.step = 'train' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    if not runs:
        raise UserError(
            f"no FINISHED train run in {mlflow.get_tracking_uri()}; train first, or pass "
            "-P run_id=... or -P checkpoint=<folder>"
        )
    return runs[0].info.run_id
