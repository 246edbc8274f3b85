"""DDP fine-tuning, read top to bottom: set up, load, train, evaluate, log.

`run_training` is the whole story; the helpers below it each do one step.
"""

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from distrinews import checkpoint
from distrinews.config import LABELS, TrainConfig, TrainingJob, UserError
from distrinews.data import TokenizedDataset, load_splits, make_loader, steps_per_epoch
from distrinews.distributed import (
    DistInfo,
    EmbeddingRowAllReduce,
    all_reduce_sum,
    barrier,
    check_world_fits_machine,
    cleanup_distributed,
    fail_together,
    get_logger,
    raise_on_sigterm,
    setup_distributed,
    wrap_ddp,
)
from distrinews.evaluation import evaluate
from distrinews.metrics import metric_safe
from distrinews.model import autocast, autocast_dtype, load_model_and_tokenizer
from distrinews.plots import confusion_matrix_figure, training_curves_figure
from distrinews.tracking import Tracker, check_tracking_server, git_commit, start_tracker


@dataclass
class Progress:
    """Counters that a checkpoint carries across restarts."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps completed
    best_val_accuracy: float = 0.0


def run_training(job: TrainingJob) -> dict[str, float]:
    """Train on every rank; rank 0 logs to MLflow. Returns the test metrics."""
    info = DistInfo.from_env()
    log = get_logger(info)
    raise_on_sigterm()
    resume_from = None
    if job.train.resume or info.restart_count:
        resume_from = checkpoint.latest_checkpoint(job.train.output_dir)
        log.info("resuming from %s", resume_from or "nothing: no checkpoint yet, starting fresh")
    state = checkpoint.load_training_state(resume_from) if resume_from else None
    setup_distributed(info, job.train.threads)
    try:
        with fail_together(info):
            if info.is_main:
                check_tracking_server()  # before training, not after an hour of it
        with start_tracker(info.is_main, job.tracking, state and state["run_id"]) as tracker:
            return _train(job, info, tracker, resume_from, state)
    except UserError:
        # torchrun stops every rank once one exits with an error: wait until
        # rank 0 has reported it and marked the MLflow run FAILED.
        barrier(info)
        raise
    finally:
        cleanup_distributed()


def _train(
    job: TrainingJob, info: DistInfo, tracker: Tracker, resume_from: Path | None, state: dict | None
) -> dict[str, float]:
    log = get_logger(info)
    torch.manual_seed(job.train.seed)  # same new head on every rank
    with fail_together(info):
        check_world_fits_machine(info)
        model, tokenizer = load_model_and_tokenizer(str(resume_from or job.model.model))
        train_loader, eval_loaders = build_loaders(job, tokenizer, info)
    model.to(info.device)
    ddp_model, embedding_rows = wrap_ddp(model, info)
    optimizer = make_optimizer(model, job.train)
    total_steps = steps_per_epoch(train_loader, job.train.grad_accum) * job.train.epochs
    scheduler = get_linear_schedule_with_warmup(
        optimizer, round(job.train.warmup_ratio * total_steps), total_steps
    )
    tracker.log_params(job.as_params() | {"train_rows": len(train_loader.dataset)})
    tracker.set_tags(run_tags(job, info) | {"resumed_from": str(resume_from or "")})
    progress = Progress()
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        progress = Progress(**state["progress"])
        checkpoint.restore_rng(state, info)

    for epoch in range(progress.epoch, job.train.epochs):
        epoch_start = time.perf_counter()
        train_one_epoch(
            ddp_model,
            embedding_rows,
            train_loader,
            optimizer,
            scheduler,
            progress,
            epoch,
            job,
            info,
            tracker,
        )
        epoch_seconds = time.perf_counter() - epoch_start
        val_metrics, _ = evaluate(
            model, eval_loaders["validation"], info, "validation", job.train.precision
        )
        progress.epoch = epoch + 1
        progress.best_val_accuracy = max(progress.best_val_accuracy, val_metrics["accuracy"])
        tracker.log_metrics(
            {f"val_{k}": v for k, v in val_metrics.items()}
            | {
                "best_val_accuracy": progress.best_val_accuracy,
                "epoch": progress.epoch,
                "epoch_seconds": epoch_seconds,
                "epoch_samples_per_second": len(train_loader.dataset) / epoch_seconds,
            },
            step=progress.step,
        )
        log.info("epoch %d: validation %s", progress.epoch, _fmt(val_metrics))
        training_state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "progress": vars(progress),
            "run_id": tracker.run_id,
        }
        checkpoint.save_checkpoint(
            job.train.output_dir,
            progress.epoch,
            model,
            tokenizer,
            training_state,
            info,
            job.train.keep_checkpoints,
        )

    return finish(model, tokenizer, eval_loaders["test"], progress, info, tracker, job)


def build_loaders(
    job: TrainingJob, tokenizer: PreTrainedTokenizerBase, info: DistInfo
) -> tuple[DataLoader, dict[str, DataLoader]]:
    """Tokenized train loader (length-grouped, sharded) and validation/test loaders."""
    splits = load_splits(job.data, job.train.seed)
    datasets = {
        name: TokenizedDataset(getattr(splits, name), tokenizer, job.data.max_length)
        for name in ("train", "validation", "test")
    }
    get_logger(info).info("rows: %s", {name: len(d) for name, d in datasets.items()})
    train_loader = make_loader(
        datasets["train"],
        tokenizer,
        job.train.batch_size,
        info.world_size,
        info.rank,
        shuffle_seed=job.train.seed,
    )
    # No gradients in evaluation: twice the batch fits in the same memory.
    eval_loaders = {
        name: make_loader(
            datasets[name], tokenizer, 2 * job.train.batch_size, info.world_size, info.rank
        )
        for name in ("validation", "test")
    }
    return train_loader, eval_loaders


def make_optimizer(model: PreTrainedModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and LayerNorm weights (the BERT recipe)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel updates all parameters in one pass (CPU and CUDA).
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)


def train_one_epoch(
    ddp_model: DDP,
    embedding_rows: EmbeddingRowAllReduce | None,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: Progress,
    epoch: int,
    job: TrainingJob,
    info: DistInfo,
    tracker: Tracker,
) -> None:
    cfg = job.train
    ddp_model.train()
    loader.sampler.set_epoch(epoch)  # a new, rank-consistent shuffle each epoch
    micro_steps = len(loader)
    bar = tqdm(
        total=steps_per_epoch(loader, cfg.grad_accum),
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        disable=not info.is_main,
    )
    window = torch.zeros(2, dtype=torch.float64, device=info.device)  # loss sum, samples
    window_start = time.perf_counter()
    for i, batch in enumerate(loader):
        batch = {key: value.to(info.device, non_blocking=True) for key, value in batch.items()}
        updates = (i + 1) % cfg.grad_accum == 0 or i + 1 == micro_steps
        # Between updates, skip the gradient all-reduce: gradients just accumulate locally.
        with nullcontext() if updates else ddp_model.no_sync():
            with autocast(info.device, cfg.precision):
                loss = ddp_model(**batch).loss
            (loss / cfg.grad_accum).backward()
        if embedding_rows:
            embedding_rows.record(batch["input_ids"])
        window[0] += loss.detach().double() * len(batch["labels"])
        window[1] += len(batch["labels"])
        if not updates:
            continue
        if embedding_rows:
            embedding_rows.all_reduce()
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(ddp_model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        progress.step += 1
        bar.update()
        if progress.step % cfg.log_every == 0:
            loss_sum, samples = all_reduce_sum(window, info).tolist()
            elapsed = time.perf_counter() - window_start
            metrics = {
                "train_loss": loss_sum / samples,
                "learning_rate": scheduler.get_last_lr()[0],
                "samples_per_second": samples / elapsed,
            }
            tracker.log_metrics(metrics, step=progress.step)
            bar.set_postfix(
                loss=f"{metrics['train_loss']:.4f}", sps=f"{metrics['samples_per_second']:.0f}"
            )
            window.zero_()
            window_start = time.perf_counter()
    bar.close()


def finish(
    model: PreTrainedModel,
    tokenizer: Any,
    test_loader: DataLoader,
    progress: Progress,
    info: DistInfo,
    tracker: Tracker,
    job: TrainingJob,
) -> dict[str, float]:
    """Test evaluation, replica check, and the final artifacts."""
    log = get_logger(info)
    test_metrics, counts = evaluate(model, test_loader, info, "test", job.train.precision)
    weight_divergence = replica_divergence(model, info)
    log.info("test: %s", _fmt(test_metrics))
    tracker.log_metrics(
        {f"test_{k}": v for k, v in test_metrics.items()}
        | {"replica_weight_divergence": weight_divergence},
        step=progress.step,
    )
    tracker.log_figure(
        confusion_matrix_figure(counts, LABELS, "test split"), "plots/confusion_matrix.png"
    )
    curves = {
        key: tracker.metric_history(key)
        for key in ("train_loss", "learning_rate", "val_loss", "val_accuracy")
    }
    tracker.log_figure(training_curves_figure(curves), "plots/training_curves.png")
    tracker.log_transformers_model(model, tokenizer)
    return test_metrics


def replica_divergence(model: PreTrainedModel, info: DistInfo) -> float:
    """Largest difference between any rank's weight fingerprint and rank 0's.

    DDP keeps replicas identical; a non-zero value means ranks trained apart.
    The fingerprint (sum and sum of squares per tensor) is cheap to gather.
    """
    params = [p.detach().double() for p in model.parameters()]
    fingerprint = torch.stack([torch.stack([p.sum(), (p * p).sum()]) for p in params]).flatten()
    if info.world_size == 1:
        return 0.0
    gathered = [torch.empty_like(fingerprint) for _ in range(info.world_size)]
    torch.distributed.all_gather(gathered, fingerprint)
    return max((g - gathered[0]).abs().max().item() for g in gathered)


def run_tags(job: TrainingJob, info: DistInfo) -> dict[str, str]:
    return {
        "model": job.model.model,
        "world_size": str(info.world_size),
        "backend": info.backend,
        "device": info.device.type,
        "threads_per_process": str(torch.get_num_threads()),
        "compute_dtype": str(autocast_dtype(info.device, job.train.precision) or torch.float32),
        "git_commit": git_commit(),
        "step": "train",
    }


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{metric_safe(k)}={v:.4f}" for k, v in metrics.items())
