"""App releases and how users come to run them.

A release is offered in stages (Apple's phased release and Google Play's staged rollout offer
it to a growing share of users over days; a forced update offers it to everyone at once and
refuses to start an older version). Stages hold back automatic updates only: a user who
updates by hand can take the release from the store at once. A user installs a release after
a delay (automatic updates: overnight, usually, once offered; manual ones: days, some never)
and runs it from the next time they open the app. Whether and when a user is offered and
installs a release is a function of the user and the release alone (`randomness.unit`), so
every run of one seed agrees on it, with or without incidents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from simulation.randomness import unit

_NORMAL = NormalDist()
PLATFORMS = ("web", "ios", "android")
APP_PLATFORMS = ("ios", "android")


@dataclass(frozen=True)
class Adoption:
    """How fast a release reaches users.

    `stages`: (hours after the release, share of users offered it from then on), increasing;
    `auto_share`: users with automatic updates; `auto_lag_hours` / `manual_lag_hours`: median
    delay between being offered a release and installing it (log-normal, spread `auto_sigma` /
    `manual_sigma`); `forced`: older versions must update when they next open the app."""

    name: str
    stages: tuple[tuple[float, float], ...]
    auto_share: float = 0.6
    auto_lag_hours: float = 14.0
    manual_lag_hours: float = 96.0
    auto_sigma: float = 0.7
    manual_sigma: float = 1.3
    forced: bool = False

    def offered_after(self, u: float, automatic: bool = True) -> float:
        """Seconds after the release at which the user with rank `u` in [0, 1) is offered it
        (inf: never, if the last stage stops short of everyone); at once for manual updates."""
        if not automatic and not self.forced:
            return 0.0
        for hours, share in self.stages:
            if u < share:
                return hours * 3600.0
        return math.inf

    def install_lag(self, automatic: bool, u_lag: float) -> float:
        """Seconds from being offered to installing, for a uniform draw `u_lag`."""
        if self.forced:
            return 0.0
        if automatic:
            median, sigma = self.auto_lag_hours, self.auto_sigma
        else:
            median, sigma = self.manual_lag_hours, self.manual_sigma
        z = _NORMAL.inv_cdf(min(max(u_lag, 1e-9), 1 - 1e-9))
        return median * 3600.0 * math.exp(sigma * z)


# A staged rollout over three days (automatic updates), as the stores offer it.
OVER_DAYS = Adoption("over days", stages=((0, 0.05), (24, 0.2), (48, 0.5), (72, 1.0)))
# Everyone at once with a forced update (in-app "please update" screen): a new version spreads
# as fast as users open the app.
OVER_HOURS = Adoption("over hours", stages=((0, 0.25), (1, 0.6), (3, 1.0)), forced=True)


@dataclass(frozen=True)
class Release:
    platform: str  # ios | android
    version: str
    at: float  # UTC epoch at which the stores start offering it
    adoption: Adoption

    @property
    def build(self) -> str:
        major, minor, patch = (int(x) for x in self.version.split("."))
        return str(major * 10000 + minor * 100 + patch)


def version_at(
    releases: list[Release], device: int, seed: int, first_open: float, now: float
) -> Release | None:
    """The release a device (key `device`) runs when opening the app at `now`, having installed
    the app at `first_open` (None: no release yet). `releases`: one platform's, oldest first;
    the oldest stands for every older version (a device never runs less).

    A fresh install gets the newest release of the day. For each later release, the user acts
    on its offer after their lag and then installs the newest release offered to them by that
    moment (someone updating by hand after the next release came out skips the one before)."""
    available = [r for r in releases if r.at <= now]
    if not available:
        return None
    automatic = unit(seed, device, 0, 2) < available[0].adoption.auto_share
    offered = [
        r.at + r.adoption.offered_after(unit(seed, device, index, 1), automatic)
        for index, r in enumerate(available)
    ]
    best = 0
    for index, release in enumerate(available):
        if release.at <= first_open:
            best = index  # the installed version
            continue
        moment = max(offered[index], first_open)
        moment += release.adoption.install_lag(automatic, unit(seed, device, index, 3))
        if moment <= now:
            newest = max(k for k, at in enumerate(offered) if at <= moment)
            best = max(best, newest)
    return available[best]
