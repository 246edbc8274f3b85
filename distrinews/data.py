"""AG News splits: load, validate, tokenize, and batch for DDP.

Batches are padded to their longest item (dynamic padding) and built from
items of similar length (length grouping), which cuts the work per epoch
several-fold on short news texts compared with padding to max_length.
"""

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from distrinews.config import DataConfig, UserError
from distrinews.labels import default_names, encode_labels, read_names_file

SPLITS = ("train", "test")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    labels: tuple[str, ...]  # class names; `label` holds their index

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def load_splits(cfg: DataConfig, seed: int, model_labels: tuple[str, ...] | None = None) -> Splits:
    """Read train/test, check them, carve validation out of train, apply row caps.

    The class names come from the data (distrinews.labels), or are the
    `model_labels` of a trained model the data is scored with.
    """
    local = Path(cfg.data).expanduser().exists()
    raw, names = _read_local(Path(cfg.data)) if local else _read_hub(cfg.data)
    for split, frame in raw.items():
        validate_frame(frame, split)
    names = names or default_names(cfg.data, raw)
    labels, raw = encode_labels(raw, names, model_labels)
    train, validation = split_validation(raw["train"], cfg.val_fraction, seed)
    test = raw["test"]
    if cfg.max_train_rows:
        train = train.iloc[: cfg.max_train_rows]
    if cfg.max_eval_rows:
        validation = validation.iloc[: cfg.max_eval_rows]
        test = test.sample(n=min(cfg.max_eval_rows, len(test)), random_state=seed)
    return Splits(train, validation, test.reset_index(drop=True), labels)


def _read_local(folder: Path) -> tuple[dict[str, pd.DataFrame], tuple[str, ...] | None]:
    folder = folder.expanduser()
    if not folder.is_dir():
        raise UserError(
            f"data path {folder} is not a folder; pass a folder with train and test files"
        )
    frames = {}
    for split in SPLITS:
        # Either train.parquet or the Hub's sharded layout (data/train-00000-of-00001.parquet).
        files = sorted(folder.glob(f"**/{split}*.parquet")) or sorted(
            folder.glob(f"**/{split}*.csv")
        )
        if not files:
            raise UserError(
                f"no {split}*.parquet or {split}*.csv file in {folder}; "
                "the folder needs a train and a test split with columns text, label"
            )
        frames[split] = pd.concat([_read_file(f) for f in files], ignore_index=True)
    return frames, read_names_file(folder)


def _read_file(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as err:  # pyarrow and the csv parser raise many types
        raise UserError(f"cannot read {path}: {err}") from err
    missing = {"text", "label"} - set(frame.columns)
    if missing:
        raise UserError(
            f"{path} lacks column(s) {sorted(missing)} (has {list(frame.columns)}); "
            "each file needs columns text and label"
        )
    return frame[["text", "label"]]


def _read_hub(name: str) -> tuple[dict[str, pd.DataFrame], tuple[str, ...] | None]:
    """The Hub dataset's splits, and its ClassLabel names if `label` is one."""
    if not _HUB_ID.match(name):
        raise UserError(f"data folder {name} does not exist; pass an existing folder or a Hub id")
    try:
        import datasets

        loaded = datasets.load_dataset(name)
        frames = {split: loaded[split].to_pandas()[["text", "label"]] for split in SPLITS}
        names = getattr(loaded["train"].features["label"], "names", None)
        return frames, tuple(names) if names else None
    except Exception as err:  # offline, unknown id, missing split or column
        raise UserError(
            f"{name!r} is not a local folder and could not be loaded from the Hugging Face "
            f"Hub ({type(err).__name__}); pass a local data folder such as ../shared/data/ag_news"
        ) from err


def validate_frame(frame: pd.DataFrame, split: str) -> None:
    """Fail with a message that says what to fix; never train on bad rows silently.

    The labels themselves are checked where they are named (distrinews.labels).
    """
    if frame.empty:
        raise UserError(f"the {split} split is empty; it needs at least one row")
    if frame["text"].isna().any() or not frame["text"].map(lambda t: isinstance(t, str)).all():
        raise UserError(f"the {split} split has rows whose text is missing or not a string")
    if frame["label"].isna().any():
        raise UserError(f"the {split} split has rows without a label; fix or drop them")


def split_validation(
    train: pd.DataFrame, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shuffle with a fixed seed and hold out `fraction` of the rows."""
    order = np.random.default_rng(seed).permutation(len(train))
    n_val = max(1, round(len(train) * fraction))
    if n_val >= len(train):
        raise UserError(f"the train split has {len(train)} row(s): too few to hold out validation")
    shuffled = train.iloc[order].reset_index(drop=True)
    return shuffled.iloc[n_val:].reset_index(drop=True), shuffled.iloc[:n_val].reset_index(
        drop=True
    )


class TokenizedDataset(Dataset):
    """Token ids of every text, unpadded; the collator pads each batch."""

    def __init__(self, frame: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, max_length: int):
        self.encodings = tokenizer(list(frame["text"]), truncation=True, max_length=max_length)
        self.labels = frame["label"].astype(int).tolist()
        self.lengths = [len(ids) for ids in self.encodings["input_ids"]]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        item = {key: values[index] for key, values in self.encodings.items()}
        item["labels"] = self.labels[index]
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
