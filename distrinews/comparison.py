"""Two models scored on the same rows, compared as a pair: the difference of their
accuracies with a confidence interval, McNemar's test, and what the rows can show.

Paired, because both models answer every row: only the rows where they disagree carry
evidence, and a few hundred rows on which they mostly agree can still separate them,
while two accuracies compared as point estimates cannot (200 rows give each one a
standard error of about 2 points). The interval is Newcombe's hybrid score interval for
paired proportions (method 10 of Newcombe 1998, "Improved confidence intervals for the
difference between binomial proportions based on paired data"), which keeps its
coverage at small counts where the Wald interval does not. Torch-free.
"""

import math
from dataclasses import dataclass

import numpy as np

#: Two-sided confidence of every interval the gate decides on.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedComparison:
    """Counts of a 2x2 table of right/wrong answers of a candidate and a champion."""

    both: int  # rows both got right
    gains: int  # the candidate right, the champion wrong
    losses: int  # the candidate wrong, the champion right
    neither: int  # rows both got wrong

    @classmethod
    def of(cls, candidate_right: np.ndarray, champion_right: np.ndarray) -> "PairedComparison":
        """From each model's per-row correctness on the same rows, in the same order."""
        candidate_right = np.asarray(candidate_right, dtype=bool)
        champion_right = np.asarray(champion_right, dtype=bool)
        if candidate_right.shape != champion_right.shape:
            raise ValueError("both models must be scored on the same rows")
        return cls(
            both=int((candidate_right & champion_right).sum()),
            gains=int((candidate_right & ~champion_right).sum()),
            losses=int((~candidate_right & champion_right).sum()),
            neither=int((~candidate_right & ~champion_right).sum()),
        )

    @property
    def rows(self) -> int:
        return self.both + self.gains + self.losses + self.neither

    @property
    def disagreements(self) -> int:
        return self.gains + self.losses

    @property
    def difference(self) -> float:
        """Candidate minus champion accuracy (a share: 0.01 is one point)."""
        return (self.gains - self.losses) / self.rows if self.rows else 0.0

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        """Newcombe's interval of `difference`."""
        n, z = self.rows, z_score(confidence)
        if n == 0:
            return -1.0, 1.0
        p1, (l1, u1) = (self.both + self.gains) / n, wilson(self.both + self.gains, n, z)
        p2, (l2, u2) = (self.both + self.losses) / n, wilson(self.both + self.losses, n, z)
        phi = self._correlation()
        below = math.sqrt(
            max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
        )
        above = math.sqrt(
            max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
        )
        return max(-1.0, self.difference - below), min(1.0, self.difference + above)

    def _correlation(self) -> float:
        """phi of the 2x2 table as Newcombe corrects it: a positive ad - bc shrunk by n/2
        (not below 0), and 0 where a margin is empty."""
        a, b, c, d = self.both, self.gains, self.losses, self.neither
        margins = (a + b) * (c + d) * (a + c) * (b + d)
        if not margins:
            return 0.0
        association = a * d - b * c
        if association > 0:
            association = max(0.0, association - self.rows / 2)
        return association / math.sqrt(margins)

    def p_value(self) -> float:
        """McNemar's exact test (two-sided): could the disagreements split this way by
        chance if the two models were equally accurate?"""
        from scipy.stats import binomtest

        if not self.disagreements:
            return 1.0
        return float(binomtest(self.gains, self.disagreements, 0.5).pvalue)

    def rows_needed(self, margin: float, confidence: float = CONFIDENCE) -> int | None:
        """About how many rows like these (the same shares of each cell) would make the
        interval clear -`margin`; None if no number up to 10,000 times these would (at
        this difference the candidate is not within the limit)."""
        if not self.rows:
            return None

        def clears(scale: float) -> bool:
            return self.scaled(scale).interval(confidence)[0] >= -margin

        low, high = 1.0, 10_000.0
        if not clears(high):
            return None
        while high / low > 1.01:  # the smallest scale that clears, to about 1%
            middle = (low * high) ** 0.5
            low, high = (low, middle) if clears(middle) else (middle, high)
        return math.ceil(high * self.rows)

    def scaled(self, factor: float) -> "PairedComparison":
        """The same table with `factor` times the rows (each cell rounded)."""
        cells = (self.both, self.gains, self.losses, self.neither)
        return PairedComparison(*(round(factor * cell) for cell in cells))

    def verdict(self, margin: float, confidence: float = CONFIDENCE) -> "Verdict":
        """Whether the candidate is shown to be at most `margin` (a share) worse."""
        low, high = self.interval(confidence)
        if low >= -margin:  # a limit of 100 points passes anything
            return Verdict(True, "shown")
        if high < -margin:
            return Verdict(False, "worse")
        if (needed := self.rows_needed(margin, confidence)) is None:
            return Verdict(False, "no better")
        return Verdict(False, "not enough evidence", needed)

    def describe(self, confidence: float = CONFIDENCE) -> str:
        """'+0.27 points, 95% interval [-0.31, +0.85], 7600 rows, 180 disagree (McNemar
        p=0.36)'."""
        low, high = self.interval(confidence)
        return (
            f"{100 * self.difference:+.2f} points, {confidence:.0%} interval "
            f"[{100 * low:+.2f}, {100 * high:+.2f}] on {self.rows} paired rows, "
            f"{self.disagreements} disagree (McNemar p={self.p_value():.3g})"
        )


@dataclass(frozen=True)
class Verdict:
    """What the comparison shows against a limit: passed, and why in a word."""

    passed: bool
    kind: str  # shown, worse, no better, not enough evidence
    rows_needed: int | None = None

    def explain(self, margin_points: float, setting: str) -> str:
        limit = f"{setting}={margin_points:g}"
        if self.kind == "shown":
            return f"shown to be at most {margin_points:g} points worse ({limit})"
        if self.kind == "worse":
            below = f"-{margin_points:g}"
            return f"worse with confidence: the whole interval is below {below} ({limit})"
        if self.kind == "no better":
            return (
                f"not shown to be within the limit ({limit}), and at this difference no "
                "number of rows like these would show it"
            )
        return (
            f"not enough evidence that it is at most {margin_points:g} points worse "
            f"({limit}): about {self.rows_needed} rows like these would show it"
        )


def z_score(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson's score interval of successes / n."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
