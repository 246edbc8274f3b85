"""The prediction log's tables, and opening its store: what the server writes and the
monitor step reads. Any SQLAlchemy URL: a SQLite file (the default), PostgreSQL for
several replicas.
"""

import sqlalchemy as sa


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
    sa.Column("position", sa.Integer, nullable=False),  # the text's index in its request
    sa.Column("model_name", sa.String(256)),
    sa.Column("model_version", sa.String(64)),
    sa.Column("label", sa.String(256), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("probabilities", sa.Text, nullable=False),  # JSON: label -> probability
    sa.Column("tokens", sa.Integer, nullable=False),
    sa.Column("unknown_share", sa.Float, nullable=False),
    sa.Column("text", sa.Text),  # only with DISTRINEWS_LOG_TEXTS
)
FEEDBACK = sa.Table(
    "feedback",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("request_id", sa.String(128), nullable=False, index=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("label", sa.String(256), nullable=False),
    sa.Column("text", sa.Text),
)


def open_store(url: str) -> sa.Engine:
    """An engine on `url` with the tables created; LogUnavailable if it cannot be reached."""
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
    """Create what is missing. Replicas starting together race: each sees no table, and
    the loser's CREATE fails on the winner's (PostgreSQL: a unique violation in pg_type).
    The tables then exist, so a second pass, which checks first, has nothing to create."""
    try:
        METADATA.create_all(engine)
    except sa.exc.DatabaseError:
        METADATA.create_all(engine)


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
