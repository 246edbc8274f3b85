"""The class names a model predicts, read from the model's own config."""

from collections.abc import Mapping
from typing import Any

#: AG News topics, in label-id order. The model config carries them as
#: id2label/label2id so every later step reads them from the checkpoint.
LABELS: tuple[str, ...] = ("World", "Sports", "Business", "Sci/Tech")


def class_names(id2label: Mapping[Any, str] | None) -> tuple[str, ...]:
    """Class names in id order from a model config's id2label. The one reader: keys are
    ints in a transformers config, strings in a config.json."""
    by_id = {int(key): name for key, name in (id2label or {}).items()}
    return tuple(by_id[i] for i in range(len(by_id)))
