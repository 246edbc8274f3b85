"""A dataset's label set: class names from the data, ids in a fixed order, bad labels refused."""

import pandas as pd
import pytest

from devkit.data_folders import write_split
from distrinews.config import DataConfig
from distrinews.data.splits import load_splits
from distrinews.errors import UserError


def test_a_mix_of_names_and_ids_is_refused(tmp_path):
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": ["World", "1", "World"]})
    folder = write_split(tmp_path / "mixed", frame, frame, fmt="csv")
    with pytest.raises(UserError, match="mixes string and integer labels"):
        load_splits(DataConfig(data=str(folder)), seed=0)


def test_string_labels_name_the_classes_in_alphabetical_order(tmp_path):
    names = ["Sports", "World", "Business"]
    train = pd.DataFrame({"text": [f"t{i}" for i in range(30)], "label": names * 10})
    test = pd.DataFrame({"text": ["a", "b"], "label": ["World", "Sports"]})
    splits = load_splits(DataConfig(data=str(write_split(tmp_path / "news", train, test))), 0)
    assert splits.labels == ("Business", "Sports", "World")
    assert splits.test["label"].tolist() == [2, 1]
    rows = pd.concat([splits.train, splits.validation])
    assert sorted(rows["label"].tolist()) == [0] * 10 + [1] * 10 + [2] * 10


def test_integer_labels_take_their_names_from_a_names_file(tmp_path):
    train = pd.DataFrame({"text": [f"t{i}" for i in range(20)], "label": [0, 1] * 10})
    test = pd.DataFrame({"text": ["a", "b"], "label": [1, 1]})
    folder = write_split(tmp_path / "reviews", train, test)
    (folder / "label_names.txt").write_text("negative\npositive\n")
    splits = load_splits(DataConfig(data=str(folder)), 0)
    assert splits.labels == ("negative", "positive") and splits.test["label"].tolist() == [1, 1]
    (folder / "label_names.txt").write_text("negative\n")
    with pytest.raises(UserError, match=r"integer label\(s\) \[1\] but only 1 names"):
        load_splits(DataConfig(data=str(folder)), 0)


def test_ag_news_keeps_its_topic_names(ag_news_dir):
    splits = load_splits(DataConfig(data=str(ag_news_dir), max_train_rows=50), 0)
    assert splits.labels == ("World", "Sports", "Business", "Sci/Tech")


def test_a_test_label_never_seen_in_train_is_refused(tmp_path):
    train = pd.DataFrame({"text": [f"t{i}" for i in range(20)], "label": ["a", "b"] * 10})
    test = pd.DataFrame({"text": ["x", "y"], "label": ["a", "c"]})
    folder = write_split(tmp_path / "unseen", train, test)
    with pytest.raises(UserError, match=r"test split has label\(s\) \['c'\] that never occur"):
        load_splits(DataConfig(data=str(folder)), 0)


def test_a_trained_model_scores_data_by_its_own_label_ids(tmp_path):
    train = pd.DataFrame({"text": [f"t{i}" for i in range(20)], "label": ["a", "b"] * 10})
    test = pd.DataFrame({"text": ["x", "y"], "label": ["a", "b"]})
    folder = write_split(tmp_path / "scored", train, test)
    splits = load_splits(DataConfig(data=str(folder)), 0, model_labels=("b", "a", "c"))
    assert splits.labels == ("b", "a", "c") and splits.test["label"].tolist() == [1, 0]
    with pytest.raises(UserError, match=r"not among the model's labels"):
        load_splits(DataConfig(data=str(folder)), 0, model_labels=("b", "c"))


def test_class_names_must_make_distinct_metric_keys(tmp_path):
    train = pd.DataFrame(
        {"text": [f"t{i}" for i in range(20)], "label": ["Sci/Tech", "sci tech"] * 10}
    )
    folder = write_split(tmp_path / "clash", train, train.head(2))
    with pytest.raises(UserError, match="would share a key"):
        load_splits(DataConfig(data=str(folder)), 0)
