"""A student keeps some of the encoder's layers, each with the weights it was trained with."""

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from distrinews.errors import UserError
from distrinews.train.layer_selection import evenly_spaced, keep_layers, layer_list


@pytest.mark.parametrize(
    ("keep", "chosen"),
    [(1, [0]), (2, [0, 5]), (3, [0, 2, 5]), (4, [0, 2, 3, 5]), (6, [0, 1, 2, 3, 4, 5])],
)
def test_layers_are_spread_from_the_first_to_the_last(keep, chosen):
    assert evenly_spaced(6, keep) == chosen


@pytest.mark.parametrize("keep", [0, 7])
def test_a_count_the_model_cannot_give_is_refused_in_one_line(keep):
    with pytest.raises(UserError, match=f"layers={keep}: the model has 6 layers; keep 1 to 6"):
        evenly_spaced(6, keep)


def six_layer(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "bert":
        config = BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=6,
            num_attention_heads=2,
            intermediate_size=32,
        )
        return BertForSequenceClassification(config)
    config = DistilBertConfig(vocab_size=50, dim=16, n_layers=6, n_heads=2, hidden_dim=32)
    return DistilBertForSequenceClassification(config)


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_the_kept_layers_keep_their_weights_and_the_model_saves_as_a_smaller_one(kind, tmp_path):
    model = six_layer(kind)
    parent, name = layer_list(model)
    before = [layer.state_dict() for layer in getattr(parent, name)]
    assert keep_layers(model, 3) == [0, 2, 5]
    after = getattr(parent, name)
    assert len(after) == 3 == model.config.num_hidden_layers
    for new, old in zip(after, [0, 2, 5], strict=True):
        for key, value in new.state_dict().items():
            assert torch.equal(value, before[old][key]), (old, key)
    # It runs, and saves as what it is: a reload builds 3 layers with the same outputs.
    ids = torch.tensor([[1, 5, 7, 2]])
    model.eval()
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert len(getattr(*layer_list(reloaded))) == 3
    assert torch.allclose(model(input_ids=ids).logits, reloaded(input_ids=ids).logits)


def test_a_model_that_already_has_the_count_is_left_as_it_is():
    """A resumed or warm-started student: cutting again would drop trained layers."""
    model = six_layer("bert")
    keep_layers(model, 2)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    assert keep_layers(model, 2) == [0, 1]
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    with pytest.raises(UserError, match="the model has 2 layers"):
        keep_layers(model, 3)
