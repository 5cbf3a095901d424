"""When people shop: local days, hour-of-day curves per device kind, day-of-week levels.

Times inside the generator are UTC epoch seconds; the shop's rhythm lives in its own time zone
(daylight saving time included: a curve stays on local time when the clocks change).
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

HOURS = 24

# Shapes of a day, local hours 0..23 (relative weights). Phones: commute, lunch and a long
# evening on the sofa; desktops: office hours and the early evening.
PHONE_WEEKDAY = (
    1.2, 0.7, 0.4, 0.3, 0.3, 0.6, 1.6, 3.2, 4.2, 3.8, 3.6, 3.9,
    5.0, 4.8, 3.9, 3.7, 4.0, 4.6, 5.4, 6.4, 7.4, 7.6, 5.9, 3.0,
)  # fmt: skip
PHONE_WEEKEND = (
    1.9, 1.2, 0.7, 0.4, 0.3, 0.4, 0.7, 1.4, 2.6, 3.9, 4.9, 5.5,
    5.7, 5.5, 5.3, 5.2, 5.4, 5.8, 6.1, 6.6, 7.1, 6.8, 5.1, 3.1,
)  # fmt: skip
DESKTOP_WEEKDAY = (
    0.6, 0.3, 0.2, 0.15, 0.15, 0.3, 0.8, 2.0, 4.0, 5.6, 6.2, 6.4,
    6.0, 6.3, 6.4, 6.1, 5.8, 5.3, 5.0, 5.3, 5.6, 5.0, 3.4, 1.6,
)  # fmt: skip
DESKTOP_WEEKEND = (
    0.9, 0.5, 0.3, 0.2, 0.15, 0.2, 0.4, 0.9, 1.9, 3.2, 4.3, 4.8,
    4.9, 4.7, 4.6, 4.5, 4.6, 4.8, 5.0, 5.4, 5.6, 5.0, 3.6, 1.9,
)  # fmt: skip
# Office buyers (a B2B shop): working hours, next to nothing at night.
OFFICE_WEEKDAY = (
    0.1, 0.05, 0.05, 0.05, 0.05, 0.1, 0.4, 1.6, 4.8, 7.0, 7.4, 7.0,
    5.2, 6.4, 7.2, 6.8, 5.8, 3.6, 1.8, 1.2, 1.0, 0.8, 0.5, 0.2,
)  # fmt: skip
OFFICE_WEEKEND = (
    0.2, 0.1, 0.05, 0.05, 0.05, 0.05, 0.1, 0.3, 0.7, 1.1, 1.4, 1.5,
    1.4, 1.3, 1.3, 1.2, 1.2, 1.1, 1.0, 1.0, 0.9, 0.8, 0.5, 0.3,
)  # fmt: skip

CURVES = {
    "phone": (PHONE_WEEKDAY, PHONE_WEEKEND),
    "desktop": (DESKTOP_WEEKDAY, DESKTOP_WEEKEND),
    "office": (OFFICE_WEEKDAY, OFFICE_WEEKEND),
}


@dataclass(frozen=True)
class Rhythm:
    """A shop's week: its time zone, the relative level of each weekday (Monday first) and the
    curve of a day for web users and for app users (names of `CURVES`)."""

    timezone: str
    weekdays: tuple[float, float, float, float, float, float, float]
    web_curve: str = "desktop"
    app_curve: str = "phone"

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class DayClock:
    """Local day `index` after `first` (a local date) in `zone`: its UTC span and its hours."""

    def __init__(self, first: date, index: int, zone: ZoneInfo) -> None:
        self.date = first + timedelta(days=index)
        self.index = index
        self.weekday = self.date.weekday()
        self.weekend = self.weekday >= 5
        # the UTC epoch of each local hour's start (DST: 23 or 25 real hours in a day)
        self.hour_starts = [
            datetime(self.date.year, self.date.month, self.date.day, h, tzinfo=zone)
            .astimezone(UTC)
            .timestamp()
            for h in range(HOURS)
        ]
        following = self.date + timedelta(days=1)
        self.end = datetime(following.year, following.month, following.day, tzinfo=zone).timestamp()
        self.start = self.hour_starts[0]

    def epoch(self, local_hours: np.ndarray) -> np.ndarray:
        """UTC epochs of local clock times (hours since local midnight, in [0, 24))."""
        hours = np.minimum(local_hours.astype(int), HOURS - 1)
        starts = np.asarray(self.hour_starts)[hours]
        return starts + (local_hours - hours) * 3600.0


def local_start(first: date, zone: ZoneInfo) -> float:
    """The UTC epoch of local midnight at the start of `first`."""
    return datetime(first.year, first.month, first.day, tzinfo=zone).timestamp()


def sample_hours(curve: tuple[float, ...], count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` local clock times (hours in [0, 24)) drawn from a piecewise-linear density
    through the curve's hourly values (no steps at the hour boundaries)."""
    values = np.asarray(curve, dtype=float)
    left = (np.roll(values, 1) + values) / 2  # density at each hour's start
    right = (values + np.roll(values, -1)) / 2  # ... and at its end
    mass = (left + right) / 2
    hours = rng.choice(HOURS, size=count, p=mass / mass.sum())
    a, b = left[hours], right[hours]
    u = rng.random(count)
    # inverse of the CDF of the density a + (b - a) x on [0, 1), normalised
    slope = b - a
    flat = np.abs(slope) < 1e-12
    with np.errstate(invalid="ignore", divide="ignore"):
        root = (-a + np.sqrt(a * a + slope * u * (a + b))) / slope
    offset = np.where(flat, u, root)
    return hours + np.clip(offset, 0.0, 0.999999)


def lognormal_seconds(rng: random.Random, median: float, sigma: float, cap: float) -> float:
    """A positive delay with the given median (seconds), capped."""
    return min(cap, median * rng.lognormvariate(0.0, sigma))


def pick(cumulative: list[float], rng: random.Random) -> int:
    """Index drawn with the weights whose running sums are `cumulative`."""
    return bisect.bisect_right(cumulative, rng.random() * cumulative[-1])
