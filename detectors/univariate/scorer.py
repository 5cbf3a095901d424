"""`UnivariateScorer`: the views, combined, turned into one onset score per event.

Each row: every view scores the value from the past only (`score_one`), then learns it
(`learn_one`). The row's surprise is the larger of the views' surprises, less log10 of the number
of views that spoke (a Bonferroni correction: two looks at the same row are two chances);
`Onsets` keeps the onsets; the score is s / (s + 1) — 0 for nothing, 0.5 for an onset ten times
rarer than the row's chance, 0.9 for 10^-9, never 1. A run of rows each only somewhat rare speaks
too: the row surprise is the larger of its own and the run's (`SustainedSurprise`: the mean row
surprise over the refractory span, ranked against its own past).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol

from detectors.univariate.novelty import PatternNovelty
from detectors.univariate.onsets import Onsets
from detectors.univariate.seasonal import SeasonalContext
from detectors.univariate.sustained import SustainedSurprise


class View(Protocol):
    """A per-row statistic calibrated to a surprise in decades (None: the view has no opinion)."""

    def score_one(self, ts: float, value: float) -> float | None: ...

    def learn_one(self, ts: float, value: float) -> None: ...


def score_from_surprise(surprise: float) -> float:
    """Map a surprise in decades (≥ 0) to [0, 1): s / (s + 1)."""
    return surprise / (surprise + 1.0) if surprise > 0.0 else 0.0


class UnivariateScorer:
    """Streaming scorer: `update(ts, value)` returns the score of `value` in [0, 1).

    `memory` bounds every history (rows): patterns, calibrations, onsets.
    """

    def __init__(self, memory: int = 5000, refractory: int = 64) -> None:
        if memory < 300:
            raise ValueError("memory must be at least 300 rows")
        novelty = PatternNovelty(memory=memory)
        self.views: list[View] = [novelty, SeasonalContext(memory=memory)]
        self.sustained = SustainedSurprise(span=refractory, memory=memory)
        # the rows after one that spoke whose patterns share its values
        self.onsets = Onsets(refractory=refractory, memory=memory, overlap=novelty.length - 1)

    def update(self, ts: float, value: float) -> float:
        """Score `value` against the past, then remember it."""
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"value must be a finite number, got {value!r}")
        ts = float(ts)
        said = [s for s in (view.score_one(ts, value) for view in self.views) if s is not None]
        for view in self.views:
            view.learn_one(ts, value)
        surprise = max(said) - math.log10(len(said)) if said else 0.0
        surprise = max(surprise, self.sustained.update(surprise))
        return score_from_surprise(self.onsets.update(surprise))


def score_series(
    timestamps: Iterable[float], values: Iterable[float], memory: int = 5000
) -> list[float]:
    """Scores of a whole series, each computed from the rows before it only."""
    scorer = UnivariateScorer(memory=memory)
    return [scorer.update(t, v) for t, v in zip(timestamps, values, strict=True)]
