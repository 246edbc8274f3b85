"""The class names a model predicts, read from the model's own config."""

from typing import Any

#: AG News topics, in label-id order. The model config carries them as
#: id2label/label2id so every later step reads them from the checkpoint.
LABELS: tuple[str, ...] = ("World", "Sports", "Business", "Sci/Tech")


def labels_from_config(config: dict[str, Any]) -> tuple[str, ...]:
    """Label names in id order from a config.json's id2label (keys are strings there)."""
    id2label = config.get("id2label") or {}
    return tuple(id2label[str(i)] for i in range(len(id2label)))
