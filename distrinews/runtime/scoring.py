"""Accuracy and batch-1 latency of any `texts -> scores` function (NumPy only).

The export step scores PyTorch and ONNX with these, and the promotion gate
scores registered versions with them through the server's own classifier.
"""

import time
from collections.abc import Callable

import numpy as np

Predict = Callable[[list[str]], np.ndarray]


def batched_logits(predict: Predict, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Scores over batches of similar length (fast), returned in the texts' order."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    scores: np.ndarray | None = None
    for start in range(0, len(texts), batch_size):
        chunk = order[start : start + batch_size]
        batch = predict([texts[i] for i in chunk])
        if scores is None:
            scores = np.empty((len(texts), batch.shape[1]), dtype=batch.dtype)
        scores[chunk] = batch
    return scores if scores is not None else np.empty((0, 0), dtype=np.float32)


def batched_predictions(predict: Predict, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """argmax of `batched_logits`, in the texts' order."""
    return batched_logits(predict, texts, batch_size).argmax(axis=1)


def batch1_latency_ms(predict: Predict, texts: list[str]) -> list[float]:
    """Milliseconds of each text scored alone."""
    timings = []
    for text in texts:
        start = time.perf_counter()
        predict([text])
        timings.append(1000 * (time.perf_counter() - start))
    return timings


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))
