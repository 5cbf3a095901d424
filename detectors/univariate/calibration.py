"""Tail probabilities of a statistic against its own past: how rare is this value, here?

`TailCalibrator` keeps the last `memory` values of one statistic (a deque in arrival order and the
same values sorted, so every query is a bisection) and answers with a *surprise* in decades,
s = -log10(p), where p is the probability that a past-like row reaches the value:

- inside the observed range, p is the value's empirical rank with the usual +1 prior,
  (c + 1) / (n + 1) for c past values at least as large: a value seen often is never rare;
- beyond the largest value kept, an exponential tail fitted on the top `top` values continues
  the rank, its extra decades e damped to cap·ln(1 + e/cap) (a new maximum is rare, but a handful
  of past values cannot say how rare: the scale keeps growing, ever more slowly, never saturates);
- beyond the `hi` quantile, an exponential tail fitted between the `lo` and `hi` quantiles (robust
  to the few past outliers the rank counts) may raise the surprise by at most `slack` decades over
  the rank: repeated rare events stay rare, recurring ones do not.

Nothing is parametric about the bulk, so heavy tails, quantised values, ties and mostly-zero
statistics are handled alike; the scale and unit of the statistic do not matter. Before
`min_history` values the surprise is 0 (no evidence yet).
"""

from __future__ import annotations

import bisect
import math
from collections import deque

_LN10 = math.log(10.0)
_LOG10_2 = math.log10(2.0)


class TailCalibrator:
    """Surprise (decades) of a value of one statistic against its last `memory` values."""

    __slots__ = (
        "_lam",
        "cap",
        "hi",
        "history",
        "lo",
        "memory",
        "min_history",
        "slack",
        "sorted",
        "top",
    )

    def __init__(
        self,
        memory: int = 5000,
        min_history: int = 50,
        lo: float = 0.9,
        hi: float = 0.99,
        slack: float = 2.0,
        cap: float = 2.0,
        top: int = 10,
    ) -> None:
        if not (0.0 < lo < hi < 1.0) or memory < min_history or min_history < 3:
            raise ValueError("need 0 < lo < hi < 1 and 3 ≤ min_history ≤ memory")
        self.memory, self.min_history = memory, min_history
        self.lo, self.hi, self.slack, self.cap, self.top = lo, hi, slack, cap, top
        self._lam = math.log((1.0 - lo) / (1.0 - hi))  # quantile gap of a unit exponential tail
        self.history: deque[float] = deque()
        self.sorted: list[float] = []

    def __len__(self) -> int:
        return len(self.sorted)

    def learn(self, value: float) -> None:
        if len(self.history) == self.memory:
            old = self.history.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, old)]
        self.history.append(value)
        bisect.insort(self.sorted, value)

    def _quantile(self, q: float) -> float:
        xs = self.sorted
        pos = q * (len(xs) - 1)
        i = int(pos)
        j = min(i + 1, len(xs) - 1)
        return xs[i] + (xs[j] - xs[i]) * (pos - i)

    def upper(self, value: float) -> float:
        """Surprise of a value this large or larger."""
        xs = self.sorted
        n = len(xs)
        if n < self.min_history:
            return 0.0
        count = n - bisect.bisect_left(xs, value)
        rank = math.log10((n + 1) / (count + 1))
        if count == 0:
            k = min(self.top, n // 3)
            median = xs[n // 2]
            beta = max(sum(xs[n - k :]) / k - xs[n - k], 0.05 * (xs[-1] - median))
            if beta > 1e-12 * (abs(xs[-1]) + abs(median)):
                extra = min((value - xs[-1]) / beta, 1e300) / _LN10
                rank += self.cap * math.log1p(extra / self.cap)
        q_hi = self._quantile(self.hi)
        if value > q_hi:
            beta = (q_hi - self._quantile(self.lo)) / self._lam
            if beta > 1e-12 * abs(q_hi):
                fitted = -math.log10(1.0 - self.hi) + min((value - q_hi) / beta, 1e4) / _LN10
                return min(fitted, rank + self.slack)
        return rank

    def lower(self, value: float) -> float:
        """Surprise of a value this small or smaller."""
        xs = self.sorted
        n = len(xs)
        if n < self.min_history:
            return 0.0
        count = bisect.bisect_right(xs, value)
        rank = math.log10((n + 1) / (count + 1))
        if count == 0:
            k = min(self.top, n // 3)
            median = xs[n // 2]
            beta = max(xs[k - 1] - sum(xs[:k]) / k, 0.05 * (median - xs[0]))
            if beta > 1e-12 * (abs(xs[0]) + abs(median)):
                extra = min((xs[0] - value) / beta, 1e300) / _LN10
                rank += self.cap * math.log1p(extra / self.cap)
        q_lo = self._quantile(1.0 - self.hi)
        if value < q_lo:
            beta = (self._quantile(1.0 - self.lo) - q_lo) / self._lam
            if beta > 1e-12 * abs(q_lo):
                fitted = -math.log10(1.0 - self.hi) + min((q_lo - value) / beta, 1e4) / _LN10
                return min(fitted, rank + self.slack)
        return rank

    def two_sided(self, value: float) -> float:
        """Surprise of a value this far out on either side (the rarer tail, doubled)."""
        return max(self.upper(value), self.lower(value)) - _LOG10_2
