"""The int8 model checked against the PyTorch model it came from, on the test split:
accuracy, agreement, batch-1 latency and size, with the code the server runs."""

import statistics
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distrinews.runtime.cpu import available_cpus
from distrinews.runtime.onnx_classifier import OnnxClassifier
from distrinews.runtime.scoring import (
    batch1_latency_ms,
    batched_logits,
    batched_predictions,
    percentile,
)
from distrinews.train.model import match_inputs_to_model


def pytorch_logits(
    model: torch.nn.Module, tokenizer, texts: list[str], max_length: int
) -> np.ndarray:
    with torch.inference_mode():
        inputs = tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return model(**inputs).logits.float().numpy()


def compare_with_pytorch(
    checkpoint: Path,
    fp32_dir: Path,
    int8_dir: Path,
    texts: list[str],
    labels: np.ndarray,
    latency_texts: int,
) -> tuple[dict[str, float], np.ndarray]:
    """Accuracy of PyTorch fp32, ONNX fp32 and ONNX int8; int8 agreement; batch-1 latency.
    Also returns the int8 model's test logits (the calibration is measured on them)."""
    threads = available_cpus()
    torch.set_num_threads(threads)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    match_inputs_to_model(tokenizer, model)
    fp32 = OnnxClassifier(fp32_dir, threads=threads)
    int8 = OnnxClassifier(int8_dir, threads=threads)

    def torch_predict(batch: list[str]) -> np.ndarray:
        return pytorch_logits(model, tokenizer, batch, int8.max_length)

    int8_logits = batched_logits(int8.logits, texts)
    predictions = {
        "pytorch_fp32": batched_predictions(torch_predict, texts),
        "onnx_fp32": batched_predictions(fp32.logits, texts),
        "onnx_int8": int8_logits.argmax(axis=1),
    }
    report = {f"accuracy_{name}": float((p == labels).mean()) for name, p in predictions.items()}
    report["int8_agreement_with_pytorch"] = float(
        (predictions["onnx_int8"] == predictions["pytorch_fp32"]).mean()
    )
    # Batch-1 latency in alternating blocks of texts, so machine noise hits
    # both models alike. Not text by text: torch's OpenMP threads spin for a
    # while after each call and would slow the ONNX Runtime call after them.
    sample = texts[:latency_texts]
    torch_ms, int8_ms = [], []
    for start in range(0, len(sample), 25):
        block = sample[start : start + 25]
        torch_ms += batch1_latency_ms(torch_predict, block)
        int8_ms += batch1_latency_ms(int8.logits, block)
    for name, timings in (("pytorch_fp32", torch_ms), ("onnx_int8", int8_ms)):
        report[f"latency_p50_ms_{name}"] = percentile(timings, 50)
        report[f"latency_p95_ms_{name}"] = percentile(timings, 95)
    report["int8_speedup_p50"] = statistics.median(torch_ms) / statistics.median(int8_ms)
    report["size_mb_pytorch"] = _size_mb(checkpoint, "*.safetensors")
    report["size_mb_onnx_fp32"] = _size_mb(fp32_dir, "*.onnx")
    report["size_mb_onnx_int8"] = _size_mb(int8_dir, "*.onnx")
    return report, int8_logits


def _size_mb(folder: Path, pattern: str) -> float:
    return sum(f.stat().st_size for f in folder.glob(pattern)) / 2**20


def int8_drop_points(report: dict[str, float]) -> float:
    """How many points of test accuracy int8 lost against PyTorch fp32 (negative: gained)."""
    return 100 * (report["accuracy_pytorch_fp32"] - report["accuracy_onnx_int8"])
