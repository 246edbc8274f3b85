"""Epoch checkpoints that are either complete or invisible, in a folder of their run's own.

Layout of output_dir:
    <MLflow run id>/        one folder per run: no run resumes, prunes or
                            overwrites another's checkpoints
        epoch-3/            save_pretrained folder (weights, config with labels,
                            tokenizer) + training_state.pt; the newest
                            `keep_checkpoints` epochs are kept
        latest              the name of the newest complete checkpoint folder
        torchrun_job        the torchrun job that started the run: a restart
                            without MLFLOW_RUN_ID finds its run by it

A checkpoint is written under a temporary name and renamed when complete;
`latest` is replaced atomically afterwards. A crash mid-write leaves at most
a stray temporary folder that resume never reads, and that the run's next
start (a restart, a resume) deletes.
"""

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distrinews.train.distributed import DistInfo, all_gather, barrier

LATEST = "latest"
TRAINING_STATE = "training_state.pt"
TORCHRUN_JOB = "torchrun_job"
#: The feedback rows a run trains on and holds out, as its first launch read them.
FROZEN_FEEDBACK = "feedback_rows.json"


def claim_run_folder(output_dir: str | Path, run_id: str, job_id: str | None) -> Path:
    """The run's checkpoint folder, created, with the torchrun job that runs it recorded,
    and the temporary leftovers of a killed save of this run deleted.

    Called by global rank 0 when the run starts or restarts: no save of this
    run is under way then, and no other run writes here.
    """
    folder = Path(output_dir) / run_id
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(".*.tmp-*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    if job_id:
        _write_atomically(folder / TORCHRUN_JOB, job_id)
    return folder


def run_of_job(output_dir: str | Path, job_id: str | None) -> str | None:
    """The run a torchrun job started (newest first if a job id was reused), or None."""
    if not job_id:
        return None
    marked = [
        folder
        for folder in Path(output_dir).glob(f"*/{TORCHRUN_JOB}")
        if folder.read_text().strip() == job_id
    ]
    newest = max(marked, key=lambda path: path.stat().st_mtime, default=None)
    return newest.parent.name if newest else None


def runs_with_checkpoints(output_dir: str | Path) -> dict[str, str]:
    """Run id: newest checkpoint name, for every run folder in `output_dir` that has one."""
    folders = sorted(Path(output_dir).iterdir()) if Path(output_dir).is_dir() else []
    found = {}
    for folder in folders:
        if (latest := latest_checkpoint(folder)) is not None:
            found[folder.name] = latest.name
    return found


def save_checkpoint(
    run_folder: Path | None,
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
    newest `keep` checkpoints of this run stay on disk (0: all). `run_folder`:
    the run's own folder (`claim_run_folder`), on the main process.
    """
    rng_per_rank = all_gather(_rng_state(info.device), info)  # also a barrier
    if info.is_main:
        assert run_folder is not None, "the main process writes into its run's folder"
        run_folder.mkdir(parents=True, exist_ok=True)
        final = run_folder / f"epoch-{epoch}"
        temporary = run_folder / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(temporary, ignore_errors=True)
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        torch.save({**training_state, "rng": rng_per_rank}, temporary / TRAINING_STATE)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        _write_atomically(run_folder / LATEST, final.name)
        epochs = [p for p in run_folder.glob("epoch-*") if p.name[6:].isdigit()]
        newest_first = sorted(epochs, key=lambda p: int(p.name[6:]), reverse=True)
        for old in newest_first[keep:] if keep else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier(info)  # no rank reads or resumes before the write is complete


def latest_checkpoint(run_folder: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    pointer = Path(run_folder) / LATEST
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
