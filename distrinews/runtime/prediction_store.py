"""The prediction log's tables, and opening its store: what the server writes and the
monitor step reads. Any SQLAlchemy URL: a SQLite file (the default), PostgreSQL for
several replicas.

A prediction is named by the server's own `prediction_id` (one per answered request) and
its text's `position` in it; the client's `request_id` is kept beside it for correlation,
but clients reuse theirs (retries), so nothing is keyed on it. A feedback row carries the
prediction_id since the column exists; rows written before have only the request id, and
`feedback_on_prediction` joins both kinds.
"""

import os
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


class LogUnavailable(Exception):
    """The store could not be opened; the message says which and why."""


#: The model version of a prediction made by a model served from a folder (no registry).
UNREGISTERED = "unregistered"

METADATA = sa.MetaData()
PREDICTIONS = sa.Table(
    "predictions",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("request_id", sa.String(128), nullable=False, index=True),
    # Nullable: a log written by an older server has rows without one.
    sa.Column("prediction_id", sa.String(32), index=True),
    sa.Column("position", sa.Integer, nullable=False),  # the text's index in its request
    sa.Column("model_name", sa.String(256)),
    sa.Column("model_version", sa.String(64)),
    sa.Column("label", sa.String(256), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("probabilities", sa.Text, nullable=False),  # JSON: label -> probability
    sa.Column("tokens", sa.Integer, nullable=False),
    sa.Column("unknown_share", sa.Float, nullable=False),
    sa.Column("text", sa.Text),  # only with DISTRINEWS_LOG_TEXTS
    # Which model made it: the champion (NULL in rows written before roles existed) or a
    # challenger scoring the same request beside it; and whether the client got this
    # answer (NULL: yes, as in every row written before). A request has one served row.
    sa.Column("role", sa.String(16)),
    sa.Column("served", sa.Boolean),
    # Milliseconds of the inference that made it (tokenization included): each role's
    # p95 on the serving CPU, for the monitor and promote's live evidence.
    sa.Column("inference_ms", sa.Float),
)
FEEDBACK = sa.Table(
    "feedback",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("request_id", sa.String(128), nullable=False, index=True),
    sa.Column("prediction_id", sa.String(32)),  # NULL in rows written by older servers
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("label", sa.String(256), nullable=False),
    sa.Column("text", sa.Text),
    # One label per prediction: a repeat replaces it (`upsert_feedback`). NULLs never
    # clash, so the older rows' repeats stay as they were.
    sa.Index("feedback_per_prediction", "prediction_id", "position", unique=True),
)


#: The roles a logged prediction can have.
CHAMPION, CHALLENGER = "champion", "challenger"


def served_rows() -> sa.ColumnElement[bool]:
    """The predictions the clients got: one per (request, position), whatever else scored
    the same request beside it (rows written before `served` existed were all served)."""
    return PREDICTIONS.c.served.is_(None) | PREDICTIONS.c.served.is_(True)


def feedback_on_prediction() -> sa.ColumnElement[bool]:
    """The join of a feedback row to the served prediction it labels: on the prediction id,
    or, for rows written before it existed, on (request id, position) among those older
    predictions (the one condition the monitor and the retrain both read with). A label
    judges every row of its request; this join takes the one the client got, so that a
    request scored twice is counted, and trained on, once."""
    legacy = (
        FEEDBACK.c.prediction_id.is_(None)
        & PREDICTIONS.c.prediction_id.is_(None)
        & (FEEDBACK.c.request_id == PREDICTIONS.c.request_id)
    )
    return (
        (FEEDBACK.c.position == PREDICTIONS.c.position)
        & ((FEEDBACK.c.prediction_id == PREDICTIONS.c.prediction_id) | legacy)
        & served_rows()
    )


#: A step's `store` or `feedback` setting that names the log through the environment.
FROM_ENVIRONMENT = "env"
#: The variable the server reads its log's URL from, and `env` reads.
LOG_VARIABLE = "DISTRINEWS_PREDICTION_LOG"


def log_url(setting: str) -> str:
    """The URL a setting names: `env` is the one in DISTRINEWS_PREDICTION_LOG (where a
    password may be, out of MLflow's params); anything else is the URL itself."""
    if setting.strip() != FROM_ENVIRONMENT:
        return setting
    if not (url := os.environ.get(LOG_VARIABLE, "")):
        raise LogUnavailable(f"the setting is {FROM_ENVIRONMENT!r} but {LOG_VARIABLE} is not set")
    return url


def open_store(url: str) -> sa.Engine:
    """An engine on `url` (or `env`: see `log_url`) with the tables created; LogUnavailable
    if it cannot be reached."""
    url = log_url(url)
    try:
        engine = sa.create_engine(url, pool_pre_ping=True)
        if engine.dialect.name == "sqlite":
            # WAL: a reader (the monitor step) never blocks the writer, and a killed
            # server leaves a store that opens.
            sa.event.listen(engine, "connect", _sqlite_wal)
        _create_tables(engine)
    except Exception as err:  # any driver's error: a bad URL, no server, no permission
        reason = " ".join(str(err).split())  # drivers' messages run over several lines
        raise LogUnavailable(f"prediction log {shown(url)!r} cannot be opened: {reason}") from err
    return engine


def _create_tables(engine: sa.Engine) -> None:
    """Create what is missing: tables, and the columns and indexes that a log written by an
    older server lacks. Replicas starting together race: each sees it missing, and the
    loser's CREATE or ALTER fails on the winner's (PostgreSQL: a unique violation in
    pg_type). It then exists, so a second pass, which checks first, has nothing to do."""
    try:
        METADATA.create_all(engine)
        _upgrade(engine)
    except sa.exc.DatabaseError:
        METADATA.create_all(engine)
        _upgrade(engine)


def _upgrade(engine: sa.Engine) -> None:
    """Add the columns (all nullable) and indexes that the tables of an older log lack:
    create_all leaves a table that exists as it is. ADD COLUMN works on SQLite and
    PostgreSQL alike, and keeps the rows."""
    inspector = sa.inspect(engine)
    quote = engine.dialect.identifier_preparer
    with engine.begin() as connection:
        for table in METADATA.sorted_tables:
            present = {column["name"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    kind = column.type.compile(engine.dialect)
                    connection.exec_driver_sql(
                        f"ALTER TABLE {quote.format_table(table)} "
                        f"ADD COLUMN {quote.format_column(column)} {kind}"
                    )
            for index in table.indexes:
                index.create(connection, checkfirst=True)


def upsert_feedback(connection: sa.Connection, row: dict) -> bool:
    """Write one feedback row, replacing the label its prediction already has; whether it
    replaced one. A row without a prediction id (a prediction logged by an older server)
    replaces the earlier such row of its (request id, position)."""
    same = (FEEDBACK.c.position == row["position"]) & (
        FEEDBACK.c.prediction_id == row["prediction_id"]
        if row["prediction_id"] is not None
        else FEEDBACK.c.prediction_id.is_(None) & (FEEDBACK.c.request_id == row["request_id"])
    )
    replaced = connection.execute(sa.select(FEEDBACK.c.id).where(same).limit(1)).first()
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(connection.dialect.name)
    if row["prediction_id"] is None or insert is None:
        connection.execute(FEEDBACK.delete().where(same))
        connection.execute(FEEDBACK.insert(), [row])
    else:  # one statement: two replicas given the same label at once cannot clash
        statement = insert(FEEDBACK).values(row)
        changed = {
            name: statement.excluded[name] for name in ("time", "request_id", "label", "text")
        }
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=[FEEDBACK.c.prediction_id, FEEDBACK.c.position], set_=changed
            )
        )
    return replaced is not None


def delete_before(engine: sa.Engine, cutoff: datetime, limit: int) -> bool:
    """Delete at most `limit` predictions and `limit` feedback rows older than `cutoff`,
    each table in a short transaction of its own (a writer waits at most that long).
    True while older rows may be left: call again until it says False."""
    more = False
    for table in (PREDICTIONS, FEEDBACK):
        oldest = sa.select(table.c.id).where(table.c.time < cutoff).limit(limit)
        with engine.begin() as connection:
            deleted = connection.execute(table.delete().where(table.c.id.in_(oldest))).rowcount
        more = more or deleted >= limit
    return more


def shown(url: str) -> str:
    """`url` with its password, if any, masked: fit for a log line or an MLflow param."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:  # not a URL at all: nothing to hide
        return url


def _sqlite_wal(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
