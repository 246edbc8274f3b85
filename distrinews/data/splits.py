"""The data's splits as pandas frames: read (a local folder or the Hub), validated, labelled,
and validation carved out of train. No torch: the promotion gate scores through this too.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from distrinews.config import DataConfig
from distrinews.data.labels import default_names, encode_labels, read_names_file
from distrinews.errors import UserError

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
