"""SIGTERM as KeyboardInterrupt, so a stopped process ends its MLflow run instead of vanishing."""

import signal


def raise_on_sigterm() -> None:
    """Turn SIGTERM (torchrun stopping its workers, an orchestrator stopping a task) into
    KeyboardInterrupt.

    Then `finally` blocks run and the MLflow run is marked KILLED instead of
    being left RUNNING.
    """

    def _handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"received signal {signum}")

    signal.signal(signal.SIGTERM, _handler)
