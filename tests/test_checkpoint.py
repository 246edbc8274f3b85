import torch
from transformers import AutoModelForSequenceClassification

from distrinews import checkpoint
from distrinews.distributed import DistInfo
from distrinews.model import load_model_and_tokenizer

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
