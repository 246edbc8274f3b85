"""SIGTERM as KeyboardInterrupt, so a stopped process ends its MLflow run instead of vanishing;
and what a further signal does while it stops."""

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: What stops a process: Ctrl-C, and an orchestrator's (or torchrun's) SIGTERM.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def raise_on_sigterm() -> None:
    """Turn SIGTERM (torchrun stopping its workers, an orchestrator stopping a task) into
    KeyboardInterrupt.

    Then `finally` blocks run and the MLflow run is marked KILLED instead of
    being left RUNNING.
    """

    def _handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"received signal {signum}")

    signal.signal(signal.SIGTERM, _handler)


@contextmanager
def further_signals(on_signal: Callable[[], None] = lambda: None) -> Iterator[None]:
    """The block that cleans up after a first stop signal: a further Ctrl-C or SIGTERM calls
    `on_signal` (kill what is stopping, at once) instead of raising KeyboardInterrupt in the
    middle of the cleanup, which would leave a step running and runs RUNNING. The previous
    handlers come back after the block. In the main thread only, where signals arrive."""
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}

    def _handler(signum: int, frame: object) -> None:
        on_signal()

    for number in STOP_SIGNALS:
        signal.signal(number, _handler)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
