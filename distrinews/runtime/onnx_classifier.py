"""Run an exported ONNX text classifier with ONNX Runtime, tokenizers and NumPy only.

No torch and no transformers: the server image stays small, and the export
step checks the model with the exact code that will serve it.

A model folder holds one `*.onnx` file, `tokenizer.json` and `config.json`
(whose `id2label` names the classes).
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from distrinews.errors import ModelFolderError
from distrinews.runtime.calibration import read_temperature, softmax
from distrinews.runtime.cpu import available_cpus
from distrinews.runtime.labels import class_names
from distrinews.runtime.reference_profile import read_profile, unknown_token_id


class OnnxClassifier:
    def __init__(
        self,
        folder: str | Path,
        threads: int = 0,
        max_length: int = 0,
        max_padding_share: float = 0.2,
        spinning: str = "on",
    ):
        self.folder = Path(folder)
        self.max_padding_share = max_padding_share
        self.model_file = _check_folder(self.folder)
        config = json.loads((self.folder / "config.json").read_text())
        self.labels = class_names(config.get("id2label"))
        # Truncate where training did (the export stores it as model_max_length).
        tokenizer_config_file = self.folder / "tokenizer_config.json"
        tokenizer_config = (
            json.loads(tokenizer_config_file.read_text()) if tokenizer_config_file.is_file() else {}
        )
        self.max_length = max_length or min(
            tokenizer_config.get("model_max_length", 512),
            config.get("max_position_embeddings", 512),
        )
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        # Padding is ours (per length group); a tokenizer.json may carry a
        # fixed padding of its own (the packaged MiniLM pads every text to 128).
        self.tokenizer.no_padding()
        self.pad_id = config.get("pad_token_id") or 0
        self.session = _session(self.model_file, threads, spinning)
        self.input_names = [i.name for i in self.session.get_inputs()]
        _check_labels(self.labels, self.session, self.folder)
        # Fitted at export (runtime.calibration); 1 for a folder exported without one.
        self.temperature = read_temperature(self.folder)
        # What held-out data looked like (runtime.reference_profile); None if not exported.
        self.profile = read_profile(self.folder)
        self.unknown_id = unknown_token_id(self.tokenizer)

    def logits(self, texts: list[str]) -> np.ndarray:
        """Logits in the texts' order."""
        return self.logits_of(self.encode(texts))

    def encode(self, texts: list[str]) -> list:
        """Token ids of each text, truncated, unpadded."""
        return self.tokenizer.encode_batch(texts)

    def logits_of(
        self, encodings: list, max_batch: int = 0, run_options: ort.RunOptions | None = None
    ) -> np.ndarray:
        """Logits of encoded texts, in their order, computed in groups of similar length.

        One padded batch would spend most of its work on padding when a short
        and a long text meet; groups whose padding stays under
        `max_padding_share` keep the batching gain without that waste. `max_batch`
        caps a group's texts (0: no cap), so a long list never becomes one huge call.
        `run_options`: set its `terminate` from another thread to stop the run (it raises).
        """
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        logits = np.empty((len(encodings), len(self.labels)), dtype=np.float32)
        group: list[int] = []
        tokens = 0
        for index in order:
            length = len(encodings[index].ids)
            padded = (len(group) + 1) * length  # sorted: the newest is the longest
            full = 0 < max_batch <= len(group)
            if group and (full or padded - tokens - length > self.max_padding_share * padded):
                logits[group] = self.run_encoded([encodings[i] for i in group], run_options)
                group, tokens = [], 0
            group.append(index)
            tokens += length
        if group:
            logits[group] = self.run_encoded([encodings[i] for i in group], run_options)
        return logits

    def run_encoded(self, encodings: list, run_options: ort.RunOptions | None = None) -> np.ndarray:
        """Logits of tokenized texts, padded to the longest (one ONNX Runtime call)."""
        width = max(len(e.ids) for e in encodings)
        features = {
            "input_ids": _padded([e.ids for e in encodings], width, self.pad_id),
            "attention_mask": _padded([e.attention_mask for e in encodings], width, 0),
            "token_type_ids": _padded([e.type_ids for e in encodings], width, 0),
        }
        inputs = {n: features[n] for n in self.input_names}
        (logits,) = self.session.run(["logits"], inputs, run_options)
        return logits

    def probabilities(self, texts: list[str]) -> np.ndarray:
        return self.calibrated(self.logits(texts))

    def calibrated(self, logits: np.ndarray) -> np.ndarray:
        """Class probabilities (float64) of logits, scaled by the fitted temperature."""
        return softmax(logits, self.temperature)


def read_labels(folder: Path) -> tuple[str, ...]:
    """The class names of an exported folder, in output order (its config.json's id2label)."""
    return class_names(json.loads((Path(folder) / "config.json").read_text()).get("id2label"))


def _check_folder(folder: Path) -> Path:
    """The folder's one .onnx file, once the files the classifier reads are there."""
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {folder} does not exist")
    models = sorted(folder.glob("*.onnx"))
    if len(models) != 1:
        raise ModelFolderError(f"{folder} must hold exactly one .onnx file, found {len(models)}")
    for needed in ("tokenizer.json", "config.json"):
        if not (folder / needed).is_file():
            raise ModelFolderError(
                f"{folder} lacks {needed}; export the model with pipelines.export"
            )
    return models[0]


def _check_labels(labels: tuple[str, ...], session: ort.InferenceSession, folder: Path) -> None:
    """One name per output of the model, at least two."""
    width = session.get_outputs()[0].shape[-1]
    if len(labels) < 2:
        raise ModelFolderError(f"{folder}/config.json names no classes (id2label); re-export it")
    if isinstance(width, int) and width != len(labels):
        raise ModelFolderError(
            f"{folder}/config.json names {len(labels)} classes ({', '.join(labels)}) but the "
            f"model outputs {width} scores; re-export the model"
        )


#: How ONNX Runtime's idle threads wait for work (the server's DISTRINEWS_SPINNING), as
#: (session.intra_op.allow_spinning, session.force_spinning_stop). Sleeping threads cost
#: a wake-up at every parallel section of a run (dozens per forward pass); spinning ones
#: burn CPU that a neighbour process could use, and ONNX Runtime's own default keeps them
#: spinning for a while after each run.
SPINNING = {
    "off": ("0", "0"),  # sleep at once, also between the sections of one run
    "inference": ("1", "1"),  # spin between the sections of a run, sleep once it ends
    "on": ("1", "0"),  # ONNX Runtime's default: also spin for a while after each run
}


def _session(model_file: Path, threads: int, spinning: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # Threads from this process's CPU share, not the host's core count:
    # a container with 2 vCPUs on a 64-core host must not start 64 threads.
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    allow_spinning, stop_after_run = SPINNING[spinning]
    options.add_session_config_entry("session.intra_op.allow_spinning", allow_spinning)
    options.add_session_config_entry("session.force_spinning_stop", stop_after_run)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(
            str(model_file),
            options,
            providers=["CPUExecutionProvider"],
            # Its CPU kernel is slower than the Add + LayerNormalization it
            # replaces (distrinews.export.step says by how much).
            disabled_optimizers=["SkipLayerNormFusion"],
        )
    except Exception as err:  # onnxruntime raises its own exception types
        raise ModelFolderError(f"cannot load {model_file}: {err}") from err


def _padded(rows: list[list[int]], width: int, value: int) -> np.ndarray:
    array = np.full((len(rows), width), value, dtype=np.int64)
    for i, row in enumerate(rows):
        array[i, : len(row)] = row
    return array
