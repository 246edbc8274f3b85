"""Live evidence: the texts that both the champion and a challenger scored, read from the
prediction log, with the feedback on them. What the monitor reports and promote's gate
weighs (`-P live_window=`).

The server logs both rows of such a request under one prediction id (serving.rollout): the
served one (the champion's, or the challenger's for a canary client) and the other model's,
scored off the response path. A label given to the request judges both, so the two
accuracies are on the same texts: a paired comparison (distrinews.comparison).
"""

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from distrinews.comparison import CONFIDENCE, PairedComparison, wilson, z_score
from distrinews.errors import UserError
from distrinews.runtime.prediction_store import (
    CHALLENGER,
    CHAMPION,
    FEEDBACK,
    PREDICTIONS,
    LogUnavailable,
    open_store,
    shown,
)
from distrinews.runtime.scoring import percentile


def read_pairs(store: str, start: datetime, end: datetime, name: str) -> pd.DataFrame:
    """One row per text of `name` scored by both roles in [start, end): each role's version,
    label, confidence and inference milliseconds, whether the challenger answered (a
    canary), and the feedback label if any (else None)."""
    try:
        engine = open_store(store)
    except LogUnavailable as err:
        raise UserError(f"{err}; pass the server's DISTRINEWS_PREDICTION_LOG") from err
    challenger, champion = PREDICTIONS.alias("challenger"), PREDICTIONS.alias("champion")
    same_text = (champion.c.prediction_id == challenger.c.prediction_id) & (
        champion.c.position == challenger.c.position
    )
    labelled = (FEEDBACK.c.prediction_id == challenger.c.prediction_id) & (
        FEEDBACK.c.position == challenger.c.position
    )
    query = (
        sa.select(
            challenger.c.prediction_id,
            challenger.c.position,
            challenger.c.time,
            *role_columns(champion, "champion"),
            *role_columns(challenger, "challenger"),
            FEEDBACK.c.label.label("truth"),
        )
        .join(champion, same_text & (champion.c.role == CHAMPION))
        .outerjoin(FEEDBACK, labelled)
        .where(
            (challenger.c.role == CHALLENGER)
            & (challenger.c.model_name == name)
            & (challenger.c.time >= start)
            & (challenger.c.time < end)
        )
    )
    try:
        with engine.connect() as connection:
            frame = pd.read_sql(query, connection)
    except sa.exc.SQLAlchemyError as err:
        raise UserError(f"cannot read {shown(store)}: {' '.join(str(err).split())[:300]}") from err
    finally:
        engine.dispose()
    frame["challenger_served"] = frame["challenger_served"].fillna(False).astype(bool)
    return frame


def role_columns(table: sa.Table, role: str) -> list:
    c = table.c
    return [
        c.model_version.label(f"{role}_version"),
        c.label.label(f"{role}_label"),
        c.confidence.label(f"{role}_confidence"),
        c.inference_ms.label(f"{role}_ms"),
        c.served.label(f"{role}_served"),
        c.tokens.label(f"{role}_tokens"),
        c.unknown_share.label(f"{role}_unknown_share"),
    ]


def role_rows(pairs: pd.DataFrame, role: str, name: str) -> pd.DataFrame:
    """One role's rows of `pairs`, with the prediction log's column names (for
    distrinews.monitor.drift.compare)."""
    prefix = f"{role}_"
    columns = {c: c.removeprefix(prefix) for c in pairs.columns if c.startswith(prefix)}
    rows = pairs[list(columns)].rename(columns=columns)
    return rows.rename(columns={"version": "model_version"}).assign(model_name=name)


@dataclass(frozen=True)
class LiveComparison:
    """A challenger version against a champion version on the texts both scored."""

    champion: str
    challenger: str
    texts: int  # scored by both
    canary: int  # of which the challenger answered
    agreed: int  # got the same label from both
    label_shares: dict[str, dict[str, float]]  # role -> label -> share of its predictions
    confidence: dict[str, float]  # role -> mean confidence
    p95_ms: dict[str, float]  # role -> p95 inference time (NaN if not logged)
    labelled: PairedComparison  # challenger (as candidate) against champion, on feedback

    @property
    def agreement(self) -> float:
        return self.agreed / self.texts if self.texts else float("nan")

    def agreement_interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        """Wilson's interval of the agreement."""
        if not self.texts:
            return 0.0, 1.0
        return wilson(self.agreed, self.texts, z_score(confidence))

    def accuracies(self) -> dict[str, float]:
        """Each role's accuracy on the labelled texts both scored."""
        table = self.labelled
        if not table.rows:
            return {}
        return {
            "champion": (table.both + table.losses) / table.rows,
            "challenger": (table.both + table.gains) / table.rows,
        }

    def describe(self, paired: bool = True) -> str:
        """What was scored, the agreement, and the live accuracies (with their paired
        comparison, unless `paired` is False: a caller that says it already)."""
        low, high = self.agreement_interval()
        text = (
            f"version {self.challenger} against champion version {self.champion}: "
            f"{self.texts} texts scored by both ({self.canary} answered by the challenger), "
            f"agreement {self.agreement:.4f} (95% interval [{low:.4f}, {high:.4f}])"
        )
        if not self.labelled.rows:
            return text + "; no feedback on them"
        accuracy = self.accuracies()
        text += (
            f"; live accuracy {accuracy['challenger']:.4f} vs {accuracy['champion']:.4f} on "
            f"{self.labelled.rows} labelled texts"
        )
        return text + (f" ({self.labelled.describe()})" if paired else "")


def summarize(
    rows: pd.DataFrame, champion: str, challenger: str, labels: list[str]
) -> LiveComparison:
    roles = ("champion", "challenger")
    labelled = rows[rows["truth"].notna()]
    right = {role: (labelled[f"{role}_label"] == labelled["truth"]).to_numpy() for role in roles}
    return LiveComparison(
        champion=champion,
        challenger=challenger,
        texts=len(rows),
        canary=int(rows["challenger_served"].sum()),
        agreed=int((rows["champion_label"] == rows["challenger_label"]).sum()),
        label_shares={
            role: {label: float((rows[f"{role}_label"] == label).mean()) for label in labels}
            for role in roles
        },
        confidence={role: float(rows[f"{role}_confidence"].mean()) for role in roles},
        p95_ms={role: p95(rows[f"{role}_ms"]) for role in roles},
        labelled=PairedComparison.of(right["challenger"], right["champion"]),
    )


def p95(milliseconds: pd.Series) -> float:
    """The p95 of the logged times (NaN if none was logged: rows of an older server)."""
    values = milliseconds.dropna().tolist()
    return percentile(values, 95) if values else float("nan")
