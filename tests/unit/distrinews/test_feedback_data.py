"""Feedback as training data: read from a real prediction log (SQLite), checked, de-duplicated,
split into the rows training adds and the held-out production slice."""

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from distrinews.config import FeedbackConfig
from distrinews.errors import UserError
from distrinews.feedback_data import (
    load_feedback,
    read_feedback,
    split_production,
    usable_feedback,
    with_feedback,
)
from distrinews.runtime.prediction_store import FEEDBACK, PREDICTIONS, open_store
from distrinews.splits import Splits

LABELS = ("World", "Sports", "Business", "Sci/Tech")


def splits() -> Splits:
    frame = pd.DataFrame({"text": ["Oil prices rise", "Team wins cup"], "label": [2, 1]})
    return Splits(frame, frame.iloc[:1], frame.iloc[1:], LABELS)


def feedback(texts: list, labels: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"time": range(len(texts)), "label": labels, "text": texts})


def test_unknown_labels_are_refused_as_a_new_model():
    with pytest.raises(UserError, match="'Weather'.*a new class is a new model"):
        usable_feedback(feedback(["Rain today"], ["Weather"]), splits())


def test_rows_without_text_repeats_and_data_rows_are_left_out_and_counted():
    raw = feedback(
        [None, "Chip maker  SOARS", "chip maker soars", "OIL PRICES RISE", "Rover lands", " "],
        ["World", "Business", "Sci/Tech", "Business", "Sci/Tech", "World"],
    )
    rows, left_out = usable_feedback(raw, splits())
    # The newest label of a repeated text wins; a text already in the data is dropped.
    assert rows.to_dict("list") == {"text": ["chip maker soars", "Rover lands"], "label": [3, 3]}
    assert left_out == {"without text": 1, "repeated": 1, "already in the data": 1}


def test_the_production_share_is_held_out_seeded():
    rows = pd.DataFrame({"text": [f"t{i}" for i in range(10)], "label": [0] * 10})
    train, production = split_production(rows, 0.2, seed=42)
    assert (len(train), len(production)) == (8, 2)
    assert set(train["text"]).isdisjoint(production["text"])
    assert split_production(rows, 0.2, seed=42)[1].equals(production)
    assert len(split_production(rows.iloc[:1], 0.2, 0)[1]) == 0  # one row: train on it
    assert len(split_production(rows.iloc[:2], 0.01, 0)[1]) == 1  # at least one held out
    assert len(split_production(rows, 0.0, 0)[1]) == 0


def write_log(url: str, rows: list[dict]) -> None:
    """Predictions (with or without text) and feedback on them, as the server writes them."""
    engine = open_store(url)
    with engine.begin() as connection:
        for i, row in enumerate(rows):
            common = {"time": row["time"], "request_id": f"r{i}", "position": 0}
            connection.execute(
                PREDICTIONS.insert(),
                common
                | {"label": "World", "confidence": 0.5, "probabilities": "{}", "tokens": 5}
                | {"unknown_share": 0.0, "text": row.get("logged")},
            )
            connection.execute(
                FEEDBACK.insert(), common | {"label": row["label"], "text": row.get("sent")}
            )
    engine.dispose()


def test_feedback_is_read_with_its_text_since_a_time(tmp_path):
    url = f"sqlite:///{tmp_path}/log.db"
    now = datetime.now(timezone.utc)
    write_log(
        url,
        [
            {"time": now - timedelta(days=3), "label": "Sports", "sent": "Old news"},
            {"time": now, "label": "Business", "logged": "Logged text"},
            {"time": now, "label": "World", "sent": "Sent text", "logged": "Logged"},
            {"time": now, "label": "World"},
        ],
    )
    recent = read_feedback(url, now - timedelta(days=1))
    assert recent["text"].tolist()[:2] == ["Logged text", "Sent text"]
    assert recent["text"].isna().tolist() == [False, False, True]
    assert len(read_feedback(url, None)) == 4
    cfg = FeedbackConfig(feedback=url, feedback_since="1d", production_share=0.5)
    rows = load_feedback(cfg, splits(), seed=0)
    assert len(rows.feedback) + len(rows.production) == 2 and rows.left_out["without text"] == 1
    merged = with_feedback(splits(), rows)
    assert len(merged.train) == 2 + len(rows.feedback) and merged.test.equals(splits().test)


def test_a_window_with_nothing_to_train_on_says_why(tmp_path):
    url = f"sqlite:///{tmp_path}/log.db"
    write_log(url, [{"time": datetime.now(timezone.utc), "label": "World"}])
    with pytest.raises(UserError, match="no labelled feedback.*1 without text.*LOG_TEXTS"):
        load_feedback(FeedbackConfig(feedback=url), splits(), seed=0)


def test_a_log_that_cannot_be_opened_is_one_line(tmp_path):
    url = f"sqlite:///{tmp_path}/missing/folder/log.db"
    with pytest.raises(UserError, match="cannot be opened") as raised:
        read_feedback(url, None)
    assert "\n" not in str(raised.value)


def test_feedback_settings_are_checked():
    with pytest.raises(UserError, match="production_share"):
        FeedbackConfig(feedback="sqlite://", production_share=1.0)
    with pytest.raises(UserError, match="feedback is empty"):
        FeedbackConfig(feedback_since="7d")
