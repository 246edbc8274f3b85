"""What counts as a news text: the one rule the server's request schema, the batch predict
step and the registered model all apply."""

import re

#: Longer texts are refused (the server answers 422; a batch row gets an error).
MAX_TEXT_CHARS = 10_000

#: Some character that is not whitespace, and no NUL anywhere. (The server's pydantic checks
#: it with Rust's regex, whose \s is Unicode White_Space: a few ASCII separators such as
#: \x1c, which Python's \s matches, count as text there. Harmless: they are served.)
TEXT_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"

_TEXT = re.compile(TEXT_PATTERN)


def text_problem(value: object, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    """Why `value` is not a text the model may score (None if it is one)."""
    if not isinstance(value, str):
        return "missing text" if _is_missing(value) else f"not a string ({type(value).__name__})"
    if len(value) > max_chars:
        return f"text over {max_chars} characters ({len(value)})"
    if "\x00" in value:
        return "text contains NUL"
    if not _TEXT.match(value):
        return "empty text"
    return None


def _is_missing(value: object) -> bool:
    """None, NaN or pandas' NA/NaT: a missing cell rather than a value of another type."""
    try:
        return value is None or bool(value != value)  # NaN, NA and NaT differ from themselves
    except (TypeError, ValueError):  # pandas.NA's comparison has no truth value
        return True
