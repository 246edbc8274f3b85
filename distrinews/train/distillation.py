"""Knowledge distillation: the loss, and the teacher's logits computed once per teacher.

A student learns from the teacher's softened class probabilities as well as
the labels (Hinton et al. 2015). The teacher's logits on a text never change,
so they are computed once and kept with the teacher's own run, keyed by the
text: every later student of that teacher, whatever its rows, layers or seed,
reads them instead of running the teacher again.
"""

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from distrinews.config import DistillConfig
from distrinews.errors import UserError
from distrinews.mlflow_runs import download_if_logged
from distrinews.runtime.cpu import available_cpus
from distrinews.runtime.labels import class_names
from distrinews.train.evaluation import predict_logits
from distrinews.train.logged_models import load_logged_model

#: Where a teacher run keeps its logits: one row per text key, one column per class.
CACHE_ARTIFACT = "distillation/teacher_logits.parquet"


def distillation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    cfg: DistillConfig,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """(1 - alpha) x cross-entropy with the labels + alpha x T^2 x KL(teacher || student),
    both softened by the temperature T; the labels' cross-entropy alone without a teacher.

    The T^2 keeps the soft term's gradients the size of the hard term's as T
    changes (Hinton et al. 2015, section 2).
    """
    hard = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    if teacher_logits is None or cfg.distill_alpha == 0:
        return hard
    t = cfg.distill_temperature
    soft = F.kl_div(
        F.log_softmax(logits / t, dim=-1),
        F.log_softmax(teacher_logits.float() / t, dim=-1),
        log_target=True,
        reduction="batchmean",
    )
    return cfg.distill_alpha * t * t * soft + (1 - cfg.distill_alpha) * hard


def text_key(text: str) -> str:
    """A text's key in the cache: its SHA-1, short and the same on every machine."""
    return hashlib.sha1(text.encode()).hexdigest()


def read_cache(run_id: str, labels: tuple[str, ...], work: Path) -> pd.DataFrame:
    """The teacher run's cached logits (index: text key, columns: class names); empty if
    it has none yet. Refuses a teacher of other classes than the data's."""

    if (path := download_if_logged(run_id, CACHE_ARTIFACT, work)) is None:
        return pd.DataFrame(columns=list(labels), dtype=np.float32)
    cache = pd.read_parquet(path)
    check_teacher_classes(tuple(cache.columns), labels)
    return cache


def check_teacher_classes(teacher: tuple[str, ...], labels: tuple[str, ...]) -> None:
    """The soft targets are per class, so the teacher's classes must be the data's, in order."""
    if teacher != labels:
        raise UserError(
            f"the teacher predicts {', '.join(teacher)}, the data has {', '.join(labels)}; "
            "distil from a teacher trained on these classes"
        )


def update_cache(
    run_id: str,
    texts: list[str],
    labels: tuple[str, ...],
    compute: Callable[[list[str]], np.ndarray],
) -> int:
    """Make the teacher run's cache cover `texts`, running `compute` (the teacher) on the
    texts it lacks only; returns how many that was (0: all were cached)."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="distrinews-teacher-") as work:
        cache = read_cache(run_id, labels, Path(work))
        missing = list(dict.fromkeys(t for t in texts if text_key(t) not in cache.index))
        if not missing:
            return 0
        new = pd.DataFrame(
            compute(missing).astype(np.float32),
            index=pd.Index([text_key(t) for t in missing], name="key"),
            columns=list(labels),
        )
        path = Path(work) / "new" / Path(CACHE_ARTIFACT).name
        path.parent.mkdir()
        pd.concat([cache, new]).to_parquet(path)
        # Logged to the teacher's run, finished or not: the logits are what that model says.
        mlflow.MlflowClient().log_artifact(run_id, str(path), str(Path(CACHE_ARTIFACT).parent))
    return len(missing)


def cached_logits(run_id: str, texts: list[str], labels: tuple[str, ...]) -> np.ndarray:
    """The teacher's logits for `texts`, in order, from its run's cache (float32, n x classes)."""
    with tempfile.TemporaryDirectory(prefix="distrinews-teacher-") as work:
        cache = read_cache(run_id, labels, Path(work))
    keys = [text_key(t) for t in texts]
    if missing := sum(key not in cache.index for key in keys):
        raise UserError(
            f"the teacher run {run_id} has no logits for {missing} of the {len(keys)} training "
            "texts (its cache changed during this launch); run the training again"
        )
    return cache.loc[keys].to_numpy(np.float32)


def teacher_forward(run_id: str, labels: tuple[str, ...]) -> Callable[[list[str]], np.ndarray]:
    """The teacher's logits on texts: its logged model, with its own tokenizer and
    max_length, in length-sorted batches on every CPU of this machine."""

    def compute(texts: list[str]) -> np.ndarray:
        model, tokenizer, run = load_logged_model(run_id)
        check_teacher_classes(class_names(model.config.id2label), labels)
        max_length = int(run.data.params.get("max_length", tokenizer.model_max_length))
        threads = torch.get_num_threads()
        # The other ranks wait for this one: give it the cores they would use.
        torch.set_num_threads(available_cpus())
        try:
            return predict_logits(model, tokenizer, texts, max_length, desc="teacher logits")
        finally:
            torch.set_num_threads(threads)

    return compute
