"""What a predict run did, file by file and in total: what the step counts and its MLflow
run reports."""

from collections import Counter
from dataclasses import dataclass, field

import numpy as np


@dataclass
class FileResult:
    """What became of one input file."""

    input: str
    output: str
    status: str  # "scored", or "kept" (scored by this model version before)
    rows: int = 0
    bad_rows: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)  # bad rows by reason
    renamed: dict[str, str] = field(default_factory=dict)  # input columns kept under new names
    reason: str = ""  # why it was scored, or kept


@dataclass
class BatchTotals:
    """What the run scored, across its files."""

    files: list[FileResult] = field(default_factory=list)
    labels: Counter = field(default_factory=Counter)  # predicted label -> rows
    confidence_sum: float = 0.0

    @property
    def scored(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "scored"]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.scored)

    @property
    def bad_rows(self) -> int:
        return sum(f.bad_rows for f in self.scored)

    @property
    def seconds(self) -> float:
        return sum(f.seconds for f in self.scored)

    def label_shares(self, labels: tuple[str, ...]) -> np.ndarray:
        """The share of each label among the scored texts, in `labels`' order."""
        counts = np.array([self.labels.get(label, 0) for label in labels], dtype=np.float64)
        return counts / max(1.0, counts.sum())
