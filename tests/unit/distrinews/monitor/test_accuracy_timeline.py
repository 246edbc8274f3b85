"""The monitor's chart of estimated against live accuracy, stretch by stretch, on a window
whose labels stop agreeing with the confidences halfway."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

from distrinews.monitor.accuracy_timeline import MIN_STRETCH, accuracy_timeline, timeline_png


def window(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """n predictions a minute apart at confidence 0.9; every other one labelled, right as
    often as it says in the first half, and half as often in the second."""
    rng = np.random.default_rng(seed)
    start = datetime(2026, 12, 1, tzinfo=timezone.utc)
    rows = pd.DataFrame(
        {
            "id": np.arange(n),
            "time": [start + timedelta(minutes=i) for i in range(n)],
            "confidence": np.full(n, 0.9),
            "tokens": rng.integers(20, 60, n),
        }
    ).sample(frac=1, random_state=seed)  # the log's order need not be time's
    labelled = np.arange(0, n, 2)
    right = rng.random(len(labelled)) < np.where(labelled < n // 2, 0.9, 0.45)
    feedback = pd.DataFrame(
        {
            "prediction_row": labelled,
            "predicted": "World",
            "label": np.where(right, "World", "Sports"),
        }
    )
    return rows, feedback


def test_the_stretches_follow_time_and_live_accuracy_leaves_the_band_after_the_shift():
    rows, feedback = window(1200)
    stretches = accuracy_timeline(rows, feedback, None)
    assert len(stretches) == 12
    assert all(a.end < b.start for a, b in zip(stretches, stretches[1:], strict=False))
    assert sum(s.estimated.predictions for s in stretches) == 1200
    assert sum(s.labelled for s in stretches) == 600
    for stretch in stretches:
        assert abs(stretch.estimated.accuracy - 0.9) < 1e-9  # unmapped: the confidence
        assert stretch.live_low <= stretch.live <= stretch.live_high
    before, after = stretches[:6], stretches[6:]
    assert all(s.live_high > s.estimated.low for s in before)
    assert all(s.live_high < s.estimated.low for s in after)  # the concept shift, visible
    assert timeline_png(stretches, "test").startswith(b"\x89PNG")


def test_too_few_predictions_give_no_chart_and_unlabelled_stretches_no_live_point():
    rows, _ = window(2 * MIN_STRETCH - 1)
    assert (
        accuracy_timeline(
            rows, pd.DataFrame(columns=["prediction_row", "predicted", "label"]), None
        )
        == []
    )
    rows, _ = window(400)
    no_labels = pd.DataFrame(columns=["prediction_row", "predicted", "label"])
    stretches = accuracy_timeline(rows, no_labels, None)
    assert len(stretches) == 4 and all(s.live is None and s.labelled == 0 for s in stretches)
    assert timeline_png(stretches, "no labels").startswith(b"\x89PNG")
