"""Run under torchrun: gradients after the pipeline's DDP wrapping vs plain DDP.

Each rank feeds its own two micro-batches (the first under `no_sync`, as
gradient accumulation does) to both; rank 0 writes the largest gradient
difference and how many embedding rows the row sync moved.
"""

import json
import sys
from contextlib import nullcontext

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from distrinews.train.distributed import DistInfo, cleanup_distributed, setup_distributed, wrap_ddp
from distrinews.train.model import load_model_and_tokenizer


def gradients(model_folder: str, rank: int, pipeline: bool) -> tuple[dict, int]:
    info = DistInfo.from_env()
    torch.manual_seed(0)  # same new head on every rank, and in both models
    model, _ = load_model_and_tokenizer(model_folder)
    rows = None
    if pipeline:
        ddp, rows = wrap_ddp(model, info)
    else:
        ddp = DDP(model)
    generator = torch.Generator().manual_seed(rank)
    moved = 0
    for micro_step in range(2):
        ids = torch.randint(1000, 5000, (4, 12), generator=generator)
        labels = torch.randint(0, 4, (4,), generator=generator)
        with ddp.no_sync() if micro_step == 0 else nullcontext():
            ddp(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss.backward()
        if rows:
            rows.record(ids)
    if rows:
        moved = int(rows.used.sum())  # read before all_reduce clears it: this rank's rows
        rows.all_reduce()
    return {name: p.grad.clone() for name, p in model.named_parameters()}, moved


def main(model_folder: str, result: str) -> None:
    info = DistInfo.from_env()
    setup_distributed(info, threads=1)
    plain, _ = gradients(model_folder, info.rank, pipeline=False)
    ours, moved = gradients(model_folder, info.rank, pipeline=True)
    difference = max((plain[name] - ours[name]).abs().max().item() for name in plain)
    embedding = next(name for name in plain if "word_embeddings" in name)
    if info.is_main:
        report = {
            "max_difference": difference,
            "largest_gradient": max(g.abs().max().item() for g in plain.values()),
            "rows_used_here": moved,
            "embedding_rows_with_gradient": int((plain[embedding].abs().sum(1) > 0).sum()),
            "vocabulary": plain[embedding].shape[0],
        }
        with open(result, "w") as file:
            json.dump(report, file)
    cleanup_distributed()


if __name__ == "__main__":
    main(*sys.argv[1:])
