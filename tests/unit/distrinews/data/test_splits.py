"""Reading a data folder: train and test files checked, validation carved out, rows capped."""

from dataclasses import replace

import pandas as pd
import pytest

from devkit.data_folders import write_split
from distrinews.config import DataConfig
from distrinews.data.splits import load_splits
from distrinews.errors import UserError


def test_real_data_splits_are_disjoint_deterministic_and_capped(ag_news_dir):
    cfg = DataConfig(data=str(ag_news_dir), max_train_rows=300, max_eval_rows=100)
    first, second = load_splits(cfg, seed=1), load_splits(cfg, seed=1)
    assert len(first.train) == 300 and len(first.validation) == 100 and len(first.test) == 100
    assert first.train["text"].tolist() == second.train["text"].tolist()
    assert not set(first.train["text"]) & set(first.validation["text"])
    full = load_splits(DataConfig(data=str(ag_news_dir)), seed=1)
    assert len(full.train) + len(full.validation) == 17_430
    assert len(full.test) == 7_600
    assert set(full.train["label"]) == {0, 1, 2, 3}
    other_seed = load_splits(cfg, seed=2)
    assert other_seed.validation["text"].tolist() != first.validation["text"].tolist()


def test_csv_folders_work_too(tmp_path):
    frame = pd.DataFrame(
        {"text": [f"news {i}" for i in range(40)], "label": [i % 4 for i in range(40)]}
    )
    folder = write_split(tmp_path / "csv", frame, frame, fmt="csv")
    (folder / "label_names.txt").write_text("a\nb\nc\nd\n")
    assert len(load_splits(DataConfig(data=str(folder)), seed=0).test) == 40


@pytest.mark.parametrize(
    "train, message",
    [
        (pd.DataFrame({"body": ["a"], "label": [0]}), "lacks column(s) ['text']"),
        (pd.DataFrame({"text": ["a", "b"], "label": [0, 9]}), "nothing names them"),
        (pd.DataFrame({"text": ["a", "b"], "label": [0, -1]}), "neither class names nor"),
        (pd.DataFrame({"text": ["a", "b"], "label": [0.5, 1]}), "neither class names nor"),
        (pd.DataFrame({"text": ["a", "b"], "label": ["x", None]}), "without a label"),
        (pd.DataFrame({"text": ["a", "b"], "label": ["x", "x"]}), "a single label ('x')"),
        (pd.DataFrame({"text": ["a", None], "label": [0, 1]}), "missing or not a string"),
        (
            pd.DataFrame({"text": pd.Series([], dtype=str), "label": pd.Series([], dtype=int)}),
            "empty",
        ),
    ],
)
def test_bad_files_say_what_to_fix(tmp_path, train, message):
    good = pd.DataFrame({"text": ["x", "y"], "label": ["x", "y"]})
    folder = write_split(tmp_path / "bad", train, good)
    with pytest.raises(
        UserError,
        match=message.replace("(", r"\(")
        .replace(")", r"\)")
        .replace("[", r"\[")
        .replace("]", r"\]"),
    ):
        load_splits(DataConfig(data=str(folder)), seed=0)


def test_missing_folder_and_missing_split(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_splits(DataConfig(data=str(tmp_path / "nope")), seed=0)
    (tmp_path / "only-train").mkdir()
    pd.DataFrame({"text": ["a"], "label": [0]}).to_parquet(
        tmp_path / "only-train" / "train.parquet"
    )
    with pytest.raises(UserError, match="no test"):
        load_splits(DataConfig(data=str(tmp_path / "only-train")), seed=0)


def test_caps_of_zero_mean_all_rows(ag_news_dir):
    cfg = replace(DataConfig(data=str(ag_news_dir)), max_eval_rows=0)
    assert len(load_splits(cfg, seed=0).test) == 7_600
