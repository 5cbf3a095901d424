"""Who visits on which day, and when: a population of returning users.

Users come back over days: each has an affinity (a few heavy users, many occasional ones,
gamma-distributed) that fades with the time since they first came. Every local day brings new
users (a share of the day's active users) and draws which known users return, so that the day's
active users follow the profile's level and weekday; an active user opens one session, heavy
users sometimes more, at times drawn from their device's hour-of-day curve. Each user has one
device (web, iOS or Android); some app users also shop on the website now and then. New users
come mostly through the website (an app is installed by people who already shop): twice the
web's share of users, at most 80 %; returning users are drawn per platform in the mix that
makes up the rest, so that every day's active users follow the profile's platform mix.

Everything here depends on the seed and the day alone: incidents never change who visits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from simulation.apps import PLATFORMS
from simulation.rhythm import CURVES, DayClock, Rhythm, sample_hours

AFFINITY_SHAPE = 0.6  # gamma shape of users' affinity (mean 1): most are occasional
FADING_DAYS = 4.0  # affinity halves-ish over the first days after a first visit ...
FADING_POWER = 0.7  # ... then keeps fading slowly
MAX_DAILY_RETURN = 0.85
EXTRA_SESSIONS = 0.13  # mean extra sessions per active user per day, times its affinity
WEB_TOO = 0.25  # share of app users who also use the website
WEB_TOO_SESSIONS = 0.1  # ... for this share of their sessions
POOL_DAYS = 9.0  # the known users at the start, in days of the level


@dataclass(frozen=True)
class Sessions:
    """One day's session starts, in time order."""

    ts: np.ndarray  # UTC epoch
    user: np.ndarray  # user index
    k: np.ndarray  # the session's number among the user's sessions of the day
    platform: np.ndarray  # index into PLATFORMS of the device used


class Population:
    """The users of one run. `day(i)` adds day i's new users and returns its sessions; call it
    for i = 0, 1, 2 ... in order."""

    def __init__(
        self,
        seed: int,
        users_per_day: float,
        platform_mix: tuple[float, float, float],
        rhythm: Rhythm,
        first: date,
        new_share: float,
    ) -> None:
        self.seed = seed
        self.level = users_per_day
        target = np.asarray(platform_mix, dtype=float) / sum(platform_mix)
        web = min(0.8, 2 * target[0])
        self.new_mix = np.array([web, *(target[1:] / target[1:].sum() * (1 - web))])
        known_mix = np.maximum((target - new_share * self.new_mix) / (1 - new_share), 0.02)
        self.mix = known_mix / known_mix.sum()
        self.rhythm = rhythm
        self.zone = rhythm.zone()
        self.first = first
        self.new_share = new_share
        weekdays = np.asarray(rhythm.weekdays, dtype=float)
        self.weekday_level = weekdays / weekdays.mean()
        rng = np.random.default_rng([seed, 1])
        start = DayClock(first, 0, self.zone).start
        pool = round(users_per_day * POOL_DAYS)
        age_days = np.exp(rng.uniform(np.log(1.0), np.log(400.0), pool))
        self.platform = rng.choice(3, size=pool, p=self.mix).astype(np.int8)
        self.affinity = rng.gamma(AFFINITY_SHAPE, 1 / AFFINITY_SHAPE, pool)
        self.born = start - age_days * 86400.0  # first open of the app / first visit
        self.web_too = (self.platform > 0) & (rng.random(pool) < WEB_TOO)

    def day_start(self, index: int) -> float:
        """The UTC epoch of day `index`'s local midnight."""
        return DayClock(self.first, index, self.zone).start

    @property
    def size(self) -> int:
        return len(self.platform)

    def day(self, index: int) -> Sessions:
        """Day `index`'s new users and sessions."""
        clock = DayClock(self.first, index, self.zone)
        rng = np.random.default_rng([self.seed, 2, index])
        level = self.level * self.weekday_level[clock.weekday]
        known = self.size
        age = np.maximum(clock.start - self.born, 0.0) / 86400.0
        weight = self.affinity * (1.0 + age / FADING_DAYS) ** -FADING_POWER
        returning = np.zeros(known, dtype=bool)
        for p in range(3):  # each platform's returning users keep the known users' mix
            mine = self.platform == p
            target = level * (1 - self.new_share) * self.mix[p]
            returning[mine] = _draw_returning(weight[mine], target, rng)
        fresh = rng.poisson(level * self.new_share)
        self._add_users(fresh, rng)
        users = np.concatenate([np.flatnonzero(returning), np.arange(known, known + fresh)])
        extra = rng.poisson(EXTRA_SESSIONS * np.minimum(self.affinity[users], 8.0))
        counts = 1 + extra
        user = np.repeat(users, counts)
        k = np.concatenate([np.arange(c) for c in counts]) if len(counts) else np.zeros(0, int)
        platform = self.platform[user].astype(np.int8)
        on_web = self.web_too[user] & (rng.random(len(user)) < WEB_TOO_SESSIONS)
        platform[on_web] = 0
        hours = np.zeros(len(user))
        curves = (self.rhythm.web_curve, self.rhythm.app_curve, self.rhythm.app_curve)
        for p in range(3):
            mask = platform == p
            curve = CURVES[curves[p]][1 if clock.weekend else 0]
            hours[mask] = sample_hours(curve, int(mask.sum()), rng)
        ts = clock.epoch(hours)
        # a new user's first visit is their first session
        new = user >= known
        if new.any():
            first = np.full(self.size - known, np.inf)
            np.minimum.at(first, user[new] - known, ts[new])
            self.born[known:] = np.where(np.isfinite(first), first, clock.start)
        order = np.lexsort((k, user, ts))
        return Sessions(ts[order], user[order], k[order], platform[order])

    def _add_users(self, count: int, rng: np.random.Generator) -> None:
        platform = rng.choice(3, size=count, p=self.new_mix).astype(np.int8)
        self.platform = np.concatenate([self.platform, platform])
        self.affinity = np.concatenate(
            [self.affinity, rng.gamma(AFFINITY_SHAPE, 1 / AFFINITY_SHAPE, count)]
        )
        self.born = np.concatenate([self.born, np.zeros(count)])
        self.web_too = np.concatenate(
            [self.web_too, (platform > 0) & (rng.random(count) < WEB_TOO)]
        )


def _draw_returning(weight: np.ndarray, target: float, rng: np.random.Generator) -> np.ndarray:
    """Which known users come back: each with probability min(cap, c * weight), c chosen so that
    `target` of them do on average."""
    if target <= 0 or len(weight) == 0:
        return np.zeros(len(weight), dtype=bool)
    low, high = 0.0, 1.0
    while np.minimum(MAX_DAILY_RETURN, high * weight).sum() < target and high < 1e9:
        high *= 2
    for _ in range(40):
        middle = (low + high) / 2
        if np.minimum(MAX_DAILY_RETURN, middle * weight).sum() < target:
            low = middle
        else:
            high = middle
    return rng.random(len(weight)) < np.minimum(MAX_DAILY_RETURN, high * weight)


__all__ = ["PLATFORMS", "Population", "Sessions"]
