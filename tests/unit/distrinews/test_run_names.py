"""Run and model names: descriptive where the user gave none, theirs where they did."""

from dataclasses import replace

from mlflow.utils.name_utils import _generate_random_name

from distrinews.cli import parse_training_job
from distrinews.run_names import (
    data_name,
    default_run_name,
    is_generated_run_name,
    short_model_name,
)


def test_an_unnamed_run_is_named_after_its_key_settings():
    job = parse_training_job([])
    assert default_run_name(job, world_size=2) == "minilm-l6 lr1e-4 b32x2 e2"
    job = parse_training_job(["--lr", "2.5e-4", "--grad-accum", "4", "--max-train-rows", "2000"])
    assert default_run_name(job, world_size=1) == "minilm-l6 lr2.5e-4 b32x1x4 e2 n2000"
    job = replace(job, train=replace(job.train, lr=3e-5, grad_accum=1))
    assert default_run_name(job, world_size=8) == "minilm-l6 lr3e-5 b32x8 e2 n2000"
    job = parse_training_job(["--init-from", "models:/distrinews/3", "--feedback", "sqlite://"])
    assert default_run_name(job, world_size=2) == "from distrinews/3 lr1e-4 b32x2 e2 +feedback"
    job = parse_training_job(["--layers", "3", "--max-length", "64", "--teacher", "0a1b"])
    assert default_run_name(job, world_size=2) == "minilm-l6 3-layer len64 lr1e-4 b32x2 e2 +distill"


def test_mlflow_made_up_names_are_told_from_user_names():
    assert all(is_generated_run_name(_generate_random_name()) for _ in range(200))
    for name in ("baseline", "minilm-l6 lr1e-4 b32x2 e2", "lr-3e-4", "brave-fox"):
        assert not is_generated_run_name(name), name


def test_short_names_of_models_and_data():
    assert short_model_name("sentence-transformers/all-MiniLM-L6-v2") == "minilm-l6"
    assert short_model_name("distilbert-base-uncased") == "distilbert-base-uncased"
    assert short_model_name("/checkpoints/epoch-2/") == "epoch-2"
    assert data_name("../shared/data/ag_news/") == data_name("fancyzhx/ag_news") == "ag_news"
