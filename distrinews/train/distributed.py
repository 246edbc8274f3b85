"""Process-group set-up and teardown, and the rank-aware logger.

Works under torchrun (reads RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE)
and as a plain single process. Gloo on CPU, NCCL on CUDA.
"""

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from distrinews.errors import UserError
from distrinews.runtime.cpu import available_cpus


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        # Global rank: with several nodes, only one process in the job writes.
        return self.rank == 0

    @property
    def restart_count(self) -> int:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))

    @classmethod
    def from_env(cls) -> "DistInfo":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available()
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            local_rank=local_rank,
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
            device=torch.device("cuda", local_rank) if use_cuda else torch.device("cpu"),
            backend="nccl" if use_cuda else "gloo",
        )


def setup_distributed(info: DistInfo, threads: int = 0) -> None:
    """Pin threads and device, then join the process group (all ranks meet here)."""
    local_cores = max(1, available_cpus() // info.local_world_size)
    # Each rank takes its share of the cores: N ranks x all cores each would
    # oversubscribe the CPU and run slower than one process.
    torch.set_num_threads(threads or local_cores)
    if info.device.type == "cuda" and info.local_rank < torch.cuda.device_count():
        torch.cuda.set_device(info.device)
    if dist.is_initialized():
        return
    # A peer that dies mid-collective should fail the job in minutes, not
    # the 30-minute default.
    timeout = timedelta(minutes=10)
    if "RANK" in os.environ:  # launched by torchrun, even with one process
        store, rank, world_size = next(dist.rendezvous("env://", timeout=timeout))
        # After a restart the workers meet in the same store as before (torch
        # 2.13, --standalone), where the dead workers' addresses still sit
        # under the same keys; each attempt gets keys of its own.
        attempt = dist.PrefixStore(f"attempt-{info.restart_count}", store)
        dist.init_process_group(
            info.backend, store=attempt, rank=rank, world_size=world_size, timeout=timeout
        )
    else:
        # A plain `python -m ...` run: a one-process group with an in-memory
        # store, so DDP and the collectives work the same everywhere.
        dist.init_process_group(
            info.backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout
        )


def check_world_fits_machine(info: DistInfo) -> None:
    """More processes per node than GPUs (or CPU cores) only slows training down."""
    if info.device.type == "cuda":
        available, kind = torch.cuda.device_count(), "GPU(s)"
    else:
        available, kind = available_cpus(), "CPU core(s)"
    if info.local_world_size > available:
        raise UserError(
            f"nproc={info.local_world_size} but only {available} {kind} are available; "
            f"use -P nproc={available} or fewer"
        )


@contextmanager
def fail_together(info: DistInfo) -> Iterator[None]:
    """Bad input on any rank stops every rank, with that rank's message.

    Without it, a rank that fails alone would leave the others waiting in
    their next collective. The block must not run collectives itself.
    """
    message = None
    try:
        yield
    except UserError as err:
        message = str(err)
    messages = all_gather(message, info)
    for rank, failed in enumerate(messages):
        if failed is not None:
            raise UserError(failed if rank == info.rank else f"on rank {rank}: {failed}")


def all_gather(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's `obj` (picklable), indexed by rank, on every rank."""
    gathered = [obj] * info.world_size
    if info.world_size > 1:
        dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_from_main(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` (picklable), on every rank."""
    sent = [obj]
    if info.world_size > 1:
        dist.broadcast_object_list(sent, src=0)
    return sent[0]


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over all ranks (in place, also returned)."""
    if info.world_size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class EmbeddingRowAllReduce:
    """Averages the word embedding's gradient over ranks, only the rows some rank used.

    A batch of news uses a thousand or two of the 30k vocabulary rows, yet DDP
    would all-reduce every row: half of MiniLM's gradient bytes, nearly all
    zeros. On CPU that all-reduce shares the cores with the compute instead of
    hiding behind it (benchmarks/ddp_scaling.md). The result is the same.
    """

    def __init__(self, weight: torch.nn.Parameter, world_size: int) -> None:
        self.weight = weight
        self.world_size = world_size
        self.used = torch.zeros(weight.shape[0], dtype=torch.uint8, device=weight.device)

    def record(self, input_ids: torch.Tensor) -> None:
        """Call for every micro-batch between two optimizer steps."""
        self.used[input_ids.flatten()] = 1

    def all_reduce(self) -> None:
        """Call after the last backward before the optimizer step."""
        dist.all_reduce(self.used, op=dist.ReduceOp.MAX)  # rows used on any rank
        rows = self.used.nonzero().squeeze(1)
        grad = self.weight.grad
        part = grad.index_select(0, rows)
        dist.all_reduce(part)
        grad.index_copy_(0, rows, part.div_(self.world_size))
        self.used.zero_()


def wrap_ddp(model: torch.nn.Module, info: DistInfo) -> tuple[DDP, EmbeddingRowAllReduce | None]:
    """DDP for `model`; on CPU with several ranks, the word embedding is synced by rows.

    The row sync needs an embedding used only for input: a tied output layer
    would put gradient on rows the inputs never named.
    """
    embedding = model.get_input_embeddings().weight
    rows = None
    if (
        info.device.type == "cpu"
        and info.world_size > 1
        and embedding.requires_grad
        and model.get_output_embeddings() is None
    ):
        name = next(n for n, p in model.named_parameters() if p is embedding)
        # A private but long-standing torch entry point: parameters DDP leaves alone.
        DDP._set_params_and_buffers_to_ignore_for_model(model, [name])
        rows = EmbeddingRowAllReduce(embedding, info.world_size)
    device_ids = [info.local_rank] if info.device.type == "cuda" else None
    # Gradients live in DDP's buckets: no copy in and out of them every step.
    return DDP(model, device_ids=device_ids, gradient_as_bucket_view=True), rows


def get_logger(info: DistInfo) -> logging.Logger:
    """A logger that says which rank speaks; ranks other than 0 report warnings only."""
    logger = logging.getLogger(f"distrinews.rank{info.rank}")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"[rank {info.rank}] %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.INFO if info.is_main else logging.WARNING)
    return logger
