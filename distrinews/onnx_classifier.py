"""Run an exported ONNX text classifier with ONNX Runtime, tokenizers and NumPy only.

No torch and no transformers: the server image stays small, and the export
step checks the model with the exact code that will serve it.

A model folder holds one `*.onnx` file, `tokenizer.json` and `config.json`
(whose `id2label` names the classes).
"""

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


class ModelFolderError(ValueError):
    """The folder is not a usable exported model; the message says why."""


class OnnxClassifier:
    def __init__(self, folder: str | Path, threads: int = 0, max_length: int = 0):
        folder = Path(folder)
        self.folder = folder
        if not folder.is_dir():
            raise ModelFolderError(f"model folder {folder} does not exist")
        models = sorted(folder.glob("*.onnx"))
        if len(models) != 1:
            raise ModelFolderError(
                f"{folder} must hold exactly one .onnx file, found {len(models)}"
            )
        for needed in ("tokenizer.json", "config.json"):
            if not (folder / needed).is_file():
                raise ModelFolderError(
                    f"{folder} lacks {needed}; export the model with pipelines.export"
                )
        self.model_file = models[0]
        config = json.loads((folder / "config.json").read_text())
        id2label = config.get("id2label") or {}
        self.labels = tuple(id2label[str(i)] for i in range(len(id2label)))
        # Truncate where training did (the export stores it as model_max_length).
        tokenizer_config_file = folder / "tokenizer_config.json"
        tokenizer_config = (
            json.loads(tokenizer_config_file.read_text()) if tokenizer_config_file.is_file() else {}
        )
        self.max_length = max_length or min(
            tokenizer_config.get("model_max_length", 512),
            config.get("max_position_embeddings", 512),
        )
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.enable_padding(pad_id=config.get("pad_token_id") or 0)
        options = ort.SessionOptions()
        # Threads from this process's CPU share, not the host's core count:
        # a container with 2 vCPUs on a 64-core host must not start 64 threads.
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(
                str(self.model_file), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelFolderError(f"cannot load {self.model_file}: {err}") from err
        self.input_names = [i.name for i in self.session.get_inputs()]

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts)
        features = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        return {name: features[name] for name in self.input_names}

    def logits(self, texts: list[str]) -> np.ndarray:
        (logits,) = self.session.run(["logits"], self.encode(texts))
        return logits

    def probabilities(self, texts: list[str]) -> np.ndarray:
        logits = self.logits(texts).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)
