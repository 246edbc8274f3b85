"""The paired comparison the gate decides on: its counts, interval, test and verdicts."""

import numpy as np
import pytest

from distrinews.comparison import PairedComparison


def test_the_table_counts_each_row_by_who_got_it_right():
    candidate = np.array([1, 1, 0, 0, 1], dtype=bool)
    champion = np.array([1, 0, 1, 0, 1], dtype=bool)
    table = PairedComparison.of(candidate, champion)
    assert (table.both, table.gains, table.losses, table.neither) == (2, 1, 1, 1)
    assert table.rows == 5 and table.disagreements == 2 and table.difference == 0.0
    with pytest.raises(ValueError, match="same rows"):
        PairedComparison.of(candidate, champion[:4])


@pytest.mark.parametrize(("rows", "accuracy", "flip"), [(60, 0.8, 0.1), (200, 0.9, 0.05)])
def test_the_interval_covers_the_true_difference_at_least_95_percent_of_the_time(
    rows, accuracy, flip
):
    """Simulated pairs: the candidate changes each of the champion's answers with
    probability `flip`, so the true difference is flip * (1 - 2 * accuracy)."""
    rng = np.random.default_rng(0)
    truth, covered = flip * (1 - 2 * accuracy), 0
    for _ in range(1000):
        champion = rng.random(rows) < accuracy
        candidate = np.where(rng.random(rows) < flip, ~champion, champion)
        low, high = PairedComparison.of(candidate, champion).interval()
        covered += low <= truth <= high
    assert covered / 1000 >= 0.94


def test_more_disagreement_widens_the_interval_and_identical_models_show_nothing():
    narrow = PairedComparison(900, 12, 2, 86).interval()
    wide = PairedComparison(850, 62, 52, 36).interval()
    assert wide[1] - wide[0] > 2 * (narrow[1] - narrow[0])
    same = PairedComparison(180, 0, 0, 20)
    assert same.interval()[0] < 0 < same.interval()[1] and same.p_value() == 1.0
    assert not same.verdict(0).passed and same.verdict(0.05).passed


def test_mcnemar_depends_on_the_disagreements_only():
    assert PairedComparison(100, 9, 1, 10).p_value() == pytest.approx(0.02148, rel=1e-3)
    assert PairedComparison(10, 9, 1, 100).p_value() == pytest.approx(0.02148, rel=1e-3)


def test_the_rows_it_would_take_shrink_the_interval_past_the_limit():
    """Scaled up to the rows it names, the same table shows what it could not."""
    table = PairedComparison(170, 8, 4, 18)
    verdict = table.verdict(0)
    assert verdict.kind == "not enough evidence" and verdict.rows_needed > table.rows
    scale = -(-verdict.rows_needed // table.rows)
    bigger = PairedComparison(*(scale * n for n in (170, 8, 4, 18)))
    assert bigger.verdict(0).passed
    assert PairedComparison(170, 4, 8, 18).verdict(0).kind == "no better"
    assert PairedComparison(5000, 10, 200, 500).verdict(0.01).kind == "worse"
