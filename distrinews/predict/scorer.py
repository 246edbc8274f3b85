"""Scoring chunks of rows on every CPU: in this process with every CPU as ONNX Runtime
threads, or in worker processes that split the CPUs between them. Torch-free.

Either way each chunk is scored by `table_scoring.score_chunk`, so the answers do not depend
on the number of processes.
"""

import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from distrinews.runtime.cpu import available_cpus
from distrinews.runtime.onnx_classifier import OnnxClassifier
from distrinews.runtime.table_scoring import chunks, score_chunk

#: The worker process's classifier, opened once by its initializer.
_worker_classifier: OnnxClassifier | None = None


def _open_in_worker(folder: str, threads: int) -> None:
    global _worker_classifier
    _worker_classifier = OnnxClassifier(folder, threads=threads)


def _score_in_worker(values: list, max_chars: int) -> pd.DataFrame:
    assert _worker_classifier is not None, "the worker's initializer opens the model"
    return score_chunk(_worker_classifier, values, max_chars)


class Scorer:
    """Scores values chunk by chunk with `processes` processes (1: this one)."""

    def __init__(self, folder: Path, processes: int, max_chars: int):
        self.processes = processes or available_cpus()
        self.threads = max(1, available_cpus() // self.processes)
        self.max_chars = max_chars
        # Opened here whatever the processes: a model that cannot load fails here, before
        # any worker starts, rather than in a worker's initializer (a broken pool, no message).
        self.classifier = OnnxClassifier(folder, threads=self.threads)
        self.labels = self.classifier.labels
        self.pool: ProcessPoolExecutor | None = None
        if self.processes > 1:
            # spawn: a worker starts clean (no copy of this process's threads or sessions).
            self.pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_open_in_worker,
                initargs=(str(folder), self.threads),
            )

    def score(self, values: Sequence) -> Iterator[pd.DataFrame]:
        """The answers of each chunk of `values`, in order, as they are ready."""
        parts = [list(values[part]) for part in chunks(len(values))]
        if self.pool is None:
            for part in parts:
                yield score_chunk(self.classifier, part, self.max_chars)
        else:
            yield from self.pool.map(_score_in_worker, parts, [self.max_chars] * len(parts))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
