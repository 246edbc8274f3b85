"""Tokenized datasets, the length-grouped and sharded samplers, and their batches."""

import numpy as np
import pandas as pd
import pytest

from distrinews.train.loaders import (
    LengthGroupedSampler,
    ShardedEvalSampler,
    TokenizedDataset,
    make_loader,
)
from distrinews.train.model import load_model_and_tokenizer


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
