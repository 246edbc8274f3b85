"""Epoch checkpoints: written whole, pruned, found again, and each run's kept apart."""

import os

import torch
from transformers import AutoModelForSequenceClassification

from distrinews.train import checkpoint
from distrinews.train.distributed import DistInfo
from distrinews.train.model import load_model_and_tokenizer

SINGLE = DistInfo(0, 0, 1, 1, torch.device("cpu"), "gloo")


def test_save_then_latest_round_trips(tmp_path, tiny_bert):
    model, tokenizer = load_model_and_tokenizer(str(tiny_bert))
    for epoch in (1, 2):
        checkpoint.save_checkpoint(tmp_path, epoch, model, tokenizer, {"step": epoch}, SINGLE)
    latest = checkpoint.latest_checkpoint(tmp_path)
    assert latest == tmp_path / "epoch-2"
    assert not (tmp_path / "epoch-1").exists(), "older checkpoints are pruned"
    assert checkpoint.load_training_state(latest)["step"] == 2
    reloaded = AutoModelForSequenceClassification.from_pretrained(latest)
    assert reloaded.config.id2label[3] == "Sci/Tech"
    for a, b in zip(model.parameters(), reloaded.parameters(), strict=True):
        assert torch.equal(a, b)


def test_torn_write_is_never_picked_up(tmp_path, tiny_bert):
    model, tokenizer = load_model_and_tokenizer(str(tiny_bert))
    checkpoint.save_checkpoint(tmp_path, 1, model, tokenizer, {"step": 1}, SINGLE)
    # A crash while writing epoch 2: a temp folder without training state...
    (tmp_path / ".epoch-2.tmp-999").mkdir()
    (tmp_path / ".epoch-2.tmp-999" / "config.json").write_text("{")
    assert checkpoint.latest_checkpoint(tmp_path) == tmp_path / "epoch-1"
    # ...or one renamed into place before the crash, so the pointer was never moved to it.
    (tmp_path / ".epoch-2.tmp-999").rename(tmp_path / "epoch-2")
    assert checkpoint.latest_checkpoint(tmp_path) == tmp_path / "epoch-1"
    # A pointer to a folder without training state names no checkpoint at all.
    (tmp_path / "latest").write_text("epoch-2")
    assert checkpoint.latest_checkpoint(tmp_path) is None
    (tmp_path / "latest").write_text("epoch-7")
    assert checkpoint.latest_checkpoint(tmp_path) is None


def test_no_checkpoint_means_none(tmp_path):
    assert checkpoint.latest_checkpoint(tmp_path / "missing") is None


def test_keep_checkpoints_keeps_the_newest(tmp_path, tiny_bert):
    model, tokenizer = load_model_and_tokenizer(str(tiny_bert))
    for keep, folder in ((2, tmp_path / "two"), (0, tmp_path / "all")):
        for epoch in range(1, 12):  # epoch-10 sorts before epoch-9 as text
            checkpoint.save_checkpoint(folder, epoch, model, tokenizer, {}, SINGLE, keep)
        kept = {p.name for p in folder.glob("epoch-*")}
        assert kept == ({"epoch-10", "epoch-11"} if keep else {f"epoch-{e}" for e in range(1, 12)})


def test_two_runs_in_one_output_dir_keep_their_own_checkpoints(tmp_path, tiny_bert):
    """A 3-epoch run, then a 2-epoch one, keep=1: neither prunes the other's, and each
    `latest` names a checkpoint that exists."""
    model, tokenizer = load_model_and_tokenizer(str(tiny_bert))
    for run_id, epochs in (("older", 3), ("newer", 2)):
        folder = checkpoint.claim_run_folder(tmp_path, run_id, None)
        for epoch in range(1, epochs + 1):
            checkpoint.save_checkpoint(folder, epoch, model, tokenizer, {"epoch": epoch}, SINGLE)
    assert checkpoint.latest_checkpoint(tmp_path / "older") == tmp_path / "older" / "epoch-3"
    assert checkpoint.latest_checkpoint(tmp_path / "newer") == tmp_path / "newer" / "epoch-2"
    assert checkpoint.runs_with_checkpoints(tmp_path) == {"newer": "epoch-2", "older": "epoch-3"}


def test_a_restart_cleans_the_leftovers_of_a_killed_save(tmp_path):
    folder = tmp_path / "run-1"
    (folder / ".epoch-2.tmp-999").mkdir(parents=True)
    (folder / ".latest.tmp-999").write_text("epoch-2")
    (folder / "epoch-1").mkdir()
    assert checkpoint.claim_run_folder(tmp_path, "run-1", "job-a") == folder
    assert sorted(p.name for p in folder.iterdir()) == ["epoch-1", checkpoint.TORCHRUN_JOB]


def test_a_restarted_torchrun_job_finds_the_run_it_started(tmp_path):
    checkpoint.claim_run_folder(tmp_path, "run-of-a", "job-a")
    checkpoint.claim_run_folder(tmp_path, "run-of-b", "job-b")
    assert checkpoint.run_of_job(tmp_path, "job-b") == "run-of-b"
    assert checkpoint.run_of_job(tmp_path, "job-c") is None
    assert checkpoint.run_of_job(tmp_path, None) is None
    # A job id used again (--rdzv-id news-1 twice): the newest run that has it.
    checkpoint.claim_run_folder(tmp_path, "later-run-of-a", "job-a")
    later = tmp_path / "later-run-of-a" / checkpoint.TORCHRUN_JOB
    os.utime(later, (later.stat().st_mtime + 10,) * 2)
    assert checkpoint.run_of_job(tmp_path, "job-a") == "later-run-of-a"
