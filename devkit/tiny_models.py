"""Tiny random-init models built in seconds, their int8 ONNX export, and broken copies."""

import json
import shutil
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, DistilBertConfig

from distrinews.config import DEFAULT_MODEL
from distrinews.train.model import load_model_and_tokenizer, resolve_model_path

#: The registered model of the tiny int8 model (the `registered_tiny` test fixture).
TINY_REGISTERED = "tiny-news"


def make_tiny_model(folder: Path, architecture: str = "bert", seed: int = 0) -> Path:
    """A 2-layer, 32-wide encoder with seeded random weights and the real MiniLM tokenizer.

    Seeded, so a test run sees the same start every time (an unseeded one once
    drew an init that did not learn in 3 epochs); the caller's RNG is left as it was.
    """
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_MODEL))
    common = {"vocab_size": tokenizer.vocab_size, "max_position_embeddings": 128}
    if architecture == "bert":
        config = BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            **common,
        )
    else:
        config = DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **common)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def export_tiny_onnx(encoder: Path, work: Path) -> Path:
    """The export step's own int8 ONNX conversion of `encoder` with a seeded, untrained head.

    Seconds instead of a training run: enough for every test of the routes,
    validation and loading, which need a real model but not a good one.
    """
    from distrinews.export.conversion import quantize_to_int8

    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(str(encoder))
    model.save_pretrained(work / "checkpoint")
    tokenizer.save_pretrained(work / "checkpoint")
    _, int8_dir = quantize_to_int8(work / "checkpoint", work / "onnx", "avx2", max_length=64)
    return int8_dir


def broken_copy(folder: Path, destination: Path, problem: str) -> Path:
    if problem == "missing folder":
        return destination / "missing"
    shutil.copytree(folder, destination / "model")
    broken = destination / "model"
    if problem == "corrupt onnx":
        next(broken.glob("*.onnx")).write_bytes(b"not an onnx model")
    if problem == "wrong labels":
        config = json.loads((broken / "config.json").read_text())
        config["id2label"] = {"0": "neg", "1": "pos"}
        (broken / "config.json").write_text(json.dumps(config))
    if problem == "more positions than the graph":
        # The config promises 512 positions to a graph built with 64: a long text indexes
        # past the position embeddings, inside ONNX Runtime.
        for name, key in (
            ("config.json", "max_position_embeddings"),
            ("tokenizer_config.json", "model_max_length"),
        ):
            config = json.loads((broken / name).read_text())
            (broken / name).write_text(json.dumps(config | {key: 512}))
    return broken
