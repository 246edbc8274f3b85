"""Labelled production feedback as training data: read from the prediction log, checked
against the data's classes, de-duplicated, and split into the rows training adds (`feedback`)
and a held-out `production` slice it never sees. No torch: promote reads the slice too.
"""

from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa

from distrinews.config import FeedbackConfig
from distrinews.errors import UserError
from distrinews.monitor import parse_window
from distrinews.runtime.prediction_store import FEEDBACK, PREDICTIONS, LogUnavailable, open_store
from distrinews.splits import Splits

#: Where a train run keeps its production slice (class names in `label`), for promote.
PRODUCTION_ARTIFACT = "datasets/production.parquet"


@dataclass(frozen=True)
class FeedbackRows:
    """What training takes from the feedback, and what it left out and why."""

    feedback: pd.DataFrame  # text, label (class ids): added to the training rows
    production: pd.DataFrame  # text, label (class ids): the held-out evaluation slice
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> rows


def feedback_start(since: str) -> datetime | None:
    """The earliest feedback time `since` admits (None: all feedback)."""
    return parse_window(since, "")[0] if since.strip() else None


def read_feedback(url: str, since: datetime | None) -> pd.DataFrame:
    """Every feedback item given since `since`, newest last: its time, true label, and text
    (the one sent with the feedback, else the one the server logged with the prediction)."""
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
        .select_from(
            FEEDBACK.outerjoin(
                PREDICTIONS,
                (FEEDBACK.c.request_id == PREDICTIONS.c.request_id)
                & (FEEDBACK.c.position == PREDICTIONS.c.position),
            )
        )
        .order_by(FEEDBACK.c.time, FEEDBACK.c.id)
    )
    if since is not None:
        query = query.where(FEEDBACK.c.time >= since)
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


def usable_feedback(raw: pd.DataFrame, splits: Splits) -> tuple[pd.DataFrame, dict[str, int]]:
    """The feedback rows training may use, labels as class ids; and the rows left out.

    A label the data does not have is refused, not dropped: a new class is a new model.
    """
    unknown = sorted(set(raw["label"]) - set(splits.labels))
    if unknown:
        raise UserError(
            f"the feedback has label(s) {', '.join(map(repr, unknown))}, which the data does "
            f"not have ({', '.join(splits.labels)}); a new class is a new model: add it to the "
            "data and train from the base encoder"
        )
    left_out = {"without text": int(raw["text"].isna().sum())}
    rows = raw.dropna(subset=["text"])
    rows = rows[rows["text"].str.strip() != ""].assign(key=lambda f: normalized(f["text"]))
    # The newest label of a text wins: a later correction replaces an earlier answer.
    latest = rows.drop_duplicates("key", keep="last")
    left_out["repeated"] = len(rows) - len(latest)
    known = pd.concat([normalized(frame["text"]) for frame in splits.frames().values()])
    fresh = latest[~latest["key"].isin(set(known))]
    left_out["already in the data"] = len(latest) - len(fresh)
    ids = {name: i for i, name in enumerate(splits.labels)}
    frame = pd.DataFrame({"text": fresh["text"], "label": fresh["label"].map(ids)})
    return frame.reset_index(drop=True), left_out


def split_production(rows: pd.DataFrame, share: float, seed: int) -> tuple[pd.DataFrame, ...]:
    """(rows to train on, the production slice): a seeded `share` held out, at least one row
    when there are two or more and the share is not 0."""
    n_production = round(len(rows) * share)
    if share > 0 and len(rows) >= 2:
        n_production = min(max(1, n_production), len(rows) - 1)
    order = np.random.default_rng(seed).permutation(len(rows))
    shuffled = rows.iloc[order].reset_index(drop=True)
    return shuffled.iloc[n_production:].reset_index(drop=True), shuffled.iloc[
        :n_production
    ].reset_index(drop=True)


def load_feedback(cfg: FeedbackConfig, splits: Splits, seed: int) -> FeedbackRows:
    """The feedback of `cfg.feedback` since `cfg.feedback_since`, ready to train and score on.
    UserError if none of it can be trained on."""
    raw = read_feedback(cfg.feedback, feedback_start(cfg.feedback_since))
    rows, left_out = usable_feedback(raw, splits)
    if rows.empty:
        counts = ", ".join(f"{n} {why}" for why, n in left_out.items() if n) or "none given"
        raise UserError(
            f"no labelled feedback to train on in the prediction log since "
            f"{cfg.feedback_since or 'the start'} ({len(raw)} items: {counts}); feedback needs "
            "its text (send it with POST /feedback, or run the server with "
            "DISTRINEWS_LOG_TEXTS=true)"
        )
    train, production = split_production(rows, cfg.production_share, seed)
    return FeedbackRows(train, production, left_out)


def with_feedback(splits: Splits, rows: FeedbackRows) -> Splits:
    """The splits with the feedback rows added to train (validation and test unchanged)."""
    return replace(splits, train=pd.concat([splits.train, rows.feedback], ignore_index=True))


def as_named(frame: pd.DataFrame, labels: tuple[str, ...]) -> pd.DataFrame:
    """`frame` with class names in `label` (as the production artifact keeps them)."""
    return frame.assign(label=frame["label"].map(dict(enumerate(labels))))
