"""Epoch checkpoints that are either complete or invisible.

Layout of output_dir:
    epoch-3/            save_pretrained folder (weights, config with labels,
                        tokenizer) + training_state.pt; the newest
                        `keep_checkpoints` epochs are kept
    latest              the name of the newest complete checkpoint folder

A checkpoint is written under a temporary name and renamed when complete;
`latest` is replaced atomically afterwards. A crash mid-write leaves at most
a stray temporary folder that resume never reads.
"""

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distrinews.distributed import DistInfo, all_gather, barrier

LATEST = "latest"
TRAINING_STATE = "training_state.pt"


def save_checkpoint(
    output_dir: str | Path,
    epoch: int,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    training_state: dict[str, Any],
    info: DistInfo,
    keep: int = 1,
) -> None:
    """Fenced save: every rank arrives, global rank 0 writes, every rank leaves.

    Every rank's RNG state is saved: ranks draw different dropout masks, and
    a resumed run must draw the ones the uninterrupted run would have. The
    newest `keep` checkpoints stay on disk (0: all).
    """
    rng_per_rank = all_gather(_rng_state(info.device), info)  # also a barrier
    if info.is_main:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        final = output_dir / f"epoch-{epoch}"
        temporary = output_dir / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(temporary, ignore_errors=True)
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        torch.save({**training_state, "rng": rng_per_rank}, temporary / TRAINING_STATE)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        _write_atomically(output_dir / LATEST, final.name)
        epochs = [p for p in output_dir.glob("epoch-*") if p.name[6:].isdigit()]
        newest_first = sorted(epochs, key=lambda p: int(p.name[6:]), reverse=True)
        for old in newest_first[keep:] if keep else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier(info)  # no rank reads or resumes before the write is complete


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    pointer = Path(output_dir) / LATEST
    if not pointer.is_file():
        return None
    folder = pointer.parent / pointer.read_text().strip()
    return folder if (folder / TRAINING_STATE).is_file() else None


def load_training_state(folder: Path) -> dict[str, Any]:
    # Our own file (optimizer state, counters, RNG), hence weights_only=False.
    return torch.load(folder / TRAINING_STATE, map_location="cpu", weights_only=False)


def restore_rng(state: dict[str, Any], info: DistInfo) -> None:
    """This rank's RNG state as saved, so the resumed run draws what the first would have."""
    if len(state["rng"]) != info.world_size:
        return  # another world size: the saved streams map onto no rank; keep the seeded ones
    rng = state["rng"][info.rank]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], info.device)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)
