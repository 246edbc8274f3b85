"""DDP fine-tuning, read top to bottom: set up, load, train, evaluate, log.

`run_training` is the whole story; the helpers below it each do one step.
"""

import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from distrinews.config import DEFAULT_MODEL, DistillConfig, TrainConfig, TrainingJob
from distrinews.data.feedback import FeedbackRows, frozen_feedback, with_feedback
from distrinews.data.labels import metric_safe
from distrinews.data.splits import Splits, load_splits
from distrinews.errors import UserError
from distrinews.mlflow_runs import check_tracking_server, git_commit
from distrinews.plots import CURVES, confusion_matrix_figure, training_curves_figure
from distrinews.progress import progress_bar
from distrinews.run_names import data_name, default_run_name, short_model_name
from distrinews.runtime.labels import class_names
from distrinews.runtime.prediction_store import shown
from distrinews.signals import raise_on_sigterm
from distrinews.train import checkpoint
from distrinews.train.distillation import (
    cached_logits,
    distillation_loss,
    teacher_forward,
    update_cache,
)
from distrinews.train.distributed import (
    DistInfo,
    EmbeddingRowAllReduce,
    all_reduce_sum,
    barrier,
    broadcast_from_main,
    check_world_fits_machine,
    cleanup_distributed,
    fail_together,
    get_logger,
    setup_distributed,
    wrap_ddp,
)
from distrinews.train.evaluation import evaluate
from distrinews.train.layer_selection import keep_layers
from distrinews.train.loaders import TokenizedDataset, make_loader, steps_per_epoch
from distrinews.train.model import autocast, autocast_dtype, load_model_and_tokenizer
from distrinews.train.tracking import ModelCard, Tracker, start_tracker
from distrinews.train.warm_start import Lineage, find_lineage, warm_start_folder


@dataclass
class Progress:
    """Counters that a checkpoint carries across restarts."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps completed
    samples_seen: int = 0  # training samples, all ranks together
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
    steps_per_epoch: int
    tracker: Tracker = field(default_factory=Tracker)
    progress: Progress = field(default_factory=Progress)
    run_folder: Path | None = None  # the run's checkpoint folder, on the main process
    distill: DistillConfig = DistillConfig()  # the soft targets' temperature and weight

    def x_axes(self) -> dict[str, float]:
        """Logged beside every step metric: the UI can then plot runs of different
        sizes against epochs or samples seen instead of optimizer steps."""
        return {
            "train/epoch": self.progress.step / self.steps_per_epoch,
            "train/samples_seen": self.progress.samples_seen,
        }

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs besides the weights to resume exactly."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "progress": vars(self.progress),
            "run_id": self.tracker.run_id,
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        try:
            self.optimizer.load_state_dict(saved["optimizer"])
        except ValueError as err:  # other parameter groups: head_lr or freeze_embeddings changed
            raise UserError(
                f"the checkpoint's optimizer state does not fit these settings ({err}); resume "
                "with the head_lr and freeze_embeddings it was trained with, or start a new run"
            ) from err
        self.scheduler.load_state_dict(saved["scheduler"])
        self.progress = Progress(**saved["progress"])
        checkpoint.restore_rng(saved, self.info)


def make_train_state(
    model: PreTrainedModel, cfg: TrainConfig, info: DistInfo, steps_per_epoch: int
) -> TrainState:
    """Model on its device, wrapped for DDP, with AdamW and a linear warm-up/decay schedule."""
    if cfg.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    model.to(info.device)
    ddp_model, embedding_rows = wrap_ddp(model, info)
    optimizer = make_optimizer(model, cfg)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = get_linear_schedule_with_warmup(
        optimizer, round(cfg.warmup_ratio * total_steps), total_steps
    )
    return TrainState(
        model, ddp_model, embedding_rows, optimizer, scheduler, cfg, info, steps_per_epoch
    )


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
                inputs = {k: v for k, v in batch.items() if k not in ("labels", "teacher_logits")}
                logits = ddp_model(**inputs).logits
            loss = distillation_loss(
                logits.float(),
                batch["labels"],
                batch.get("teacher_logits"),
                state.distill,
                cfg.label_smoothing,
            )
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
    run_id, resume_from = own_run(job.train, info)
    if job.train.resume or info.restart_count:
        log.info("resuming from %s", resume_from or "nothing: no checkpoint yet, starting fresh")
    saved = checkpoint.load_training_state(resume_from) if resume_from else None
    setup_distributed(info, job.train.threads)
    try:
        with fail_together(info):
            if info.is_main:
                check_tracking_server()  # before training, not after an hour of it
        name = default_run_name(job, info.world_size)
        with start_tracker(info.is_main, job.tracking, run_id, name) as tracker:
            return _train(job, info, tracker, resume_from, saved)
    except UserError:
        # torchrun stops every rank once one exits with an error: wait until
        # rank 0 has reported it and marked the MLflow run FAILED.
        barrier(info)
        raise
    finally:
        cleanup_distributed()


def own_run(cfg: TrainConfig, info: DistInfo) -> tuple[str | None, Path | None]:
    """The MLflow run this launch logs to (None: a new one), and its checkpoint to resume.

    The run is MLflow's MLFLOW_RUN_ID (`mlflow run`, or set by hand to continue
    a run); after a torchrun restart without it, the run this torchrun job
    started. Only that run's own checkpoints are resumed: after a restart
    with none yet, the run starts again from scratch; `resume=true` with none
    is an error.
    """
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id is None and info.restart_count:
        run_id = checkpoint.run_of_job(cfg.output_dir, os.environ.get("TORCHELASTIC_RUN_ID"))
    if not (cfg.resume or info.restart_count):
        return run_id, None
    found = checkpoint.latest_checkpoint(Path(cfg.output_dir) / run_id) if run_id else None
    if found is None and cfg.resume and not info.restart_count:
        raise UserError(nothing_to_resume(cfg.output_dir, run_id))
    return run_id, found


def nothing_to_resume(output_dir: str, run_id: str | None) -> str:
    """Why resume=true found nothing, and how to continue a run that has checkpoints."""
    where = f"run {run_id} has no checkpoint in {output_dir}" if run_id else "no run was named"
    runs = checkpoint.runs_with_checkpoints(output_dir)
    listed = ", ".join(f"{run} ({epoch})" for run, epoch in runs.items()) or "none"
    return (
        f"resume=true continues a run from its own checkpoints, but {where} (runs with "
        f"checkpoints there: {listed}); continue one with `mlflow run . -e train --run-id "
        "<run id> -P resume=true` (or MLFLOW_RUN_ID=<run id> with torchrun), or drop resume"
    )


def _train(
    job: TrainingJob, info: DistInfo, tracker: Tracker, resume_from: Path | None, saved: dict | None
) -> dict[str, float]:
    torch.manual_seed(job.train.seed)  # same new head on every rank
    with fail_together(info):
        check_world_fits_machine(info)
        splits = load_splits(job.data, job.train.seed)
        feedback = main_reads_feedback(job, splits.labels, info, tracker.run_id)
    # Read once, by rank 0, and sent to every rank: ranks reading the live log each would
    # see different rows, and hold out (and train on) different ones.
    feedback = broadcast_from_main(feedback, info)
    with fail_together(info), tempfile.TemporaryDirectory(prefix="distrinews-init-") as init_dir:
        inputs = load_inputs(job, splits, feedback, resume_from, Path(init_dir), info)
        model, tokenizer = load_model_and_tokenizer(inputs.start, inputs.splits.labels)
        if job.model.layers:
            inputs.kept_layers = keep_layers(model, job.model.layers)
    with fail_together(info):  # after rank 0 has cached the teacher's logits, if missing
        train_loader, eval_loaders = build_loaders(job, inputs, tokenizer, info)
    run_folder = None
    if info.is_main:  # before the first step: a restart in the first epoch finds this run
        job_id = os.environ.get("TORCHELASTIC_RUN_ID")
        run_folder = checkpoint.claim_run_folder(job.train.output_dir, tracker.run_id, job_id)
    state = make_train_state(
        model, job.train, info, steps_per_epoch(train_loader, job.train.grad_accum)
    )
    state.tracker, state.run_folder, state.distill = tracker, run_folder, job.distill
    log_inputs(tracker, job, info, inputs, resume_from)
    if saved is not None:
        state.load_state_dict(saved)
    for epoch in range(state.progress.epoch, job.train.epochs):
        train_one_epoch(state, train_loader, epoch)
        end_epoch(state, eval_loaders["validation"], tokenizer)
    return finish(state, tokenizer, eval_loaders, model_card(job, inputs, model))


@dataclass
class TrainInputs:
    """What a run trains and scores on, and the weights and teacher it starts from."""

    splits: Splits  # the data's own splits
    start: str  # the model folder or id the weights load from
    feedback: FeedbackRows | None = None  # production feedback: rows added, slice held out
    lineage: Lineage | None = None  # the run a warm start continues
    teacher: Lineage | None = None  # the run a distilled student learns from
    teacher_computed: int = 0  # texts the teacher ran on in this launch (0: all cached)
    kept_layers: list[int] | None = None  # a student's layers, as indices of the encoder's

    def frames(self) -> dict[str, pd.DataFrame]:
        """The frames to load: train with the feedback rows, and the production slice."""
        if self.feedback is None:
            return self.splits.frames()
        frames = with_feedback(self.splits, self.feedback).frames()
        if not self.feedback.production.empty:
            frames["production"] = self.feedback.production
        return frames


def main_reads_feedback(
    job: TrainingJob, labels: tuple[str, ...], info: DistInfo, run_id: str | None
) -> FeedbackRows | None:
    """On the main process, with -P feedback=: the run's feedback rows, frozen in its
    checkpoint folder by its first launch (every restart and resume reads them back)."""
    if not (info.is_main and job.feedback.feedback):
        return None
    folder = Path(job.train.output_dir) / run_id if run_id else None
    frozen = folder / checkpoint.FROZEN_FEEDBACK if folder else None
    return frozen_feedback(job.feedback, job.data, labels, frozen)


def load_inputs(
    job: TrainingJob,
    splits: Splits,
    feedback: FeedbackRows | None,
    resume_from: Path | None,
    init_dir: Path,
    info: DistInfo,
) -> TrainInputs:
    """The data's splits and feedback rows, the starting weights (the run's own checkpoint
    when resuming, a warm start's with -P init_from=, else `model`'s), and the teacher
    (-P teacher=), whose logits the main process caches if they are not yet."""
    inputs = TrainInputs(splits, str(resume_from or job.model.model), feedback)
    if job.model.init_from and resume_from is None:
        folder, inputs.lineage = warm_start_folder(job.model.init_from, splits.labels, init_dir)
        inputs.start = str(folder)
    if job.distill.teacher:
        inputs.teacher = find_lineage(job.distill.teacher, "teacher")
        if info.is_main:
            run_id, texts = inputs.teacher.run_id, inputs.frames()["train"]["text"].tolist()
            compute = teacher_forward(run_id, splits.labels)
            inputs.teacher_computed = update_cache(run_id, texts, splits.labels, compute)
    return inputs


def log_inputs(
    tracker: Tracker,
    job: TrainingJob,
    info: DistInfo,
    inputs: TrainInputs,
    resume_from: Path | None,
) -> None:
    """Params, tags and dataset inputs: what the run was given and what it came to."""
    params = job.as_params() | effective_params(job, info, inputs)
    params["feedback"] = shown(job.feedback.feedback)  # no password in a param
    tracker.log_params(params)
    tags = run_tags(job, info, resume_from)
    for lineage in (inputs.lineage, inputs.teacher):
        tags |= lineage.tags() if lineage is not None else {}
    tracker.set_tags(tags)
    tracker.log_datasets(inputs.splits.frames(), job.data.data)
    if inputs.feedback is not None:
        tracker.log_feedback(inputs.feedback, job.feedback, inputs.splits.labels)


def build_loaders(
    job: TrainingJob, inputs: TrainInputs, tokenizer: PreTrainedTokenizerBase, info: DistInfo
) -> tuple[DataLoader, dict[str, DataLoader]]:
    """Tokenized train loader (length-grouped, sharded; with the teacher's logits for a
    student) and one loader per scored split."""
    frames = inputs.frames()
    datasets = {
        name: TokenizedDataset(frame, tokenizer, job.data.max_length)
        for name, frame in frames.items()
    }
    if inputs.teacher is not None:
        texts = frames["train"]["text"].tolist()
        datasets["train"].teacher_logits = cached_logits(
            inputs.teacher.run_id, texts, inputs.splits.labels
        )
    get_logger(info).info("rows: %s", {name: len(d) for name, d in datasets.items()})
    train_loader = make_loader(
        datasets.pop("train"),
        tokenizer,
        job.train.batch_size,
        info.world_size,
        info.rank,
        shuffle_seed=job.train.seed,
    )
    # No gradients in evaluation: twice the batch fits in the same memory.
    eval_loaders = {
        name: make_loader(dataset, tokenizer, 2 * job.train.batch_size, info.world_size, info.rank)
        for name, dataset in datasets.items()
    }
    return train_loader, eval_loaders


#: Parameter names of the classification head a pretrained encoder gets new
#: (BERT: classifier; DistilBERT: pre_classifier and classifier).
HEAD_PREFIXES = ("classifier", "pre_classifier")


def make_optimizer(model: PreTrainedModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and LayerNorm weights (the BERT recipe), the
    new head at `head_lr`, lower layers at decayed rates; frozen parameters left out."""
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    layers = model.config.num_hidden_layers
    for name, param in model.named_parameters():
        if param.requires_grad:
            decay = param.ndim >= 2 and "LayerNorm" not in name
            groups.setdefault((parameter_lr(name, cfg, layers), decay), []).append(param)
    check_recipe_fits(model, cfg)
    # The fused kernel updates all parameters in one pass (CPU and CUDA).
    return torch.optim.AdamW(
        [
            {"params": params, "lr": lr, "weight_decay": cfg.weight_decay if decay else 0.0}
            for (lr, decay), params in groups.items()
        ],
        lr=cfg.lr,
        fused=True,
    )


def check_recipe_fits(model: PreTrainedModel, cfg: TrainConfig) -> None:
    """head_lr and layer_lr_decay need parameters they recognise: say so, not ignore them."""
    names = [name for name, _ in model.named_parameters()]
    if cfg.head_lr and not any(name.startswith(HEAD_PREFIXES) for name in names):
        raise UserError(
            f"head_lr is set but the model has no parameter named {' or '.join(HEAD_PREFIXES)}*; "
            "leave head_lr at 0 for this architecture"
        )
    if cfg.layer_lr_decay < 1 and not any(LAYER.search(name) for name in names):
        raise UserError(
            "layer_lr_decay is set but no parameter is named like '.layer.<N>.'; leave it at "
            "1 for this architecture"
        )


#: An encoder layer's parameters: bert.encoder.layer.3.*, distilbert.transformer.layer.3.*
LAYER = re.compile(r"\.layer\.(\d+)\.")


def parameter_lr(name: str, cfg: TrainConfig, layers: int) -> float:
    """Peak learning rate of a parameter: the head's, or lr x layer_lr_decay^depth, where
    depth counts layers down from the top (the pooler 0, the last layer 1, embeddings L+1).

    Lower layers hold the general language knowledge of pretraining; smaller
    steps there keep more of it while the top adapts to the task.
    """
    if name.startswith(HEAD_PREFIXES):
        return cfg.head_lr or cfg.lr
    if layer := LAYER.search(name):
        return cfg.lr * cfg.layer_lr_decay ** (layers - int(layer[1]))
    depth = layers + 1 if "embeddings" in name else 0  # else the pooler, on top
    return cfg.lr * cfg.layer_lr_decay**depth


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
    bar = progress_bar(state.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", info.is_main)
    window = torch.zeros(2, dtype=torch.float64, device=info.device)  # loss sum, samples
    window_start = epoch_start = time.perf_counter()
    for micro_batches in micro_batch_groups(loader, cfg.grad_accum):
        window += train_step(state, micro_batches)
        bar.update()
        if progress.step % cfg.log_every == 0:
            metrics = log_train_window(state, window, time.perf_counter() - window_start)
            bar.set_postfix(
                loss=f"{metrics['train/loss']:.4f}",
                sps=f"{metrics['train/samples_per_second']:.0f}",
            )
            window.zero_()
            window_start = time.perf_counter()
    bar.close()
    # The steps since the last log count as seen too.
    progress.samples_seen += round(all_reduce_sum(window, info)[1].item())
    epoch_seconds = time.perf_counter() - epoch_start
    state.tracker.log_metrics(
        {
            "train/epoch_seconds": epoch_seconds,
            "train/epoch_samples_per_second": len(loader.dataset) / epoch_seconds,
        }
        | state.x_axes(),
        step=progress.step,
    )


def log_train_window(state: TrainState, window: torch.Tensor, seconds: float) -> dict[str, float]:
    """Log the train loss and speed over the steps since the last log (all ranks)."""
    loss_sum, samples = all_reduce_sum(window, state.info).tolist()
    state.progress.samples_seen += round(samples)
    metrics = {
        "train/loss": loss_sum / samples,
        "train/learning_rate": state.scheduler.get_last_lr()[0],
        "train/samples_per_second": samples / seconds,
    }
    state.tracker.log_metrics(metrics | state.x_axes(), step=state.progress.step)
    return metrics


def end_epoch(state: TrainState, val_loader: DataLoader, tokenizer: Any) -> None:
    """Validate, log the epoch's metrics, and write its checkpoint."""
    progress, info = state.progress, state.info
    val_metrics, _ = evaluate(state.model, val_loader, info, "validation", state.cfg.precision)
    progress.epoch += 1
    progress.best_val_accuracy = max(progress.best_val_accuracy, val_metrics["accuracy"])
    state.tracker.log_metrics(
        {f"val/{k}": v for k, v in val_metrics.items()}
        | {"val/best_accuracy": progress.best_val_accuracy}
        | state.x_axes(),
        step=progress.step,
    )
    get_logger(info).info("epoch %d: validation %s", progress.epoch, _fmt(val_metrics))
    checkpoint.save_checkpoint(
        state.run_folder,
        progress.epoch,
        state.model,
        tokenizer,
        state.state_dict(),
        info,
        state.cfg.keep_checkpoints,
    )


def finish(
    state: TrainState, tokenizer: Any, loaders: dict[str, DataLoader], card: ModelCard
) -> dict[str, float]:
    """Test (and production) evaluation, replica check, figures, and the logged model with
    its metrics."""
    model, info, tracker, step = state.model, state.info, state.tracker, state.progress.step
    test_metrics, counts = evaluate(model, loaders["test"], info, "test", state.cfg.precision)
    weight_divergence = replica_divergence(model, info)
    get_logger(info).info("test: %s", _fmt(test_metrics))
    tracker.log_metrics({"train/replica_weight_divergence": weight_divergence}, step=step)
    labels = class_names(model.config.id2label)
    # At the artifact root: the compare view of runs shows only root files.
    tracker.log_figure(
        lambda: confusion_matrix_figure(counts, labels, "test split"), "confusion_matrix.png"
    )
    curves = tracker.metric_histories(CURVES)
    tracker.log_figure(
        lambda: training_curves_figure(curves, state.steps_per_epoch), "training_curves.png"
    )
    tracker.log_transformers_model(model, tokenizer, card, step)
    tracker.log_model_metrics({f"test/{k}": v for k, v in test_metrics.items()}, step, "test")
    if "production" in loaders:
        metrics, _ = evaluate(model, loaders["production"], info, "production", state.cfg.precision)
        get_logger(info).info("production: %s", _fmt(metrics))
        tracker.log_model_metrics(
            {f"production/{k}": v for k, v in metrics.items()}, step, "production"
        )
    return test_metrics


def model_card(job: TrainingJob, inputs: TrainInputs, model: PreTrainedModel) -> ModelCard:
    """Name, source and README of the model the run logs; a student's says what it kept
    and whom it learned from."""
    source, splits = job.model.model, inputs.splits
    if Path(source).expanduser().exists():
        source = Path(source).name  # a local folder: its name, not this machine's path
    labels = ", ".join(class_names(model.config.id2label))
    data = data_name(job.data.data)
    student = ""
    if inputs.kept_layers:
        kept = ", ".join(map(str, inputs.kept_layers))
        student += f" It keeps {len(inputs.kept_layers)} of the encoder's layers ({kept})."
    if inputs.teacher is not None:
        student += f" It was distilled from the train run {inputs.teacher.run_id}."
    return ModelCard(
        name=f"{short_model_name(job.model.model)}-{data}",
        source=source,
        input_example=splits.test["text"].head(2).tolist(),
        description=f"{source} fine-tuned with DistriNews to classify news topics ({labels}) "
        f"on {len(splits.train)} rows of {data}.{student}",
        # The default model's license (all-MiniLM-L6-v2); others' are the user's to state.
        license="apache-2.0" if job.model.model == DEFAULT_MODEL else None,
    )


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


def run_tags(job: TrainingJob, info: DistInfo, resume_from: Path | None) -> dict[str, str]:
    tags = {
        "model": job.model.model,
        "backend": info.backend,
        "device": info.device.type,
        "git_commit": git_commit(),
        "step": "train",
    }
    return tags | ({"resumed_from": str(resume_from)} if resume_from else {})


def effective_params(job: TrainingJob, info: DistInfo, inputs: TrainInputs) -> dict[str, Any]:
    """What the requested settings came to on this launch (rows, processes, threads, dtype)."""
    dtype = autocast_dtype(info.device, job.train.precision)
    splits, feedback = inputs.splits, inputs.feedback
    rows = {}
    if feedback is not None:
        rows = {
            "feedback_rows": len(feedback.feedback),
            "production_rows": len(feedback.production),
        }
        rows |= {
            f"feedback_left_out_{why.replace(' ', '_')}": n for why, n in feedback.left_out.items()
        }
    if inputs.kept_layers:
        rows["kept_layers"] = ",".join(map(str, inputs.kept_layers))
    if inputs.teacher is not None:
        rows["teacher_logits_computed"] = inputs.teacher_computed
    return rows | {
        "train_rows": len(splits.train) + rows.get("feedback_rows", 0),
        "validation_rows": len(splits.validation),
        "test_rows": len(splits.test),
        "world_size": info.world_size,
        "threads_per_process": torch.get_num_threads(),
        "global_batch_size": job.train.batch_size * info.world_size * job.train.grad_accum,
        "compute_precision": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32"),
    }


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{metric_safe(k)}={v:.4f}" for k, v in metrics.items())
