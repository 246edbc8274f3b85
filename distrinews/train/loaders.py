"""Tokenized splits batched for DDP.

Batches are padded to their longest item (dynamic padding) and built from
items of similar length (length grouping), which cuts the work per epoch
several-fold on short news texts compared with padding to max_length.
"""

import math
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase


class TokenizedDataset(Dataset):
    """Token ids of every text, unpadded; the collator pads each batch."""

    def __init__(
        self,
        frame: pd.DataFrame,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        teacher_logits: np.ndarray | None = None,
    ):
        self.encodings = tokenizer(list(frame["text"]), truncation=True, max_length=max_length)
        self.labels = frame["label"].astype(int).tolist()
        self.lengths = [len(ids) for ids in self.encodings["input_ids"]]
        # A distilled student's soft targets, row for row; batched as `teacher_logits`.
        self.teacher_logits = teacher_logits

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        item = {key: values[index] for key, values in self.encodings.items()}
        item["labels"] = self.labels[index]
        if self.teacher_logits is not None:
            item["teacher_logits"] = self.teacher_logits[index].tolist()
        return item


class LengthGroupedSampler(DistributedSampler):
    """DistributedSampler whose batches hold texts of similar length.

    Per epoch: shuffle (seed + epoch, the same on every rank), cut into
    mega-batches of `group_batches` global batches, sort each by length, then
    deal each global batch out round-robin. Every rank thus gets its own
    disjoint items, and in each step all ranks see similar lengths, so no rank
    waits on another at the gradient all-reduce.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        num_replicas: int,
        rank: int,
        seed: int = 0,
        group_batches: int = 50,
    ):
        super().__init__(lengths, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.lengths = np.asarray(lengths)
        self.global_batch = batch_size * num_replicas
        self.group_size = self.global_batch * group_batches

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).numpy()
        groups = [order[i : i + self.group_size] for i in range(0, len(order), self.group_size)]
        by_length = np.concatenate([g[np.argsort(-self.lengths[g], kind="stable")] for g in groups])
        batches = [
            by_length[i : i + self.global_batch]
            for i in range(0, len(by_length), self.global_batch)
        ]
        # Shuffle whole batches so long and short ones alternate through the epoch.
        batch_order = torch.randperm(len(batches), generator=generator).tolist()
        indices = np.concatenate([batches[b] for b in batch_order]).tolist()
        # Pad with repeats, as DistributedSampler does, so every rank runs the same number of steps.
        indices += indices[: self.total_size - len(indices)]
        return iter(indices[self.rank : self.total_size : self.num_replicas])


class ShardedEvalSampler(Sampler[int]):
    """Each rank gets a disjoint, length-sorted share of every item: no repeats.

    Unlike DistributedSampler it does not pad, so summed metrics count each
    validation or test example exactly once.
    """

    def __init__(self, lengths: Sequence[int], num_replicas: int, rank: int):
        self.indices = np.argsort(np.asarray(lengths), kind="stable")[rank::num_replicas].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(
    dataset: TokenizedDataset,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    num_replicas: int,
    rank: int,
    shuffle_seed: int | None = None,
) -> DataLoader:
    """Training loader when `shuffle_seed` is given, evaluation loader otherwise."""
    if shuffle_seed is None:
        sampler = ShardedEvalSampler(dataset.lengths, num_replicas, rank)
    else:
        sampler = LengthGroupedSampler(
            dataset.lengths, batch_size, num_replicas, rank, shuffle_seed
        )
    # Tokenization happened up front, so worker processes would only add
    # overhead on a machine whose cores already run the ranks.
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=DataCollatorWithPadding(tokenizer),
        num_workers=0,
    )


def steps_per_epoch(loader: DataLoader, grad_accum: int) -> int:
    return math.ceil(len(loader) / grad_accum)
