"""Progress of long loops: a tqdm bar on a terminal, plain lines in a log.

tqdm redraws its bar with carriage returns, which fill a log file (`mlflow
run`'s output, CI) with one line per update. Where stderr is not a terminal,
a line is printed every few seconds instead.
"""

import sys
import time
from typing import Any

from tqdm.auto import tqdm

#: Seconds between two progress lines when stderr is not a terminal.
LINE_EVERY_SECONDS = 5.0


class LineProgress:
    """The part of tqdm's interface the loops use, writing a line every `every` seconds."""

    def __init__(self, total: int, desc: str, leave: bool, every: float = LINE_EVERY_SECONDS):
        self.total, self.desc, self.leave, self.every = total, desc, leave, every
        self.n = self.lines = 0
        self.postfix: dict[str, Any] = {}
        self.start = self.last_line = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.perf_counter() - self.last_line >= self.every:
            self._line()

    def set_postfix(self, **postfix: Any) -> None:
        self.postfix = postfix

    def close(self) -> None:
        """A last line, unless a short loop that asked not to leave one."""
        if self.leave or self.lines:
            self._line()

    def _line(self) -> None:
        now = time.perf_counter()
        self.last_line = now
        self.lines += 1
        elapsed = now - self.start
        share = self.n / self.total if self.total else 1.0
        eta = f", eta {elapsed / share - elapsed:.0f} s" if 0 < share < 1 else ""
        extra = "".join(f", {key}={value}" for key, value in self.postfix.items())
        print(
            f"{self.desc}: {self.n}/{self.total} ({share:.0%}), {elapsed:.0f} s{eta}{extra}",
            file=sys.stderr,
            flush=True,
        )


def progress_bar(total: int, desc: str, enabled: bool, leave: bool = True) -> Any:
    """tqdm where stderr is a terminal, LineProgress elsewhere; silent when not `enabled`."""
    if enabled and not sys.stderr.isatty():
        return LineProgress(total, desc, leave)
    return tqdm(total=total, desc=desc, disable=not enabled, leave=leave)
