"""Classification metrics derived from a confusion matrix.

Ranks each count their share into a confusion matrix; the matrices are
summed across ranks, so the metrics cover the whole split exactly.
"""

import torch

from distrinews.data.labels import metric_safe


def confusion_matrix(
    labels: torch.Tensor, predictions: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """counts[true, predicted], int64."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def classification_metrics(counts: torch.Tensor, labels: tuple[str, ...]) -> dict[str, float]:
    """Accuracy, macro-F1 and per-class F1 from a confusion matrix."""
    counts = counts.double()
    true_positive = counts.diag()
    predicted = counts.sum(dim=0)
    actual = counts.sum(dim=1)
    # F1 = 2TP / (predicted + actual); a class absent from both counts as 0.
    f1 = torch.where(predicted + actual > 0, 2 * true_positive / (predicted + actual), 0.0)
    metrics = {
        "accuracy": (true_positive.sum() / counts.sum().clamp(min=1)).item(),
        "macro_f1": f1.mean().item(),
    }
    for name, value in zip(labels, f1.tolist(), strict=True):
        metrics[f"f1_{metric_safe(name)}"] = value
    return metrics
