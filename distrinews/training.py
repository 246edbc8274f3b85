"""DDP fine-tuning, read top to bottom: set up, load, train, evaluate, log.

`run_training` is the whole story; the helpers below it each do one step.
"""

import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from distrinews import checkpoint
from distrinews.config import TrainConfig, TrainingJob, UserError
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


@dataclass
class TrainState:
    """What a training step reads and changes: one object instead of ten arguments."""

    model: PreTrainedModel  # unwrapped: evaluation and saving need no DDP hooks
    ddp_model: DDP
    embedding_rows: EmbeddingRowAllReduce | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    cfg: TrainConfig
    info: DistInfo
    tracker: Tracker = field(default_factory=Tracker)
    progress: Progress = field(default_factory=Progress)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs besides the weights to resume exactly."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "progress": vars(self.progress),
            "run_id": self.tracker.run_id,
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.progress = Progress(**saved["progress"])
        checkpoint.restore_rng(saved, self.info)


def make_train_state(
    model: PreTrainedModel, cfg: TrainConfig, info: DistInfo, total_steps: int
) -> TrainState:
    """Model on its device, wrapped for DDP, with AdamW and a linear warm-up/decay schedule."""
    model.to(info.device)
    ddp_model, embedding_rows = wrap_ddp(model, info)
    optimizer = make_optimizer(model, cfg)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, round(cfg.warmup_ratio * total_steps), total_steps
    )
    return TrainState(model, ddp_model, embedding_rows, optimizer, scheduler, cfg, info)


def train_step(state: TrainState, micro_batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """One optimizer step over `micro_batches`; returns [loss sum, samples] (float64).

    Gradients accumulate over the micro-batches; only the last backward
    all-reduces them (the others run under `no_sync`).
    """
    cfg, info, ddp_model = state.cfg, state.info, state.ddp_model
    totals = torch.zeros(2, dtype=torch.float64, device=info.device)
    for i, batch in enumerate(micro_batches):
        batch = {key: value.to(info.device, non_blocking=True) for key, value in batch.items()}
        last = i + 1 == len(micro_batches)
        with nullcontext() if last else ddp_model.no_sync():
            with autocast(info.device, cfg.precision):
                loss = ddp_model(**batch).loss
            (loss / len(micro_batches)).backward()
        if state.embedding_rows:
            state.embedding_rows.record(batch["input_ids"])
        totals[0] += loss.detach().double() * len(batch["labels"])
        totals[1] += len(batch["labels"])
    if state.embedding_rows:
        state.embedding_rows.all_reduce()
    if cfg.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(ddp_model.parameters(), cfg.max_grad_norm)
    state.optimizer.step()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.progress.step += 1
    return totals


def run_training(job: TrainingJob) -> dict[str, float]:
    """Train on every rank; rank 0 logs to MLflow. Returns the test metrics."""
    info = DistInfo.from_env()
    log = get_logger(info)
    raise_on_sigterm()
    resume_from = None
    if job.train.resume or info.restart_count:
        resume_from = checkpoint.latest_checkpoint(job.train.output_dir)
        log.info("resuming from %s", resume_from or "nothing: no checkpoint yet, starting fresh")
    saved = checkpoint.load_training_state(resume_from) if resume_from else None
    setup_distributed(info, job.train.threads)
    try:
        with fail_together(info):
            if info.is_main:
                check_tracking_server()  # before training, not after an hour of it
        with start_tracker(info.is_main, job.tracking, saved and saved["run_id"]) as tracker:
            return _train(job, info, tracker, resume_from, saved)
    except UserError:
        # torchrun stops every rank once one exits with an error: wait until
        # rank 0 has reported it and marked the MLflow run FAILED.
        barrier(info)
        raise
    finally:
        cleanup_distributed()


def _train(
    job: TrainingJob, info: DistInfo, tracker: Tracker, resume_from: Path | None, saved: dict | None
) -> dict[str, float]:
    torch.manual_seed(job.train.seed)  # same new head on every rank
    with fail_together(info):
        check_world_fits_machine(info)
        model, tokenizer = load_model_and_tokenizer(str(resume_from or job.model.model))
        train_loader, eval_loaders = build_loaders(job, tokenizer, info)
    total_steps = steps_per_epoch(train_loader, job.train.grad_accum) * job.train.epochs
    state = make_train_state(model, job.train, info, total_steps)
    state.tracker = tracker
    tracker.log_params(job.as_params() | {"train_rows": len(train_loader.dataset)})
    tracker.set_tags(run_tags(job, info) | {"resumed_from": str(resume_from or "")})
    if saved is not None:
        state.load_state_dict(saved)
    for epoch in range(state.progress.epoch, job.train.epochs):
        train_one_epoch(state, train_loader, epoch)
        end_epoch(state, eval_loaders["validation"], tokenizer)
    return finish(state, tokenizer, eval_loaders["test"])


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


def micro_batch_groups(loader: DataLoader, size: int) -> Iterator[list[dict]]:
    """The loader's batches in groups of `size` (the last group may be shorter)."""
    group: list[dict] = []
    for batch in loader:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def train_one_epoch(state: TrainState, loader: DataLoader, epoch: int) -> None:
    """Every optimizer step of one epoch, with a progress bar and periodic train metrics."""
    cfg, info, progress = state.cfg, state.info, state.progress
    state.ddp_model.train()
    loader.sampler.set_epoch(epoch)  # a new, rank-consistent shuffle each epoch
    bar = tqdm(
        total=steps_per_epoch(loader, cfg.grad_accum),
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        disable=not info.is_main,
    )
    window = torch.zeros(2, dtype=torch.float64, device=info.device)  # loss sum, samples
    window_start = epoch_start = time.perf_counter()
    for micro_batches in micro_batch_groups(loader, cfg.grad_accum):
        window += train_step(state, micro_batches)
        bar.update()
        if progress.step % cfg.log_every == 0:
            loss_sum, samples = all_reduce_sum(window, info).tolist()
            metrics = {
                "train_loss": loss_sum / samples,
                "learning_rate": state.scheduler.get_last_lr()[0],
                "samples_per_second": samples / (time.perf_counter() - window_start),
            }
            state.tracker.log_metrics(metrics, step=progress.step)
            bar.set_postfix(
                loss=f"{metrics['train_loss']:.4f}", sps=f"{metrics['samples_per_second']:.0f}"
            )
            window.zero_()
            window_start = time.perf_counter()
    bar.close()
    epoch_seconds = time.perf_counter() - epoch_start
    state.tracker.log_metrics(
        {
            "epoch_seconds": epoch_seconds,
            "epoch_samples_per_second": len(loader.dataset) / epoch_seconds,
        },
        step=progress.step,
    )


def end_epoch(state: TrainState, val_loader: DataLoader, tokenizer: Any) -> None:
    """Validate, log the epoch's metrics, and write its checkpoint."""
    progress, info = state.progress, state.info
    val_metrics, _ = evaluate(state.model, val_loader, info, "validation", state.cfg.precision)
    progress.epoch += 1
    progress.best_val_accuracy = max(progress.best_val_accuracy, val_metrics["accuracy"])
    state.tracker.log_metrics(
        {f"val_{k}": v for k, v in val_metrics.items()}
        | {"best_val_accuracy": progress.best_val_accuracy, "epoch": progress.epoch},
        step=progress.step,
    )
    get_logger(info).info("epoch %d: validation %s", progress.epoch, _fmt(val_metrics))
    checkpoint.save_checkpoint(
        state.cfg.output_dir,
        progress.epoch,
        state.model,
        tokenizer,
        state.state_dict(),
        info,
        state.cfg.keep_checkpoints,
    )


def finish(state: TrainState, tokenizer: Any, test_loader: DataLoader) -> dict[str, float]:
    """Test evaluation, replica check, and the final artifacts."""
    model, info, tracker = state.model, state.info, state.tracker
    test_metrics, counts = evaluate(model, test_loader, info, "test", state.cfg.precision)
    weight_divergence = replica_divergence(model, info)
    get_logger(info).info("test: %s", _fmt(test_metrics))
    tracker.log_metrics(
        {f"test_{k}": v for k, v in test_metrics.items()}
        | {"replica_weight_divergence": weight_divergence},
        step=state.progress.step,
    )
    labels = tuple(model.config.id2label[i] for i in range(model.config.num_labels))
    tracker.log_figure(
        lambda: confusion_matrix_figure(counts, labels, "test split"), "plots/confusion_matrix.png"
    )
    curves = tracker.metric_histories(("train_loss", "learning_rate", "val_loss", "val_accuracy"))
    tracker.log_figure(lambda: training_curves_figure(curves), "plots/training_curves.png")
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
