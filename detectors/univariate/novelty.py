"""Pattern novelty: how far the last few values are from anything the series did before.

The last `length` values form a point; the view's statistic is the Euclidean distance from it to
its nearest neighbour among the points of the last `memory` rows (points overlapping the current
one are left out, so a pattern is never compared with a shifted copy of itself). A spike, a drop,
a new level or a new shape is far from everything; a burst, a daily spike or a plateau the series
has shown before is near something, whatever its size. The distance is calibrated against its own
past (`TailCalibrator.upper`), so its unit never matters.

Nearest-neighbour search is a brute-force product over a ring buffer (numpy, one matrix-vector
product per row: |a-b|² = |a|² - 2a·b + |b|²).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from detectors.univariate.calibration import TailCalibrator


class PatternNovelty:
    """View: surprise of the distance from the last `length` values to the nearest past pattern."""

    def __init__(self, length: int = 4, memory: int = 5000, min_patterns: int = 20) -> None:
        if length < 1 or memory < min_patterns or min_patterns < 1:
            raise ValueError("need length ≥ 1 and 1 ≤ min_patterns ≤ memory")
        self.length, self.memory, self.min_patterns = length, memory, min_patterns
        self._points = np.zeros((length, memory))  # one past pattern per column
        self._norms = np.full(memory, np.inf)  # |b|² of each stored pattern (inf: empty slot)
        self._stored = 0
        self._recent: deque[float] = deque(maxlen=length)
        self._pending: deque[np.ndarray] = deque()  # patterns still overlapping the current one
        self.calibrator = TailCalibrator(memory=memory)
        self._distance: float | None = None

    def _point(self, value: float) -> np.ndarray | None:
        if len(self._recent) + 1 < self.length:
            return None
        return np.array(
            [*list(self._recent)[1 - self.length :], value] if self.length > 1 else [value]
        )

    def score_one(self, ts: float, value: float) -> float:
        """Surprise (decades) of the pattern ending with `value`, from the past only."""
        self._distance = None
        point = self._point(value)
        if point is None or self._stored < self.min_patterns:
            return 0.0
        used = min(self._stored, self.memory)
        squared = float((self._norms[:used] - 2.0 * (point @ self._points[:, :used])).min())
        self._distance = math.sqrt(max(squared + float(point @ point), 0.0))
        return self.calibrator.upper(self._distance)

    def learn_one(self, ts: float, value: float) -> None:
        """Remember `value` (call after `score_one` on the same row)."""
        point = self._point(value)
        self._recent.append(value)
        if self._distance is not None:
            self.calibrator.learn(self._distance)
            self._distance = None
        if point is None:
            return
        self._pending.append(point)
        if len(self._pending) > self.length:
            old = self._pending.popleft()
            slot = self._stored % self.memory
            self._points[:, slot] = old
            self._norms[slot] = float(old @ old)
            self._stored += 1
