"""Figures logged as PNG artifacts: confusion matrix, training curves, reliability diagram.

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


#: The metric histories the training-curves figure draws.
CURVES = ("train/loss", "val/loss", "val/accuracy", "train/learning_rate")


def training_curves_figure(
    series: dict[str, list[tuple[int, float]]], steps_per_epoch: int
) -> "Figure":
    """Loss (train and validation on shared axes) and validation accuracy with the
    learning rate, against epochs; `series` maps each CURVES key to [(step, value)]."""
    plt = _pyplot()
    # Larger text for this figure only (MLflow shows it scaled down), not for later ones.
    with plt.rc_context({"font.size": 12}):
        fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
        _draw_curves(series, steps_per_epoch, loss_ax, acc_ax)
        fig.tight_layout()
    return fig


def _draw_curves(series: dict, steps_per_epoch: int, loss_ax, acc_ax) -> None:
    """Left: train and validation loss; right: validation accuracy, learning rate on a twin axis."""

    def draw(ax, key: str, label: str, **style) -> None:
        if series.get(key):
            steps, values = zip(*series[key], strict=True)
            ax.plot([s / steps_per_epoch for s in steps], values, label=label, **style)

    draw(loss_ax, "train/loss", "train (running)", color="tab:blue", alpha=0.8)
    draw(loss_ax, "val/loss", "validation", color="tab:orange", marker="o", linewidth=2)
    loss_ax.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    draw(acc_ax, "val/accuracy", "validation accuracy", color="tab:green", marker="o", linewidth=2)
    acc_ax.set(title="Validation accuracy and learning rate", xlabel="epoch", ylabel="accuracy")
    lr_ax = acc_ax.twinx()
    draw(lr_ax, "train/learning_rate", "learning rate", color="tab:gray", linestyle="--")
    lr_ax.set_ylabel("learning rate")
    # "1e-04" on each tick: matplotlib's shared offset label would sit on the title.
    lr_ax.yaxis.set_major_formatter(lambda value, _: f"{value:.1e}")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    loss_ax.legend()
    handles = [h for ax in (acc_ax, lr_ax) for h in ax.get_legend_handles_labels()[0]]
    acc_ax.legend(handles=handles, loc="center right")


def reliability_figure(
    curves: dict[str, tuple[Sequence[float], Sequence[float], Sequence[int]]], title: str
) -> "Figure":
    """Accuracy against mean confidence per confidence bin, one line per curve name (e.g.
    before and after temperature scaling); the diagonal is perfect calibration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for name, (confidence, accuracy, counts) in curves.items():
        used = [i for i, count in enumerate(counts) if count]
        ax.plot([confidence[i] for i in used], [accuracy[i] for i in used], marker="o", label=name)
    ax.set_xlabel("confidence (mean in bin)")
    ax.set_ylabel("accuracy in bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig
