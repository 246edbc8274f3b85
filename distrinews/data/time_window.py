"""The time window of the prediction log that a step reads: `since` and `until` as the
user writes them (an ISO time, any offset, or a span such as 24h), in UTC.

UTC because the log's times are compared in the store: SQLite keeps them as text, so a
time with another offset would be compared as wall-clock text and match the wrong rows.
"""

import re
from datetime import datetime, timedelta, timezone

from distrinews.errors import UserError

SPAN = re.compile(r"(\d+)([mhd])")
UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def instant(text: str) -> datetime:
    """An ISO date or time as a UTC datetime (no offset given: UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as err:
        raise UserError(f"{text!r} is neither an ISO date/time nor a span like 24h") from err
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def parse_window(since: str, until: str) -> tuple[datetime, datetime]:
    """(start, end) in UTC from `since` (ISO, or a span such as 24h before `until`)."""
    end = instant(until) if until else datetime.now(timezone.utc)
    span = SPAN.fullmatch(since.strip())
    start = end - timedelta(**{UNITS[span[2]]: int(span[1])}) if span else instant(since)
    if start >= end:
        raise UserError(f"since ({start.isoformat()}) is not before until ({end.isoformat()})")
    return start, end
