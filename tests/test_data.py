from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from distrinews.config import DataConfig
from distrinews.errors import UserError
from distrinews.loaders import (
    LengthGroupedSampler,
    ShardedEvalSampler,
    TokenizedDataset,
    make_loader,
)
from distrinews.model import load_model_and_tokenizer
from distrinews.splits import load_splits


def write_split(folder, train: pd.DataFrame, test: pd.DataFrame, fmt: str = "parquet"):
    folder.mkdir(exist_ok=True)
    for name, frame in (("train", train), ("test", test)):
        if fmt == "parquet":
            frame.to_parquet(folder / f"{name}.parquet")
        else:
            frame.to_csv(folder / f"{name}.csv", index=False)
    return folder


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


def test_a_mix_of_names_and_ids_is_refused(tmp_path):
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": ["World", "1", "World"]})
    folder = write_split(tmp_path / "mixed", frame, frame, fmt="csv")
    with pytest.raises(UserError, match="mixes string and integer labels"):
        load_splits(DataConfig(data=str(folder)), seed=0)


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


def test_missing_folder_and_missing_split(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_splits(DataConfig(data=str(tmp_path / "nope")), seed=0)
    (tmp_path / "only-train").mkdir()
    pd.DataFrame({"text": ["a"], "label": [0]}).to_parquet(
        tmp_path / "only-train" / "train.parquet"
    )
    with pytest.raises(UserError, match="no test"):
        load_splits(DataConfig(data=str(tmp_path / "only-train")), seed=0)


def lengths_for_test(n: int = 203, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(5, 120, size=n)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_length_grouped_sampler_shards_like_distributed_sampler(world_size):
    lengths = lengths_for_test()
    samplers = [LengthGroupedSampler(lengths, 8, world_size, r, seed=3) for r in range(world_size)]
    shards = [list(s) for s in samplers]
    # Every rank runs the same number of steps, and together they cover everything.
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(samplers[0])
    assert set().union(*map(set, shards)) == set(range(len(lengths)))
    # Only the padding to a multiple of world_size repeats items.
    total = sum(len(s) for s in shards)
    assert total - len(lengths) < world_size
    assert list(samplers[0]) == shards[0], "same epoch, same order"
    samplers[0].set_epoch(1)
    assert list(samplers[0]) != shards[0], "a new epoch reshuffles"


def test_length_grouping_cuts_padding():
    lengths = lengths_for_test(2000)
    sampler = LengthGroupedSampler(lengths, 16, 2, 0, seed=0)
    order = np.array(list(sampler))
    batches = [lengths[order[i : i + 16]] for i in range(0, len(order), 16)]
    grouped_padding = sum(b.max() * len(b) - b.sum() for b in batches)
    shuffled = np.random.default_rng(0).permutation(lengths)[: len(order)]
    random_batches = [shuffled[i : i + 16] for i in range(0, len(shuffled), 16)]
    random_padding = sum(b.max() * len(b) - b.sum() for b in random_batches)
    assert grouped_padding < 0.2 * random_padding


def test_ranks_see_similar_lengths_in_the_same_step():
    lengths = lengths_for_test(1000)
    rank_batches = [np.array(list(LengthGroupedSampler(lengths, 8, 2, r, seed=0))) for r in (0, 1)]
    for step in range(len(rank_batches[0]) // 8):
        longest = [lengths[b[step * 8 : (step + 1) * 8]].max() for b in rank_batches]
        assert abs(int(longest[0]) - int(longest[1])) <= 10


def test_eval_sampler_covers_each_item_exactly_once():
    lengths = lengths_for_test(101)
    shards = [list(ShardedEvalSampler(lengths, 2, r)) for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == list(range(101))


def test_batches_pad_to_their_longest_item(tiny_bert, tiny_distilbert):
    frame = pd.DataFrame(
        {
            "text": ["short text", "a much longer text " * 10, "mid length text here"],
            "label": [0, 1, 2],
        }
    )
    for folder, expects_token_types in ((tiny_bert, True), (tiny_distilbert, False)):
        model, tokenizer = load_model_and_tokenizer(str(folder))
        dataset = TokenizedDataset(frame, tokenizer, max_length=16)
        assert max(dataset.lengths) == 16, "truncated to max_length"
        batch = next(iter(make_loader(dataset, tokenizer, batch_size=2, num_replicas=1, rank=0)))
        assert ("token_type_ids" in batch) == expects_token_types
        # Evaluation batches are length-sorted: the two shortest texts, padded to the longer.
        assert batch["input_ids"].shape == (2, max(sorted(dataset.lengths)[:2]))
        assert batch["labels"].tolist() == [0, 2]
        output = model(**batch)
        assert output.logits.shape == (2, 4)


def test_caps_of_zero_mean_all_rows(ag_news_dir):
    cfg = replace(DataConfig(data=str(ag_news_dir)), max_eval_rows=0)
    assert len(load_splits(cfg, seed=0).test) == 7_600


def test_class_names_must_make_distinct_metric_keys(tmp_path):
    train = pd.DataFrame(
        {"text": [f"t{i}" for i in range(20)], "label": ["Sci/Tech", "sci tech"] * 10}
    )
    folder = write_split(tmp_path / "clash", train, train.head(2))
    with pytest.raises(UserError, match="would share a key"):
        load_splits(DataConfig(data=str(folder)), 0)
