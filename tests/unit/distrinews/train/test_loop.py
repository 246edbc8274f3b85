"""The training loop's set-up: recipe settings reach the optimizer (the head learning rate,
decay groups, frozen words), and a start or restart finds the run and checkpoint it owns."""

import pytest
import torch

from distrinews.config import TrainConfig
from distrinews.errors import UserError
from distrinews.train import checkpoint
from distrinews.train.distributed import DistInfo
from distrinews.train.loop import make_optimizer, own_run
from distrinews.train.model import load_model_and_tokenizer

SINGLE = DistInfo(0, 0, 1, 1, torch.device("cpu"), "gloo")


def groups_by_parameter(model, optimizer) -> dict[str, dict]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: group for group in optimizer.param_groups for p in group["params"]}


def test_the_new_head_gets_its_own_learning_rate_and_no_decay_on_norms(tiny_bert):
    model, _ = load_model_and_tokenizer(str(tiny_bert))
    cfg = TrainConfig(lr=1e-4, head_lr=1e-3, weight_decay=0.01)
    groups = groups_by_parameter(model, make_optimizer(model, cfg))
    assert len(groups) == len(list(model.parameters())), "every parameter trains"
    assert groups["classifier.weight"]["lr"] == 1e-3 and groups["classifier.bias"]["lr"] == 1e-3
    encoder = "bert.encoder.layer.0.attention.self.query.weight"
    assert groups[encoder]["lr"] == 1e-4 and groups[encoder]["weight_decay"] == 0.01
    assert groups["bert.encoder.layer.0.output.LayerNorm.weight"]["weight_decay"] == 0.0
    assert groups["classifier.bias"]["weight_decay"] == 0.0
    default = groups_by_parameter(model, make_optimizer(model, TrainConfig(lr=1e-4)))
    assert {g["lr"] for g in default.values()} == {1e-4}, "head_lr=0 means lr"


def test_frozen_embeddings_are_left_out_of_the_optimizer(tiny_bert):
    model, _ = load_model_and_tokenizer(str(tiny_bert))
    model.get_input_embeddings().weight.requires_grad_(False)
    groups = groups_by_parameter(model, make_optimizer(model, TrainConfig(freeze_embeddings=True)))
    assert "bert.embeddings.word_embeddings.weight" not in groups
    assert "bert.embeddings.position_embeddings.weight" in groups


def test_layer_lr_decay_lowers_the_rate_layer_by_layer(tiny_bert):
    model, _ = load_model_and_tokenizer(str(tiny_bert))  # 2 layers
    cfg = TrainConfig(lr=1e-3, head_lr=2e-3, layer_lr_decay=0.5)
    groups = groups_by_parameter(model, make_optimizer(model, cfg))
    lr = {name: group["lr"] for name, group in groups.items()}
    assert lr["classifier.weight"] == 2e-3 and lr["bert.pooler.dense.weight"] == 1e-3
    assert lr["bert.encoder.layer.1.output.dense.weight"] == 0.5e-3
    assert lr["bert.encoder.layer.0.output.dense.weight"] == 0.25e-3
    assert lr["bert.embeddings.word_embeddings.weight"] == 0.125e-3
    assert lr["bert.embeddings.LayerNorm.weight"] == 0.125e-3


@pytest.fixture()
def two_runs(tmp_path, tiny_bert, monkeypatch):
    """output_dir with a run that has a checkpoint (job-a) and one that has none yet (job-b)."""
    model, tokenizer = load_model_and_tokenizer(str(tiny_bert))
    folder = checkpoint.claim_run_folder(tmp_path, "with-checkpoint", "job-a")
    checkpoint.save_checkpoint(folder, 1, model, tokenizer, {}, SINGLE)
    checkpoint.claim_run_folder(tmp_path, "without", "job-b")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    return tmp_path


def test_resume_continues_the_named_run_and_only_its_checkpoints(two_runs, monkeypatch):
    cfg = TrainConfig(output_dir=str(two_runs), resume=True)
    monkeypatch.setenv("MLFLOW_RUN_ID", "with-checkpoint")
    assert own_run(cfg, SINGLE) == ("with-checkpoint", two_runs / "with-checkpoint" / "epoch-1")
    monkeypatch.setenv("MLFLOW_RUN_ID", "without")
    with pytest.raises(UserError, match="run without has no checkpoint") as refused:
        own_run(cfg, SINGLE)
    assert "with-checkpoint (epoch-1)" in str(refused.value) and "--run-id" in str(refused.value)
    monkeypatch.delenv("MLFLOW_RUN_ID")
    with pytest.raises(UserError, match="no run was named"):
        own_run(cfg, SINGLE)


def test_a_restart_resumes_its_own_run_or_starts_it_again(two_runs, monkeypatch):
    cfg = TrainConfig(output_dir=str(two_runs))
    assert own_run(cfg, SINGLE) == (None, None), "a first start: a new run"
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-a")
    assert own_run(cfg, SINGLE) == ("with-checkpoint", two_runs / "with-checkpoint" / "epoch-1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-b")
    assert own_run(cfg, SINGLE) == ("without", None), "no checkpoint yet: the same run again"
