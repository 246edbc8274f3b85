"""The promotion gate's decision, case by case (the full flow: tests/test_registry.py)."""

import pytest

from distrinews.config import PromoteConfig, UserError
from distrinews.registry import Score, decide

VERSIONS = {"candidate": "3", "champion": "2"}


def test_the_first_champion_only_needs_the_latency_budget():
    promoted, reason = decide(PromoteConfig(max_p95_ms=10), Score(0.25, 9.0), None, VERSIONS)
    assert promoted and "first champion" in reason
    promoted, reason = decide(PromoteConfig(max_p95_ms=10), Score(0.95, 11.0), None, VERSIONS)
    assert not promoted and "over max_p95_ms=10" in reason


@pytest.mark.parametrize(
    ("candidate", "limit", "promoted"),
    [(0.9100, 0.0, True), (0.9200, 0.0, True), (0.9099, 0.0, False), (0.9060, 0.5, True)],
)
def test_accuracy_may_drop_at_most_the_limit(candidate, limit, promoted):
    cfg = PromoteConfig(max_accuracy_drop=limit)
    decision, reason = decide(cfg, Score(candidate, 5.0), Score(0.9100), VERSIONS)
    assert decision is promoted, reason
    assert "version 2" in reason and ("points lower" in reason) is not promoted


def test_force_skips_the_accuracy_gate_but_not_the_latency_budget():
    worse, slow = Score(0.50, 5.0), Score(0.50, 50.0)
    assert decide(PromoteConfig(force=True), worse, Score(0.91), VERSIONS)[0]
    assert not decide(PromoteConfig(force=True), slow, Score(0.91), VERSIONS)[0]


@pytest.mark.parametrize(
    "settings",
    [{"version": "v2"}, {"registered_model": " "}, {"max_p95_ms": 0}, {"max_accuracy_drop": -1}],
)
def test_bad_settings_are_refused(settings):
    with pytest.raises(UserError):
        PromoteConfig(**settings)
