"""promote -P live_window=: the challenger judged on the texts it and the champion both
scored, as the prediction log holds them, in process on a real SQLite registry and log.

The log's rows are written as the server writes a shadow pair (one prediction id, a served
champion row and an unserved challenger row, the feedback keyed by the prediction id); the
models are the tiny int8 one registered twice, so the offline evidence is a tie and the
live evidence decides.
"""

import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from distrinews.config import DataConfig, PromoteConfig
from distrinews.errors import UserError
from distrinews.promote.gate import run_promote
from distrinews.runtime.prediction_store import (
    CHALLENGER,
    CHAMPION,
    FEEDBACK,
    PREDICTIONS,
    open_store,
)
from tests.unit.distrinews.promote.test_gate import NAME, OPEN, register

LABELS = ("World", "Sports", "Business", "Sci/Tech")


def write_pairs(log: str, versions: dict[str, str], right: dict[str, list[bool]]) -> None:
    """One request per text: the champion's served row, the challenger's shadow row, and the
    true label (World); each role predicts World where `right` says so, else Sports."""
    engine = open_store(log)
    now = datetime.now(timezone.utc)
    with engine.begin() as connection:
        for champion_right, challenger_right in zip(*right.values(), strict=True):
            key = {"prediction_id": uuid.uuid4().hex, "position": 0}
            common = key | {"time": now, "request_id": key["prediction_id"], "model_name": NAME}
            common |= {"confidence": 0.9, "probabilities": "{}", "tokens": 12}
            common |= {"unknown_share": 0.0, "inference_ms": 3.0}
            for role, was_right, served in (
                (CHAMPION, champion_right, True),
                (CHALLENGER, challenger_right, False),
            ):
                label = "World" if was_right else "Sports"
                row = {"role": role, "served": served, "model_version": versions[role]}
                connection.execute(PREDICTIONS.insert(), common | row | {"label": label})
            feedback = {"time": now, "request_id": key["prediction_id"], "label": "World"}
            connection.execute(FEEDBACK.insert(), key | feedback)
    engine.dispose()


@pytest.fixture()
def two_versions(promote_registry, tiny_onnx) -> dict[str, str]:
    """Version 1 the champion, version 2 the challenger (the same tiny model)."""
    versions = {CHAMPION: register(promote_registry, tiny_onnx)}
    versions[CHALLENGER] = register(promote_registry, tiny_onnx)
    for role, version in versions.items():
        promote_registry.set_registered_model_alias(NAME, role, version)
    return versions


def live_promote(small_data: Path, log: str, **settings: object) -> str:
    cfg = PromoteConfig(
        live_window="1h", live_store=log, latency_texts=5, max_p95_ms=1000, **OPEN, **settings
    )
    return run_promote(cfg, DataConfig(data=str(small_data), max_eval_rows=50))


def test_a_challenger_worse_on_live_feedback_is_refused_with_the_live_numbers(
    promote_registry, two_versions, small_data, tmp_path
):
    """As a challenger trained on shuffled labels would be: right on 60% of 300 labelled
    texts where the champion is right on 90%."""
    log = f"sqlite:///{tmp_path}/predictions.db"
    write_pairs(
        log,
        two_versions,
        {"champion": [i % 10 != 0 for i in range(300)]}
        | {"challenger": [i % 10 < 6 for i in range(300)]},
    )
    with pytest.raises(UserError) as refused:
        live_promote(small_data, log, max_live_accuracy_drop=1)
    reason = str(refused.value)
    assert "live: -30.00 points, 95% interval [" in reason and "worse with confidence" in reason
    assert "live accuracy 0.6000 vs 0.9000" in reason
    client = promote_registry
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == two_versions[CHAMPION]
    assert (
        str(client.get_model_version_by_alias(NAME, CHALLENGER).version) == two_versions[CHALLENGER]
    )
    tags = client.get_model_version(NAME, two_versions[CHALLENGER]).tags
    assert tags["promotion"] == "refused" and "300 texts scored by both" in tags["promotion_live"]
    run = client.get_run(tags["promotion_run_id"])
    assert run.data.metrics["live/texts"] == 300
    assert run.data.metrics["live/difference_points"] == pytest.approx(-30.0)


def test_too_little_live_traffic_is_refused_and_says_what_to_do(
    promote_registry, two_versions, small_data, tmp_path
):
    log = f"sqlite:///{tmp_path}/predictions.db"
    write_pairs(log, two_versions, {"champion": [True] * 40, "challenger": [True] * 40})
    with pytest.raises(UserError, match="40 texts scored by .* under min_live_requests=200"):
        live_promote(small_data, log)


def test_a_challenger_shown_no_worse_live_becomes_champion_and_its_alias_goes(
    promote_registry, two_versions, small_data, tmp_path
):
    """Right on 10 more of 300 texts and wrong on none the champion got: shown at least as
    good (limit 0; 5 more would not show it: the interval's low end is -0.09 points); the
    candidate is @challenger's version, no -P version needed."""
    log = f"sqlite:///{tmp_path}/predictions.db"
    champion = [i % 10 != 0 for i in range(300)]
    challenger = [right or i < 100 for i, right in enumerate(champion)]
    write_pairs(log, two_versions, {"champion": champion, "challenger": challenger})
    done = live_promote(small_data, log, min_agreement=0.9)
    assert f"-> version {two_versions[CHALLENGER]}" in done
    client = promote_registry
    holder = client.get_model_version_by_alias(NAME, CHAMPION).version
    assert str(holder) == two_versions[CHALLENGER]
    assert CHALLENGER not in client.get_registered_model(NAME).aliases
    tags = client.get_model_version(NAME, two_versions[CHALLENGER]).tags
    assert tags["promotion"] == "promoted" and "live: +3.33 points" in tags["promotion_reason"]
