"""Figures logged as PNG artifacts: confusion matrix and training curves.

matplotlib loads on the first figure drawn: only the main process draws, and
the other ranks start faster without it.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on training nodes
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_figure(counts: torch.Tensor, labels: Sequence[str], title: str) -> "Figure":
    """Rows: true class, columns: predicted; cells show counts, colour shows row share."""
    plt = _pyplot()
    counts = counts.cpu()
    shares = counts.double() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    image = ax.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    for true in range(len(labels)):
        for pred in range(len(labels)):
            ax.text(
                pred,
                true,
                int(counts[true, pred]),
                ha="center",
                va="center",
                color="white" if shares[true, pred] > 0.5 else "black",
            )
    ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="share of true class")
    fig.tight_layout()
    return fig


def training_curves_figure(series: dict[str, list[tuple[int, float]]]) -> "Figure":
    """One panel per metric, x = optimizer step; `series` maps name -> [(step, value)]."""
    plt = _pyplot()
    names = [name for name, points in series.items() if points]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4.5 * max(1, len(names)), 3.5))
    axes = [axes] if len(names) <= 1 else list(axes)
    for ax, name in zip(axes, names, strict=False):
        steps, values = zip(*series[name], strict=True)
        ax.plot(steps, values, marker="o" if len(steps) < 20 else None)
        ax.set_title(name)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
