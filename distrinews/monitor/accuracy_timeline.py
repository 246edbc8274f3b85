"""Estimated and live accuracy through the window, side by side: the monitor's chart.

The window's predictions of one version are cut, in time order, into stretches of equal
size. Each stretch has the accuracy its confidences estimate (distrinews.runtime.
accuracy_estimate, with its 95% interval) and, where labels came back for its
predictions, their live accuracy with Wilson's 95% interval. Where live accuracy leaves
the estimate's band, the relation between text and label moved (docs/monitoring.md).
"""

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from distrinews.comparison import wilson
from distrinews.monitor.png import figure_png, pyplot
from distrinews.runtime.accuracy_estimate import Z_95, Estimate, estimate_accuracy

#: At most this many stretches, and no fewer predictions in one than MIN_STRETCH: a
#: stretch's estimate then has an interval of about 10 points at most.
STRETCHES = 12
MIN_STRETCH = 100


@dataclass(frozen=True)
class Stretch:
    """One stretch of the window: when, what the confidences estimate, what labels say."""

    start: datetime
    end: datetime
    estimated: Estimate
    labelled: int
    live: float | None  # None without labels
    live_low: float | None
    live_high: float | None


def accuracy_timeline(
    rows: pd.DataFrame, feedback: pd.DataFrame, accuracy_map: dict | None
) -> list[Stretch]:
    """The stretches of `rows` (one version's predictions, with `id` and `time`), and the
    labels of `feedback` (its `prediction_row` is a prediction's `id`) that fall in each."""
    rows = rows.sort_values(["time", "id"])
    count = min(STRETCHES, len(rows) // MIN_STRETCH)
    if count < 2:
        return []
    right = pd.Series(
        (feedback["label"] == feedback["predicted"]).to_numpy(),
        index=feedback["prediction_row"].to_numpy(),
    )
    stretches = []
    for part in np.array_split(np.arange(len(rows)), count):
        stretch = rows.iloc[part]
        labelled = right[right.index.isin(stretch["id"])]
        live = wilson(int(labelled.sum()), len(labelled), Z_95) if len(labelled) else (None, None)
        stretches.append(
            Stretch(
                stretch["time"].iloc[0],
                stretch["time"].iloc[-1],
                estimate_accuracy(
                    stretch["confidence"].to_numpy(), accuracy_map, stretch["tokens"].to_numpy()
                ),
                len(labelled),
                float(labelled.mean()) if len(labelled) else None,
                *live,
            )
        )
    return stretches


def timeline_png(stretches: list[Stretch], title: str) -> bytes:
    """The estimate as a band, live accuracy as points with their intervals, over time."""
    middle = [s.start + (s.end - s.start) / 2 for s in stretches]
    fig, ax = pyplot().subplots(figsize=(8, 3.8))
    ax.fill_between(
        middle,
        [s.estimated.low for s in stretches],
        [s.estimated.high for s in stretches],
        alpha=0.25,
        label="estimated, 95% interval (no labels)",
    )
    ax.plot(middle, [s.estimated.accuracy for s in stretches], marker="o", label="estimated")
    live = [(m, s) for m, s in zip(middle, stretches, strict=True) if s.live is not None]
    if live:
        ax.errorbar(
            [m for m, _ in live],
            [s.live for _, s in live],
            yerr=[[s.live - s.live_low for _, s in live], [s.live_high - s.live for _, s in live]],
            fmt="s",
            color="black",
            capsize=3,
            label="live (labelled), 95% interval",
        )
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize="small")
    fig.autofmt_xdate()
    fig.tight_layout()
    return figure_png(fig)
