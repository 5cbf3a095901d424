"""Seasonal context: is the value what this time of day (or of the week) usually shows?

Time is cut into phase bins one sampling interval wide (the median of the first positive
intervals), separately for a day and for a week; each bin keeps the values of its last `periods`
periods. A period is *present* while "one period ago" predicts the value much better than "half a
period ago": the moving mean absolute error of the first is below `ratio` times the second's (a
square wave, a commute or a weekend pattern pass; noise, drifts and random walks do not, their
half-period error being as small or smaller). While one is present, the view's statistic is the
residual from the median of the bin's last `periods` values, averaged over the last `smooth` rows,
calibrated on both sides against its own past: a missing daily jump is a long run of large
residuals; its return the next day is not, the median of three days still expecting it.

Time is taken as it comes: repeated or backwards timestamps fall into the bin they name (a
daylight-saving step back revisits an hour), gaps leave bins untouched.
"""

from __future__ import annotations

from collections import deque

from river import stats

from detectors.univariate.calibration import TailCalibrator

DAY = 86_400.0
WEEK = 7 * DAY


class _Period:
    """Phase bins of one period with the errors of the 'one period ago' and 'half ago' guesses."""

    def __init__(self, seconds: float, periods: int, fading: float) -> None:
        self.seconds, self.periods = seconds, periods
        self.bins: dict[int, deque[float]] = {}
        self.err_same = stats.EWMean(fading)
        self.err_half = stats.EWMean(fading)
        self.seen_errors = False

    def bin(self, ts: float, width: float) -> deque[float] | None:
        return self.bins.get(int((ts % self.seconds) // width))

    def ratio(self) -> float:
        half = self.err_half.get()
        return self.err_same.get() / half if self.seen_errors and half > 0.0 else float("inf")

    def learn(self, ts: float, value: float, width: float) -> None:
        same, half = self.bin(ts, width), self.bin(ts - self.seconds / 2, width)
        if same and half:
            self.err_same.update(abs(value - same[-1]))
            self.err_half.update(abs(value - half[-1]))
            self.seen_errors = True
        key = int((ts % self.seconds) // width)
        bucket = self.bins.get(key)
        if bucket is None:
            bucket = self.bins[key] = deque(maxlen=self.periods)
        bucket.append(value)


class SeasonalContext:
    """View: surprise of the smoothed residual from the usual value at this phase (if seasonal)."""

    def __init__(
        self,
        periods: int = 3,
        smooth: int = 16,
        ratio: float = 0.3,
        horizon: float = WEEK,
        memory: int = 5000,
        min_history: int = 288,
    ) -> None:
        if periods < 1 or smooth < 1 or not 0.0 < ratio < 1.0 or horizon <= 0.0:
            raise ValueError("need periods ≥ 1, smooth ≥ 1, 0 < ratio < 1, horizon > 0")
        self.periods, self.smooth, self.ratio, self.horizon = periods, smooth, ratio, horizon
        self.memory, self.min_history = memory, min_history
        self._intervals: list[float] = []
        self._last_ts: float | None = None
        self.width: float | None = None  # phase-bin width: fixed once known
        self._cycles: list[_Period] = []
        self._active: _Period | None = None
        self._residuals: deque[float] = deque(maxlen=smooth)
        self.calibrator = TailCalibrator(memory=memory, min_history=min_history)
        self._mean: float | None = None
        self._scored: tuple[float, tuple[_Period, float] | None] | None = None

    @property
    def active(self) -> bool:
        """Whether a daily or weekly pattern is present (the view scores only then)."""
        return self._active is not None

    def _expected(self, ts: float) -> tuple[_Period, float] | None:
        """The most convincing present period and its usual value at `ts`."""
        if self.width is None:
            return None
        best: tuple[float, _Period] | None = None
        for cycle in self._cycles:
            bucket = cycle.bin(ts, self.width)
            ratio = cycle.ratio()
            full = bucket is not None and len(bucket) == self.periods
            if full and ratio < self.ratio and (best is None or ratio < best[0]):
                best = (ratio, cycle)
        if best is None:
            return None
        ordered = sorted(best[1].bin(ts, self.width) or ())
        return best[1], ordered[len(ordered) // 2]

    def score_one(self, ts: float, value: float) -> float | None:
        """Surprise (decades) from the past only; None while no period is present."""
        self._mean = None
        expected = self._expected(ts)
        self._scored = (ts, expected)
        if expected is None:
            return None
        cycle, usual = expected
        if cycle is not self._active:
            self._residuals.clear()
        residuals = [*self._residuals, value - usual][-self.smooth :]
        if len(residuals) < self.smooth:
            return 0.0
        self._mean = sum(residuals) / self.smooth
        return self.calibrator.two_sided(self._mean)

    def learn_one(self, ts: float, value: float) -> None:
        """Remember `value` (call after `score_one` on the same row)."""
        scored, self._scored = self._scored, None
        expected = scored[1] if scored is not None and scored[0] == ts else self._expected(ts)
        if expected is None:
            self._active = None
            self._residuals.clear()
        else:
            cycle, usual = expected
            if cycle is not self._active:
                self._residuals.clear()
                self._active = cycle
            self._residuals.append(value - usual)
        if self._mean is not None:
            self.calibrator.learn(self._mean)
            self._mean = None
        self._learn_time(ts, value)

    def _learn_time(self, ts: float, value: float) -> None:
        if self._last_ts is not None and ts > self._last_ts and self.width is None:
            self._intervals.append(ts - self._last_ts)
            if len(self._intervals) >= 20:
                self.width = sorted(self._intervals)[len(self._intervals) // 2]
                fading = min(1.0, self.width / self.horizon)
                self._cycles = [
                    _Period(seconds, self.periods, fading)
                    for seconds in (DAY, WEEK)
                    if seconds >= 4 * self.width  # a period needs a few bins to have a shape
                ]
        self._last_ts = ts if self._last_ts is None else max(ts, self._last_ts)
        for cycle in self._cycles:
            cycle.learn(ts, value, self.width or 1.0)
