"""Labelled production feedback as training data: read from the prediction log, checked
against the data's classes, de-duplicated, and split into the rows training adds (`feedback`)
and a held-out `production` slice it never sees. No torch: promote reads the slice too.
"""

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from distrinews.config import DataConfig, FeedbackConfig
from distrinews.data.splits import Splits, load_splits
from distrinews.data.time_window import instant, parse_window
from distrinews.errors import UserError
from distrinews.runtime.prediction_store import (
    FEEDBACK,
    PREDICTIONS,
    LogUnavailable,
    feedback_on_prediction,
    open_store,
)

#: Where a train run keeps its production slice (class names in `label`), for promote.
PRODUCTION_ARTIFACT = "datasets/production.parquet"


@dataclass(frozen=True)
class FeedbackRows:
    """What training takes from the feedback, and what it left out and why."""

    feedback: pd.DataFrame  # text, label (class ids): added to the training rows
    production: pd.DataFrame  # text, label (class ids): the held-out evaluation slice
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> rows


def feedback_window(since: str, until: str) -> tuple[datetime | None, datetime | None]:
    """[start, end) of the feedback times `since` and `until` admit, in UTC (None: open)."""
    end = instant(until) if until.strip() else None
    start = parse_window(since, until)[0] if since.strip() else None
    return start, end


def read_feedback(url: str, since: datetime | None, until: datetime | None = None) -> pd.DataFrame:
    """Every feedback item given in [since, until), newest last: its time, true label, and
    text (the one sent with the feedback, else the one the server logged with the prediction).
    """
    try:
        engine = open_store(url)
    except LogUnavailable as err:
        raise UserError(f"{err}; pass the server's DISTRINEWS_PREDICTION_LOG") from err
    query = (
        sa.select(
            FEEDBACK.c.time,
            FEEDBACK.c.label,
            sa.func.coalesce(FEEDBACK.c.text, PREDICTIONS.c.text).label("text"),
        )
        .select_from(FEEDBACK.outerjoin(PREDICTIONS, feedback_on_prediction()))
        .order_by(FEEDBACK.c.time, FEEDBACK.c.id)
    )
    if since is not None:
        query = query.where(FEEDBACK.c.time >= since)
    if until is not None:  # a window's end: what arrives later is the next window's
        query = query.where(FEEDBACK.c.time < until)
    try:
        with engine.connect() as connection:
            return pd.read_sql(query, connection)
    except sa.exc.SQLAlchemyError as err:
        reason = " ".join(str(err).split())[:300]
        raise UserError(f"cannot read the feedback in the prediction log: {reason}") from err
    finally:
        engine.dispose()


def normalized(texts: pd.Series) -> pd.Series:
    """Texts compared case- and whitespace-blind: the same story sent twice is one row."""
    return texts.str.casefold().str.split().str.join(" ")


def whole_data(data: DataConfig) -> Splits:
    """The data's whole train and test files, whatever rows a step samples from them
    (max_eval_rows, max_train_rows; the validation seed only splits them)."""
    return load_splits(replace(data, max_train_rows=0, max_eval_rows=0), seed=0)


def known_texts(whole: Splits) -> set[str]:
    """The normalized texts of `whole` (see `whole_data`): feedback that repeats any of them
    must not reach training, or a gate could score a model on the very texts it was fed."""
    return set(pd.concat([normalized(frame["text"]) for frame in whole.frames().values()]))


def usable_feedback(
    raw: pd.DataFrame, labels: tuple[str, ...], known: set[str]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The feedback rows training may use, labels as class ids; and the rows left out.

    A label the data does not have is refused, not dropped: a new class is a new model.
    """
    unknown = sorted(set(raw["label"]) - set(labels))
    if unknown:
        raise UserError(
            f"the feedback has label(s) {', '.join(map(repr, unknown))}, which the data does "
            f"not have ({', '.join(labels)}); a new class is a new model: add it to the "
            "data and train from the base encoder"
        )
    left_out = {"without text": int(raw["text"].isna().sum())}
    rows = raw.dropna(subset=["text"])
    rows = rows[rows["text"].str.strip() != ""].assign(key=lambda f: normalized(f["text"]))
    # The newest label of a text wins: a later correction replaces an earlier answer.
    latest = rows.drop_duplicates("key", keep="last")
    left_out["repeated"] = len(rows) - len(latest)
    fresh = latest[~latest["key"].isin(known)]
    left_out["already in the data"] = len(latest) - len(fresh)
    ids = {name: i for i, name in enumerate(labels)}
    frame = pd.DataFrame({"text": fresh["text"], "label": fresh["label"].map(ids)})
    return frame.reset_index(drop=True), left_out


def in_production_slice(texts: pd.Series, share: float) -> pd.Series:
    """Whether each text belongs to the held-out production slice: a hash of its normalized
    text, read as a number in [0, 1), below `share`. A function of the text alone, so a
    text's side never changes as rows are added, read again by another rank or launch, or
    reordered; and a text sent again (any case or spacing) falls on the same side."""

    def point(key: str) -> float:
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64

    return normalized(texts).map(point) < share


def split_production(
    rows: pd.DataFrame, share: float, seed: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows to train on, the production slice): about `share` of the texts, each placed by
    its own hash (`in_production_slice`). `seed` is ignored: it chose the earlier seeded
    permutation, whose slice moved as rows were added; it stays so older callers run."""
    del seed
    held_out = in_production_slice(rows["text"], share).astype(bool)
    return rows[~held_out].reset_index(drop=True), rows[held_out].reset_index(drop=True)


def load_feedback(cfg: FeedbackConfig, data: DataConfig, labels: tuple[str, ...]) -> FeedbackRows:
    """The feedback of `cfg.feedback` in [feedback_since, feedback_until), ready to train and
    score on. UserError if none of it can be trained on."""
    raw = read_feedback(cfg.feedback, *feedback_window(cfg.feedback_since, cfg.feedback_until))
    rows, left_out = usable_feedback(raw, labels, known_texts(whole_data(data)))
    if rows.empty:
        counts = ", ".join(f"{n} {why}" for why, n in left_out.items() if n) or "none given"
        raise UserError(
            f"no labelled feedback to train on in the prediction log since "
            f"{cfg.feedback_since or 'the start'} ({len(raw)} items: {counts}); feedback needs "
            "its text (send it with POST /feedback, or run the server with "
            "DISTRINEWS_LOG_TEXTS=true)"
        )
    train, production = split_production(rows, cfg.production_share)
    return FeedbackRows(train, production, left_out)


def save_rows(rows: FeedbackRows, path: Path) -> None:
    """Write `rows` whole or not at all (a kill mid-write leaves no file)."""
    record = {
        "feedback": rows.feedback.to_dict("list"),
        "production": rows.production.to_dict("list"),
        "left_out": rows.left_out,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, path)


def read_rows(path: Path) -> FeedbackRows:
    record = json.loads(path.read_text())
    frames = {
        part: pd.DataFrame(record[part], columns=["text", "label"]).astype({"label": "int64"})
        for part in ("feedback", "production")
    }
    return FeedbackRows(frames["feedback"], frames["production"], record["left_out"])


def frozen_feedback(
    cfg: FeedbackConfig, data: DataConfig, labels: tuple[str, ...], frozen: Path | None
) -> FeedbackRows:
    """The run's feedback rows as its first launch read them: from `frozen` if a launch of
    this run saved them there (a torchrun restart, resume=true), else from the log, then
    saved there. Feedback given meanwhile cannot move a row between training and the
    production slice within one run."""
    if frozen is not None and frozen.is_file():
        return read_rows(frozen)
    rows = load_feedback(cfg, data, labels)
    if frozen is not None:
        save_rows(rows, frozen)
    return rows


def with_feedback(splits: Splits, rows: FeedbackRows) -> Splits:
    """The splits with the feedback rows added to train (validation and test unchanged)."""
    return replace(splits, train=pd.concat([splits.train, rows.feedback], ignore_index=True))


def as_named(frame: pd.DataFrame, labels: tuple[str, ...]) -> pd.DataFrame:
    """`frame` with class names in `label` (as the production artifact keeps them)."""
    return frame.assign(label=frame["label"].map(dict(enumerate(labels))))
