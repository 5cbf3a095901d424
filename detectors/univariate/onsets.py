"""From per-row surprises to one score per event onset.

Two rules turn a row-level surprise s (decades) into the onset score:

- Refractory: a row speaks only if it is more than `margin` decades more surprising than every
  row that spoke in the last `refractory` rows; otherwise it says 0. One event gives one high row
  (or a few, each ten times rarer than the last and, within `overlap` rows of it, rarer than
  p_before^`power`), not a run; a sub-threshold stir does not mask a real onset right after it,
  which only has to beat it by `margin`. The next `overlap` rows after a row that spoke share
  its values (the pattern novelty's 4-value patterns overlap for 3 rows): what they show is
  largely that row's event seen again, so one of them speaks only if it is also more than
  `power` times as surprising (with `power` = 2: p < p_before², rarer than that event seen twice
  over; `overlap` is at most `refractory`, the rows the rule remembers). Without it, a spike
  entering a pattern speaks up to three times in a row, each a decade higher, and every row is
  one more false alarm where it is no event.
- Discount: a row that speaks is discounted by how often the series has already produced onsets
  of its size: s - log10(1 + c) for c earlier onsets among the last `memory` rows that reached
  s - `margin`. The first of its kind keeps its surprise; the tenth loses a decade (a pattern
  that keeps "surprising" a busy series is its habit, not news). Size is told apart at the
  refractory rule's own resolution: an onset within `margin` decades of an earlier one is not
  rarer than it by that rule's measure (it could not have spoken over it), so it counts as one of
  the same size; without that, a series whose onsets creep up a little each time (a drifting
  series setting ever newer records) would keep every onset undiscounted.
"""

from __future__ import annotations

import bisect
import math
from collections import deque


class Onsets:
    """Refractory and discount, row by row: `update(surprise)` returns the onset surprise ≥ 0."""

    def __init__(
        self,
        refractory: int = 64,
        margin: float = 1.0,
        memory: int = 5000,
        overlap: int = 3,
        power: float = 2.0,
    ) -> None:
        if refractory < 1 or margin < 0.0 or memory < 1 or overlap < 0 or power < 1.0:
            raise ValueError("need refractory ≥ 1, margin ≥ 0, memory ≥ 1, overlap ≥ 0, power ≥ 1")
        self.margin, self.memory = margin, memory
        self.overlap, self.power = overlap, power  # past `refractory` rows: none remembered
        self._spoken: deque[float] = deque(maxlen=refractory)
        self._row = 0
        self._onsets: deque[tuple[int, float]] = deque()
        self._sorted: list[float] = []

    def update(self, surprise: float) -> float:
        bar = max(self._spoken) + self.margin if self._spoken else self.margin
        back = min(self.overlap, len(self._spoken))
        if back:
            bar = max(bar, self.power * max(self._spoken[-k] for k in range(1, back + 1)))
        spoken = surprise if surprise > bar else 0.0
        self._spoken.append(spoken)
        while self._onsets and self._onsets[0][0] <= self._row - self.memory:
            _, old = self._onsets.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._row += 1
        if spoken <= 0.0:
            return 0.0
        earlier = len(self._sorted) - bisect.bisect_left(self._sorted, spoken - self.margin)
        self._onsets.append((self._row, spoken))
        bisect.insort(self._sorted, spoken)
        return max(0.0, spoken - math.log10(1.0 + earlier))
