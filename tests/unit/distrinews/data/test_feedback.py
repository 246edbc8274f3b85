"""Feedback as training data: read from a real prediction log (SQLite), checked, de-duplicated,
split into the rows training adds and the held-out production slice."""

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from distrinews.config import DataConfig, FeedbackConfig
from distrinews.data.feedback import (
    feedback_window,
    in_production_slice,
    load_feedback,
    normalized,
    read_feedback,
    split_production,
    usable_feedback,
    with_feedback,
)
from distrinews.data.splits import Splits
from distrinews.errors import UserError
from distrinews.runtime.prediction_store import FEEDBACK, PREDICTIONS, open_store

LABELS = ("World", "Sports", "Business", "Sci/Tech")


def splits() -> Splits:
    frame = pd.DataFrame({"text": ["Oil prices rise", "Team wins cup"], "label": [2, 1]})
    return Splits(frame, frame.iloc[:1], frame.iloc[1:], LABELS)


def feedback(texts: list, labels: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"time": range(len(texts)), "label": labels, "text": texts})


def known(split: Splits) -> set[str]:
    return set(pd.concat([normalized(f["text"]) for f in split.frames().values()]))


def test_unknown_labels_are_refused_as_a_new_model():
    with pytest.raises(UserError, match="'Weather'.*a new class is a new model"):
        usable_feedback(feedback(["Rain today"], ["Weather"]), LABELS, known(splits()))


def test_rows_without_text_repeats_and_data_rows_are_left_out_and_counted():
    raw = feedback(
        [None, "Chip maker  SOARS", "chip maker soars", "OIL PRICES RISE", "Rover lands", " "],
        ["World", "Business", "Sci/Tech", "Business", "Sci/Tech", "World"],
    )
    rows, left_out = usable_feedback(raw, LABELS, known(splits()))
    # The newest label of a repeated text wins; a text already in the data is dropped.
    assert rows.to_dict("list") == {"text": ["chip maker soars", "Rover lands"], "label": [3, 3]}
    assert left_out == {"without text": 1, "repeated": 1, "already in the data": 1}


def test_a_text_s_side_of_the_production_slice_never_changes_as_rows_are_added():
    """The issue's reproduction: with 50 rows on one rank and 51 on another, a seeded
    permutation put 6 of rank 0's 10 held-out rows among rank 1's training rows. A side
    chosen by each text's own hash cannot move, whatever else is read, in any order."""
    rows = pd.DataFrame({"text": [f"Story number {i}" for i in range(2000)], "label": [0] * 2000})
    train, production = split_production(rows.iloc[:50], 0.2)
    more_train, more_production = split_production(rows.iloc[:51].iloc[::-1], 0.2)
    assert set(production["text"]) <= set(more_production["text"])
    assert set(production["text"]).isdisjoint(more_train["text"])
    assert set(train["text"]) <= set(more_train["text"])
    # About the share asked for; a text sent again in other case or spacing: same side.
    assert 0.17 < len(split_production(rows, 0.2)[1]) / len(rows) < 0.23
    held = production["text"].iloc[0]
    assert in_production_slice(pd.Series([f"  {held.upper()} "]), 0.2).all()
    assert len(split_production(rows, 0.0)[1]) == 0


def data_folder(tmp_path) -> DataConfig:
    """A data folder holding `splits()`'s rows as train and test files."""
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    frame = splits().train.assign(label=lambda f: f["label"].map(dict(enumerate(LABELS))))
    frame.to_parquet(folder / "train.parquet")
    frame.to_parquet(folder / "test.parquet")
    return DataConfig(data=str(folder))


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
    rows = load_feedback(cfg, data_folder(tmp_path), LABELS)
    assert len(rows.feedback) + len(rows.production) == 2 and rows.left_out["without text"] == 1
    merged = with_feedback(splits(), rows)
    assert len(merged.train) == 2 + len(rows.feedback) and merged.test.equals(splits().test)


def test_a_window_with_nothing_to_train_on_says_why(tmp_path):
    url = f"sqlite:///{tmp_path}/log.db"
    write_log(url, [{"time": datetime.now(timezone.utc), "label": "World"}])
    with pytest.raises(UserError, match="no labelled feedback.*1 without text.*LOG_TEXTS"):
        load_feedback(FeedbackConfig(feedback=url), data_folder(tmp_path), LABELS)


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
    with pytest.raises(UserError, match="carries a password.*-P feedback=env") as raised:
        FeedbackConfig(feedback="postgresql+psycopg://logger:S3cretPW@db.local/log")
    assert "S3cretPW" not in str(raised.value)
    assert FeedbackConfig(feedback="env").feedback == "env"


def test_feedback_repeating_any_test_text_is_left_out_whatever_sample_is_scored(tmp_path):
    """The issue's reproduction: with max_eval_rows set, feedback was compared with the test
    sample of the train seed while export and promote score another sample; 151 of 200
    texts copied from the gate's test rows were kept for training."""
    folder = tmp_path / "data"
    folder.mkdir()
    test = pd.DataFrame({"text": [f"Test story {i}" for i in range(200)], "label": ["World"] * 200})
    test.to_parquet(folder / "test.parquet")
    train = pd.DataFrame(
        {"text": ["Oil prices rise", "Team wins cup"], "label": ["Business", "World"]}
    )
    train.to_parquet(folder / "train.parquet")
    url = f"sqlite:///{tmp_path}/log.db"
    now = datetime.now(timezone.utc)
    copied = [{"time": now, "label": "World", "sent": text} for text in test["text"]]
    write_log(url, copied + [{"time": now, "label": "World", "sent": "A fresh story"}])
    data = DataConfig(data=str(folder), max_eval_rows=20)
    rows = load_feedback(FeedbackConfig(feedback=url), data, LABELS)
    assert rows.left_out["already in the data"] == 200
    assert pd.concat([rows.feedback, rows.production])["text"].tolist() == ["A fresh story"]


def test_feedback_is_read_in_its_window_whatever_the_offset_it_is_written_in(tmp_path):
    """[since, until): what arrives at or after the end is the next window's; a time with
    a non-UTC offset is the same instant, not the same wall-clock text."""
    url = f"sqlite:///{tmp_path}/log.db"
    end = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    write_log(
        url,
        [
            {"time": end - timedelta(hours=2), "label": "World", "sent": "In the window"},
            {"time": end, "label": "World", "sent": "At the end"},
            {"time": end + timedelta(minutes=5), "label": "World", "sent": "During the retrain"},
        ],
    )
    since, until = "2026-12-01T11:00+02:00", "2026-12-01T14:00+02:00"  # 09:00 to 12:00 UTC
    window = read_feedback(url, *feedback_window(since, until))
    assert window["text"].tolist() == ["In the window"]
    cfg = FeedbackConfig(feedback=url, feedback_since=since, feedback_until=until)
    assert feedback_window(cfg.feedback_since, cfg.feedback_until)[1] == end
