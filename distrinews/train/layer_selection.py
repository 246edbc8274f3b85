"""A smaller student from a pretrained encoder: keep some of its layers, with their weights.

Fewer layers is the one change that shortens every forward pass in proportion
(the embeddings and the head stay); the kept layers start from what
pretraining taught them instead of from random weights, as DistilBERT's
student started from every other layer of BERT.
"""

from torch import nn
from transformers import PreTrainedModel

from distrinews.errors import UserError

#: Where encoder layers live: BERT-like models' encoder.layer, DistilBERT's transformer.layer.
LAYER_LISTS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")


def evenly_spaced(total: int, keep: int) -> list[int]:
    """`keep` of `total` layer indices, spread evenly from the first to the last.

    The first layer is the one whose input (the embeddings) is unchanged; the
    last is the one whose output the pretrained model was tuned to give. A
    single layer is the first, for the same reason.
    """
    if not 1 <= keep <= total:
        raise UserError(f"layers={keep}: the model has {total} layers; keep 1 to {total}")
    if keep == 1:
        return [0]
    return [round(i * (total - 1) / (keep - 1)) for i in range(keep)]


def layer_list(model: PreTrainedModel) -> tuple[nn.Module, str]:
    """The encoder's stack of layers, as (the module holding it, its attribute name), found
    by the names the common architectures use."""
    for path in LAYER_LISTS:
        *parents, name = path.split(".")
        parent: nn.Module | None = model.base_model
        for part in parents:
            parent = getattr(parent, part, None)
        if isinstance(getattr(parent, name, None), nn.ModuleList):
            return parent, name
    raise UserError(
        f"cannot find the layers of a {type(model).__name__} (looked for "
        f"{', '.join(LAYER_LISTS)}); leave layers at 0 for this architecture"
    )


def keep_layers(model: PreTrainedModel, keep: int) -> list[int]:
    """Cut `model` down to `keep` evenly spaced layers in place; returns the kept indices
    of the stack it had. A model that already has `keep` layers is left as it is (a
    resumed or warm-started student)."""
    parent, name = layer_list(model)
    stack = getattr(parent, name)
    chosen = evenly_spaced(len(stack), keep)
    if len(chosen) < len(stack):
        setattr(parent, name, nn.ModuleList(stack[i] for i in chosen))
        # The config is what save_pretrained writes: export and reloads build `keep` layers.
        model.config.num_hidden_layers = keep
    return chosen
