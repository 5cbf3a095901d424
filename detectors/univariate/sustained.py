"""Sustained surprise: a run of rows each only somewhat rare is an event even if no row is.

The row surprises (decades) of the last `span` rows are averaged and the mean is ranked against
its own past means (`TailCalibrator.upper`), so a stretch where the series keeps doing slightly
unusual things (a new regime of small novelties, such as noise a little wider than before)
reaches the surprise its run deserves, while the mean's own calibration absorbs how much
neighbouring rows' surprises hang together (overlapping patterns share values). The span is
the refractory span of `Onsets`: the stretch one onset answers for. Means of overlapping spans are
about `span` times fewer independent values than rows, so the mean is ranked only once 4 spans of
them are kept (before that, a new high of the mean says little: on a short, quantised noise it
would speak at once).
"""

from __future__ import annotations

from collections import deque

from detectors.univariate.calibration import TailCalibrator


class SustainedSurprise:
    """`update(surprise)`: surprise (decades) of the mean row surprise over the last `span` rows."""

    def __init__(self, span: int = 64, memory: int = 5000) -> None:
        if span < 1:
            raise ValueError("span must be at least 1 row")
        self.span = span
        self._recent: deque[float] = deque(maxlen=span)
        self.calibrator = TailCalibrator(memory=max(memory, 4 * span), min_history=4 * span)

    def update(self, surprise: float) -> float:
        """Add this row's surprise; return the surprise of the run it ends (0 until `span` rows)."""
        self._recent.append(surprise)
        if len(self._recent) < self.span:
            return 0.0
        mean = sum(self._recent) / self.span
        sustained = self.calibrator.upper(mean)
        self.calibrator.learn(mean)
        return sustained
