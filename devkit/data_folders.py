"""Small data folders (a train and a test split) written from frames, as a user's would be."""

from pathlib import Path

import pandas as pd


def write_split(
    folder: Path, train: pd.DataFrame, test: pd.DataFrame, fmt: str = "parquet"
) -> Path:
    """`folder` with train and test files of `fmt` (parquet or csv); the folder."""
    folder.mkdir(exist_ok=True)
    for name, frame in (("train", train), ("test", test)):
        if fmt == "parquet":
            frame.to_parquet(folder / f"{name}.parquet")
        else:
            frame.to_csv(folder / f"{name}.csv", index=False)
    return folder
