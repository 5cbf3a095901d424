"""Multiplicative hour-of-day × hour-of-week profile, learnt online with exponential forgetting.

The factor at time t is `day[h] · week[s]` (h = hour of day, s = hour of week), linearly
interpolated between neighbouring hour centres so that it is smooth at minute resolution (but not
across midnight, where weekday and weekend may differ). `day` (24 slots) is learnt every day, so it
is usable after one day; `week` (168 slots) is a correction on top of it, learnt once a week per
slot: a young week slot backs off to the hour-of-day profile (it starts from the previous hour's
correction). The split between the two is not identifiable, so when learning one day moves the
shared hour-of-day factor, the other days' learnt corrections at that hour are rescaled to keep
their products: otherwise the weekend's quiet evenings, learnt into `day`, lowered the next
Thursday's evening expectation by 13-27 % (25k users a day) until Thursday's own correction
was learnt again a week later.

Each slot is a ratio estimator, weighted by the interpolation weight (a triangular kernel, so a
linear trend within the day is reproduced exactly): factor = (O + K·prior) / (E + K), where O sums
the observed counts and E what the level and the other factor expected, both forgotten at the
slot's rate per window, and K = PRIOR_EVENTS (for week slots: times the events per independent
unit, the model's clustering factor) + PRIOR_WINDOWS · (expected count of one window): sparse or
bursty series shrink towards the prior instead of chasing a few noisy minutes. (PRIOR_WINDOWS > 0
slows busy slots too: it leaves level shifts to the level, but then a new weekend is learnt over
several weeks; 0 was better on the synthetic tests.)
"""

from __future__ import annotations

import math
from array import array

HOUR = 3600.0
WEEK = 7 * 24 * HOUR
# 1970-01-01 was a Thursday: shift so that slot 0 is Monday 00:00 UTC.
_MONDAY_OFFSET = 3 * 24 * HOUR
PRIOR_EVENTS = 10.0
YOUNG_WEEK_SLOT = 60.0  # windows after which a week slot is taken as learnt
DAY_PRIOR_WINDOWS = 0.0
WEEK_PRIOR_WINDOWS = 0.0
_FIELDS = (
    "day",
    "day_o",
    "day_e",
    "day_n",
    "day_p",
    "week",
    "week_o",
    "week_e",
    "week_n",
    "week_p",
    "week_like",
)


def hour_of_week(ts: float) -> float:
    """Hours since Monday 00:00 UTC, in [0, 168)."""
    return ((ts + _MONDAY_OFFSET) % WEEK) / HOUR


class SeasonalProfile:
    """Learnt multiplicative seasonal factors (bounded: 24 + 168 slots, each field a packed array
    of doubles: 9 kB a profile, where lists of float objects took about 36 kB once learnt)."""

    __slots__ = (*_FIELDS, "day_rate", "week_rate")

    def __init__(self, day_rate: float = 0.004, week_rate: float = 0.004) -> None:
        self.day_rate = day_rate
        self.week_rate = week_rate
        self.day = _doubles(1.0, 24)  # current factors (cache of (O + K·prior) / (E + K))
        self.day_o = _doubles(0.0, 24)
        self.day_e = _doubles(0.0, 24)
        self.day_n = _doubles(0.0, 24)  # windows seen (interpolation weights summed)
        self.day_p = _doubles(1.0, 24)  # prior of each day slot
        self.week = _doubles(1.0, 168)
        self.week_o = _doubles(0.0, 168)
        self.week_e = _doubles(0.0, 168)
        self.week_n = _doubles(0.0, 168)
        self.week_p = _doubles(1.0, 168)  # prior of each week slot
        # 1 when that prior came from a day of the same kind (a flag: one byte a slot)
        self.week_like = array("b", bytes(168))

    @staticmethod
    def position(ts: float) -> tuple[int, int, float]:
        """Neighbouring hour-of-week slots (i0, i1) and the weight of i1 (hour-centre distance)."""
        h = hour_of_week(ts) - 0.5
        base = math.floor(h)
        w = h - base
        i1 = (base + 1) % 168
        if i1 % 24 == 0:  # no interpolation across midnight: weekdays may differ in level
            w = 1.0 if w >= 0.5 else 0.0
        return base % 168, i1, w

    def factor(self, ts: float) -> float:
        i0, i1, w = self.position(ts)
        day, week = self.day, self.week
        return (1.0 - w) * day[i0 % 24] * week[i0] + w * day[i1 % 24] * week[i1]

    def lookup(self, ts: float) -> tuple[float, float, bool]:
        """(factor, week_count, like_seen) at `ts` in one go (the hot path of the volume model).

        week_count: observations of the least-seen hour-of-week slot used; like_seen: whether
        the young ones among them could start from the same hour of a seen day of the same kind
        (weekday or weekend), so that their weekly correction is a good guess.
        """
        i0, i1, w = self.position(ts)
        day, week, wn = self.day, self.week, self.week_n
        like = True
        if w < 1.0 and wn[i0] < YOUNG_WEEK_SLOT:
            v0, like0 = (
                self.week_prior(i0) if wn[i0] == 0.0 else (week[i0], self.week_like[i0] > 0.0)
            )
            like = like and like0
        else:
            v0 = week[i0]
        if w > 0.0 and wn[i1] < YOUNG_WEEK_SLOT:
            v1, like1 = (
                self.week_prior(i1) if wn[i1] == 0.0 else (week[i1], self.week_like[i1] > 0.0)
            )
            like = like and like1
        else:
            v1 = week[i1]
        if w <= 0.0:
            return day[i0 % 24] * v0, wn[i0], like
        if w >= 1.0:
            return day[i1 % 24] * v1, wn[i1], like
        f = (1.0 - w) * day[i0 % 24] * v0 + w * day[i1 % 24] * v1
        return f, min(wn[i0], wn[i1]), like

    def week_prior(self, i: int) -> tuple[float, bool]:
        """Starting value of an unseen hour-of-week slot, and whether it comes from a day of the
        same kind: the same hour on the latest seen day of the same kind (weekday/weekend), else
        of any kind, else the previous hour's correction, else 1."""
        hour, dow = i % 24, i // 24
        weekend = dow >= 5
        other = None
        for back in range(1, 7):
            j = ((dow - back) % 7) * 24 + hour
            if self.week_n[j] > 0.0:
                if (j // 24 >= 5) == weekend:
                    return self.week[j], True
                if other is None:
                    other = self.week[j]
        if other is not None:
            return other, False
        prev = (i - 1) % 168
        return (self.week[prev], False) if self.week_n[prev] > 0.0 else (1.0, False)

    def week_count(self, ts: float) -> float:
        """Observations seen by the least-seen of the two hour-of-week slots used at `ts`."""
        i0, i1, w = self.position(ts)
        if w <= 0.0:
            return self.week_n[i0]
        if w >= 1.0:
            return self.week_n[i1]
        return min(self.week_n[i0], self.week_n[i1])

    def day_count(self, ts: float) -> float:
        """How many observations the hour-of-day slot of `ts` has seen."""
        return self.day_n[int(hour_of_week(ts)) % 24]

    def learn(self, ts: float, observed: float, level: float, cluster: float = 1.0) -> None:
        """Learn one window's count `observed` given the deseasonalised `level`.

        `cluster` (≥ 1) is how many events make one independent unit of evidence (events come
        in visits): the prior of a week correction is worth PRIOR_EVENTS units, so that a young
        week slot is not pulled away from the day profile by a few minutes of one busy
        visitor's events (one once learnt half the true traffic from eight quiet minutes of a
        first Thursday morning). Day slots keep PRIOR_EVENTS events: their prior is a guess."""
        prior = PRIOR_EVENTS * max(cluster, 1.0)
        i0, i1, w = self.position(ts)
        for i, wi in ((i0, 1.0 - w), (i1, w)):
            if wi <= 0.0:
                continue
            d = i % 24
            wy = wi * observed
            keep = (1.0 - self.day_rate) ** wi
            base = level * self.week[i]
            o = self.day_o[d] = keep * self.day_o[d] + wy
            e = self.day_e[d] = keep * self.day_e[d] + wi * base
            k = PRIOR_EVENTS + DAY_PRIOR_WINDOWS * base
            before = self.day[d]
            self.day[d] = (o + k * self.day_p[d]) / (e + k)
            self.day_n[d] += wi
            if self.day_n[d] <= 180.0:  # the week correction starts once the day profile settled
                continue
            self._keep_other_days(i, before / self.day[d])
            if self.week_n[i] == 0.0:
                self.week_p[i], like = self.week_prior(i)
                self.week_like[i] = 1 if like else 0
            keep = (1.0 - self.week_rate) ** wi
            base = level * self.day[d]
            o = self.week_o[i] = keep * self.week_o[i] + wy
            e = self.week_e[i] = keep * self.week_e[i] + wi * base
            k = prior + WEEK_PRIOR_WINDOWS * base
            self.week[i] = (o + k * self.week_p[i]) / (e + k)
            self.week_n[i] += wi

    def _keep_other_days(self, i: int, scale: float) -> None:
        """Rescale the learnt week corrections of the other days at slot `i`'s hour by `scale`.

        Hour-of-day × hour-of-week is not identifiable: when the shared hour-of-day factor moves
        while one day is learnt, the other days' corrections (learnt up to a week ago) would move
        their products with it. Rescaling them keeps every other day's expectation as it was."""
        if scale == 1.0:
            return
        week, wo, wp, wn = self.week, self.week_o, self.week_p, self.week_n
        for j in range(i % 24, 168, 24):
            if j != i and wn[j] > 0.0:
                week[j] *= scale
                wo[j] *= scale
                wp[j] *= scale

    def restart_day(self) -> None:
        """Forget the day sums, keeping the current factors as priors.

        The first day is learnt against a level that is still a running mean (biased while the
        day goes on); restarting once the level knows a whole day removes that bias at once.
        """
        self.day_p = array("d", self.day)
        self.day_o = _doubles(0.0, 24)
        self.day_e = _doubles(0.0, 24)

    def to_state(self) -> dict:
        state: dict = {name: list(getattr(self, name)) for name in _FIELDS}
        state["day_rate"] = self.day_rate
        state["week_rate"] = self.week_rate
        return state

    @classmethod
    def from_state(cls, state: dict) -> SeasonalProfile:
        p = cls(float(state["day_rate"]), float(state["week_rate"]))
        for name in _FIELDS:
            if name == "week_like":
                p.week_like = array("b", (1 if x else 0 for x in state[name]))
            else:
                setattr(p, name, array("d", (float(x) for x in state[name])))
        return p


def _doubles(value: float, size: int) -> array:
    """A packed array of `size` doubles, each `value`."""
    return array("d", [value]) * size
