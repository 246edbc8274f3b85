"""Evaluation on every rank, reduced across ranks, reported once."""

from dataclasses import replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distrinews.config import DataConfig, EvaluateConfig, TrainConfig
from distrinews.data.splits import load_splits
from distrinews.mlflow_runs import log_split, step_run
from distrinews.plots import confusion_matrix_figure
from distrinews.progress import progress_bar
from distrinews.runtime.labels import class_names
from distrinews.train.distributed import DistInfo, all_reduce_sum
from distrinews.train.loaders import TokenizedDataset, make_loader
from distrinews.train.logged_models import load_logged_model, logged_model_id
from distrinews.train.metrics import classification_metrics, confusion_matrix
from distrinews.train.model import autocast


@torch.no_grad()
def evaluate(
    model: PreTrainedModel,
    loader: DataLoader,
    info: DistInfo,
    desc: str = "eval",
    precision: str = "auto",
) -> tuple[dict[str, float], torch.Tensor]:
    """Loss and classification metrics over the whole split, and its confusion matrix.

    Each rank scores its own shard (ShardedEvalSampler: no repeats); summed
    counts make the metrics exact for the whole split. Pass the unwrapped
    model: evaluation needs no DDP gradient hooks.
    """
    labels = class_names(model.config.id2label)
    was_training = model.training
    model.eval()
    counts = torch.zeros(len(labels), len(labels), dtype=torch.int64, device=info.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=info.device)
    bar = progress_bar(len(loader), desc, info.is_main, leave=False)
    for batch in loader:
        batch = {key: value.to(info.device) for key, value in batch.items()}
        with autocast(info.device, precision):
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
        loss_sum += F.cross_entropy(logits, batch["labels"], reduction="sum").double()
        counts += confusion_matrix(batch["labels"], logits.argmax(dim=-1), len(labels))
        bar.update()
    bar.close()
    all_reduce_sum(counts, info)
    all_reduce_sum(loss_sum, info)
    model.train(was_training)
    metrics = classification_metrics(counts.cpu(), labels)
    metrics["loss"] = (loss_sum / counts.sum().clamp(min=1)).item()
    return metrics, counts.cpu()


def evaluate_frame(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    frame: pd.DataFrame,
    max_length: int,
    batch_size: int = 64,
) -> tuple[dict[str, float], torch.Tensor]:
    """Tokenize a split, batch it by length and score it, in this one process."""
    info = DistInfo.from_env()
    loader = make_loader(
        TokenizedDataset(frame, tokenizer, max_length), tokenizer, batch_size, 1, 0
    )
    return evaluate(model.to(info.device), loader, replace(info, world_size=1), desc="test")


@torch.inference_mode()
def predict_logits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    max_length: int,
    batch_size: int = 64,
    desc: str = "predict",
) -> np.ndarray:
    """The model's logits for `texts`, in their order (float32), from length-sorted batches
    in this one process."""
    info = DistInfo.from_env()
    dataset = TokenizedDataset(pd.DataFrame({"text": texts, "label": 0}), tokenizer, max_length)
    loader = make_loader(dataset, tokenizer, batch_size, 1, 0)
    model = model.to(info.device).eval()
    logits = np.empty((len(texts), model.config.num_labels), np.float32)
    order, done = loader.sampler.indices, 0
    bar = progress_bar(len(loader), desc, True)
    for batch in loader:
        with autocast(info.device, "auto"):
            out = model(**{k: v.to(info.device) for k, v in batch.items() if k != "labels"})
        logits[order[done : done + len(out.logits)]] = out.logits.float().cpu().numpy()
        done += len(out.logits)
        bar.update()
    bar.close()
    return logits


def evaluate_logged_run(cfg: EvaluateConfig, data_cfg: DataConfig) -> dict[str, float]:
    """Score a train run's logged model on the test split, in a run of this step.

    The run is nested under the train run in the MLflow UI; its test/*
    metrics are linked to the logged model (whose page lists them beside the
    train run's) and to the test dataset. The train run itself is left as
    training left it.
    """
    import mlflow

    model, tokenizer, train_run = load_logged_model(cfg.run_id)
    # Same truncation and the same split seed as the training run.
    params = train_run.data.params
    data_cfg = replace(data_cfg, max_length=int(params.get("max_length", data_cfg.max_length)))
    labels = class_names(model.config.id2label)
    seed = int(params.get("seed", TrainConfig.seed))
    test = load_splits(data_cfg, seed, model_labels=labels).test
    metrics, counts = evaluate_frame(model, tokenizer, test, data_cfg.max_length, cfg.batch_size)
    with step_run("evaluate", f"evaluate {train_run.info.run_name}", train_run):
        dataset = log_split(test, data_cfg.data, "test")
        mlflow.log_params({"source_run_id": cfg.run_id, "test_rows": len(test)})
        mlflow.log_metrics(
            {f"test/{k}": v for k, v in metrics.items()},
            model_id=logged_model_id(cfg.run_id),
            dataset=dataset,
        )
        mlflow.log_figure(
            confusion_matrix_figure(counts, labels, "test split"), "confusion_matrix.png"
        )
    return metrics
