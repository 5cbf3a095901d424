"""Named traffic profiles: structurally different shops, each with its incident schedule.

A profile fixes the traffic level (users a day), the platforms' shares, the week (time zone,
weekday levels, hour-of-day curves), the app releases and how fast users adopt them, how often
the apps are offline, users' behaviour, and its incidents with one announced campaign.
`Scenario` turns a profile (optionally at another level or length) into times, incidents,
labels and annotations; `simulation.generator.generate` makes its traffic for a seed.

Times in a schedule are local to the profile's time zone: "day N HH:MM" is N days after the
first local midnight (day 0 is the first day; a negative day is before the start, for releases
that users already run). A release-bound incident starts at its release ("release").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from simulation.apps import OVER_DAYS, OVER_HOURS, Adoption, Release
from simulation.incidents import (
    BotFlood,
    Campaign,
    ConversionFalls,
    DoubleFiring,
    EventsLost,
    Incident,
    LeakedCoupon,
    ReleaseStopsEvent,
    RenamedProperty,
    SparseEventStops,
)
from simulation.journeys import Behaviour
from simulation.rhythm import Rhythm
from simulation.timestamps import iso

PLAN = "shop.yaml"  # in examples/
DEFAULT_BEHAVIOUR = Behaviour()
_WHEN = re.compile(r"^day (-?\d+) (\d{1,2}):(\d{2})$")


class ProfileError(ValueError):
    """A profile name or setting that cannot be used (the message says what to do)."""


@dataclass(frozen=True)
class Planned:
    """An incident of a schedule: its class, name, local start ("day N HH:MM" or "release"),
    duration in hours and the class's own settings."""

    kind: type[Incident]
    name: str
    at: str
    hours: float
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str
    users_per_day: int
    days: float
    first: date  # the first local day
    rhythm: Rhythm
    platform_mix: tuple[float, float, float]  # users on web, iOS, Android
    adoption: Adoption
    releases: tuple[tuple[str, str, str], ...]  # (platform, version, local time)
    incidents: tuple[Planned, ...]
    new_share: float = 0.25  # new users among a day's active users
    offline: float = 0.02  # app sessions without connectivity (flushed hours later)
    killed: float = 0.002  # app sessions killed before their last flush
    behaviour: Behaviour = DEFAULT_BEHAVIOUR

    def plan_path(self) -> Path:
        """examples/shop.yaml of this checkout (else of the working directory)."""
        here = Path(__file__).resolve().parents[1] / "examples" / PLAN
        return here if here.is_file() else Path("examples") / PLAN


def local_time(profile: Profile, text: str) -> float:
    """The UTC epoch of a schedule time ("day N HH:MM", local)."""
    match = _WHEN.match(text.strip())
    if not match:
        raise ProfileError(f"profile {profile.name}: time {text!r} is not 'day N HH:MM'")
    day, hour, minute = (int(g) for g in match.groups())
    moment = profile.first + timedelta(days=day)
    zone = profile.rhythm.zone()
    return datetime(moment.year, moment.month, moment.day, hour, minute, tzinfo=zone).timestamp()


@dataclass(frozen=True)
class Scenario:
    """A profile made concrete: its span, releases, incidents (those starting within the span)."""

    profile: Profile
    users_per_day: float
    days: float
    start: float
    end: float
    releases: dict[str, list[Release]]
    incidents: list[Incident]

    def labels(self) -> list[dict[str, Any]]:
        return [incident.label() for incident in self.incidents]

    def annotations(self) -> list[dict[str, Any]]:
        return [a for i in self.incidents if (a := i.annotation()) is not None]

    def release(self, platform: str, version: str) -> Release:
        for release in self.releases.get(platform, []):
            if release.version == version:
                return release
        raise ProfileError(f"profile {self.profile.name}: no {platform} release {version}")

    def document(self, seed: int) -> dict[str, Any]:
        """What labels.json holds: the run and its ground truth."""
        return {
            "generator": "simulation (trackwatch simulate --profile)",
            "profile": self.profile.name,
            "seed": seed,
            "users_per_day": self.users_per_day,
            "start": iso(self.start),
            "end": iso(self.end),
            "timezone": self.profile.rhythm.timezone,
            "incidents": self.labels(),
            "annotations": self.annotations(),
        }


def scenario(
    profile: Profile,
    *,
    days: float | None = None,
    users_per_day: float | None = None,
    incidents: bool = True,
) -> Scenario:
    """`profile` over `days` (default: its own) at `users_per_day` (default: its own level);
    `incidents=False`: the same traffic without any incident (the clean twin)."""
    days = profile.days if days is None else days
    level = profile.users_per_day if users_per_day is None else users_per_day
    if not 0 < days <= 60:
        raise ProfileError(f"--days must be between 0 and 60 for a profile, got {days:g}")
    if not 10 <= level <= 1_000_000:
        raise ProfileError(f"--users-per-day must be between 10 and 1000000, got {level:g}")
    zone = profile.rhythm.zone()
    first = profile.first
    start = datetime(first.year, first.month, first.day, tzinfo=zone).timestamp()
    end = start + days * 86400.0
    releases: dict[str, list[Release]] = {}
    for platform, version, at in profile.releases:
        when = local_time(profile, at)
        releases.setdefault(platform, []).append(Release(platform, version, when, profile.adoption))
    for listed in releases.values():
        listed.sort(key=lambda r: r.at)
    made: list[Incident] = []
    for planned in profile.incidents if incidents else ():
        made.append(_incident(profile, planned, releases))
    made = [i for i in made if i.start < end]
    return Scenario(profile, level, days, start, end, releases, made)


def _incident(profile: Profile, planned: Planned, releases: dict[str, list[Release]]) -> Incident:
    settings = dict(planned.settings)
    if planned.at == "release":
        platform = {"ios_app": "ios", "android_app": "android"}.get(settings.get("source", ""))
        found = [
            r for r in releases.get(platform or "", []) if r.version == settings.get("app_version")
        ]
        if not found:
            raise ProfileError(
                f"profile {profile.name}: incident {planned.name!r} starts at a release that "
                "the profile does not ship"
            )
        start = found[0].at
    else:
        start = local_time(profile, planned.at)
    return planned.kind(
        name=planned.name, start=start, end=start + planned.hours * 3600, **settings
    )


# ------------------------------------------------------------------------------------ profiles

EU_WEEK = (1.0, 0.97, 0.96, 0.99, 1.03, 0.93, 1.12)  # Sunday-evening shoppers
OFFICE_WEEK = (1.3, 1.3, 1.28, 1.25, 1.1, 0.42, 0.35)  # a B2B shop: quiet weekends


def _releases(ios: list[tuple[str, str]], android: list[tuple[str, str]]) -> tuple:
    return tuple(("ios", v, at) for v, at in ios) + tuple(("android", v, at) for v, at in android)


SHOP_5K = Profile(
    name="shop-5k",
    summary="the reference shop: 5k users/day, web 47 % / iOS 31 % / Android 22 % of users, "
    "phased app releases adopted over days, Berlin",
    users_per_day=5000,
    days=10,
    first=date(2026, 3, 2),
    rhythm=Rhythm("Europe/Berlin", EU_WEEK),
    platform_mix=(0.47, 0.31, 0.22),
    adoption=OVER_DAYS,
    releases=_releases(
        [("6.3.0", "day -31 09:00"), ("6.4.0", "day -13 09:00"), ("6.5.0", "day 2 09:00")],
        [("6.3.1", "day -29 10:00"), ("6.4.0", "day -12 10:00"), ("6.5.0", "day 6 10:00")],
    ),
    incidents=(
        Planned(
            ReleaseStopsEvent,
            "iOS 6.5.0 stops sending Order Placed",
            "release",
            72,
            {"event": "Order Placed", "source": "ios_app", "app_version": "6.5.0"},
        ),
        Planned(
            DoubleFiring,
            "Website fires Order Placed twice",
            "day 3 17:00",
            5,
            {"source": "storefront"},
        ),
        Planned(
            SparseEventStops, "Signed Up stops on iOS", "day 4 09:00", 8, {"source": "ios_app"}
        ),
        Planned(
            ConversionFalls,
            "Web checkout converts a third less",
            "day 5 10:00",
            6,
            {"source": "storefront"},
        ),
        Planned(LeakedCoupon, "Staff coupon leaked", "day 5 20:30", 1.5),
        Planned(
            RenamedProperty,
            "Android 6.5.0 renames order_id",
            "release",
            72,
            {"source": "android_app", "app_version": "6.5.0"},
        ),
        Planned(
            Campaign,
            "Spring newsletter",
            "day 7 18:00",
            3,
            {"platforms": ("web", "ios", "android"), "multiplier": 1.8},
        ),
        Planned(BotFlood, "Scrapers on item pages", "day 8 14:10", 0.5),
        Planned(EventsLost, "Collector edge drops 95 % of requests", "day 9 11:40", 1 / 3),
    ),
)

SMALL_1K = Profile(
    name="small-1k",
    summary="a small shop: 1k users/day, web-heavy (60 % of users), phased releases over "
    "days, Madrid",
    users_per_day=1000,
    days=10,
    first=date(2026, 4, 13),
    rhythm=Rhythm("Europe/Madrid", EU_WEEK),
    platform_mix=(0.6, 0.22, 0.18),
    adoption=OVER_DAYS,
    releases=_releases(
        [("3.8.0", "day -40 10:00"), ("3.9.0", "day -17 10:00"), ("3.10.0", "day 5 11:00")],
        [("3.8.2", "day -35 10:00"), ("3.9.0", "day -16 10:00"), ("3.10.0", "day 2 11:00")],
    ),
    incidents=(
        Planned(
            RenamedProperty,
            "Android 3.10.0 renames order_id",
            "release",
            72,
            {"source": "android_app", "app_version": "3.10.0"},
        ),
        Planned(
            ConversionFalls,
            "Web checkout converts a third less",
            "day 3 10:30",
            6,
            {"source": "storefront"},
        ),
        Planned(
            SparseEventStops,
            "Signed Up stops on the website",
            "day 4 08:00",
            8,
            {"source": "storefront"},
        ),
        Planned(
            ReleaseStopsEvent,
            "iOS 3.10.0 stops sending Order Placed",
            "release",
            72,
            {"event": "Order Placed", "source": "ios_app", "app_version": "3.10.0"},
        ),
        Planned(
            DoubleFiring,
            "Website fires Order Placed twice",
            "day 6 12:00",
            5,
            {"source": "storefront"},
        ),
        Planned(
            Campaign,
            "Easter sale newsletter",
            "day 6 19:00",
            3,
            {"platforms": ("web",), "multiplier": 2.0},
        ),
        Planned(BotFlood, "Scrapers on item pages", "day 7 11:20", 0.5),
        Planned(LeakedCoupon, "Staff coupon leaked", "day 8 13:00", 1.5),
        Planned(EventsLost, "Collector edge drops 95 % of requests", "day 9 18:10", 1 / 3),
    ),
)

FAST_RELEASES = Profile(
    name="fast-releases-5k",
    summary="5k users/day whose apps force updates: a release reaches most users within hours, "
    "London",
    users_per_day=5000,
    days=10,
    first=date(2026, 5, 4),
    rhythm=Rhythm("Europe/London", EU_WEEK),
    platform_mix=(0.4, 0.34, 0.26),
    adoption=OVER_HOURS,
    releases=_releases(
        [
            ("12.1.0", "day -20 08:00"),
            ("12.2.0", "day -6 08:00"),
            ("12.3.0", "day 3 08:00"),
            ("12.4.0", "day 7 08:00"),
        ],
        [
            ("12.1.0", "day -20 08:00"),
            ("12.2.0", "day -6 08:00"),
            ("12.3.0", "day 4 08:00"),
            ("12.4.0", "day 8 08:00"),
        ],
    ),
    incidents=(
        Planned(
            DoubleFiring,
            "Website fires Order Placed twice",
            "day 2 19:00",
            5,
            {"source": "storefront"},
        ),
        Planned(
            ReleaseStopsEvent,
            "iOS 12.3.0 stops sending Order Placed",
            "release",
            12,
            {"event": "Order Placed", "source": "ios_app", "app_version": "12.3.0"},
        ),
        Planned(
            RenamedProperty,
            "Android 12.3.0 renames order_id",
            "release",
            12,
            {"source": "android_app", "app_version": "12.3.0"},
        ),
        Planned(LeakedCoupon, "Staff coupon leaked", "day 5 12:15", 1.5),
        Planned(
            SparseEventStops,
            "Signed Up stops on Android",
            "day 5 16:00",
            8,
            {"source": "android_app"},
        ),
        Planned(
            Campaign,
            "App push: bank holiday deals",
            "day 6 10:00",
            3,
            {"platforms": ("ios", "android"), "multiplier": 2.0},
        ),
        Planned(
            ConversionFalls,
            "iOS checkout converts a third less",
            "day 7 13:00",
            6,
            {"source": "ios_app"},
        ),
        Planned(BotFlood, "Scrapers on item pages", "day 8 21:00", 0.5),
        Planned(EventsLost, "Collector edge drops 95 % of requests", "day 9 09:30", 1 / 3),
    ),
)

MOBILE_OFFLINE = Profile(
    name="mobile-offline-5k",
    summary="5k users/day, 85 % on the apps, 15 % of app sessions offline (their events arrive "
    "hours later in one batch), phased releases, Singapore",
    users_per_day=5000,
    days=10,
    first=date(2026, 6, 1),
    rhythm=Rhythm("Asia/Singapore", (1.0, 1.0, 0.98, 1.0, 1.06, 1.0, 0.96)),
    platform_mix=(0.15, 0.45, 0.40),
    adoption=OVER_DAYS,
    new_share=0.08,  # an app's users come back: installs are ~7 % of a day's app users
    offline=0.15,
    killed=0.005,
    behaviour=Behaviour(currency="SGD", locales=(("SG", "en-SG", 0.8), ("MY", "en-MY", 0.2))),
    releases=_releases(
        [("2.14.0", "day -25 10:00"), ("2.15.0", "day -9 10:00"), ("2.16.0", "day 3 10:00")],
        [("2.14.1", "day -24 10:00"), ("2.15.0", "day -8 10:00"), ("2.16.0", "day 2 10:00")],
    ),
    incidents=(
        Planned(
            RenamedProperty,
            "Android 2.16.0 renames order_id",
            "release",
            72,
            {"source": "android_app", "app_version": "2.16.0"},
        ),
        Planned(
            ReleaseStopsEvent,
            "iOS 2.16.0 stops sending Order Placed",
            "release",
            72,
            {"event": "Order Placed", "source": "ios_app", "app_version": "2.16.0"},
        ),
        Planned(
            ConversionFalls,
            "Android checkout converts a third less",
            "day 4 12:00",
            6,
            {"source": "android_app"},
        ),
        Planned(BotFlood, "Scrapers on item pages", "day 5 15:00", 0.5),
        Planned(
            SparseEventStops, "Signed Up stops on iOS", "day 6 09:30", 8, {"source": "ios_app"}
        ),
        Planned(
            Campaign,
            "App push: mid-year sale",
            "day 6 20:00",
            3,
            {"platforms": ("ios", "android"), "multiplier": 1.8},
        ),
        Planned(
            DoubleFiring,
            "Website fires Order Placed twice",
            "day 7 10:00",
            5,
            {"source": "storefront"},
        ),
        Planned(LeakedCoupon, "Staff coupon leaked", "day 8 19:30", 1.5),
        Planned(EventsLost, "Collector edge drops 95 % of requests", "day 9 13:20", 1 / 3),
    ),
)

WEEKLY_SPARSE = Profile(
    name="office-weekly-2k",
    summary="a B2B shop for outdoor work gear: 2k users/day on office hours, weekends at a "
    "third, sparse events, 14 days across the end of daylight saving time, New York",
    users_per_day=2000,
    days=14,
    first=date(2026, 10, 26),
    rhythm=Rhythm("America/New_York", OFFICE_WEEK, web_curve="office", app_curve="office"),
    platform_mix=(0.62, 0.2, 0.18),
    adoption=OVER_DAYS,
    new_share=0.2,
    behaviour=Behaviour(
        currency="USD",
        locales=(("US", "en-US", 0.85), ("CA", "en-CA", 0.15)),
        add_to_bag=0.13,
        order=0.7,
    ),
    releases=_releases(
        [("5.0.2", "day -30 09:00"), ("5.1.0", "day -11 09:00"), ("5.2.0", "day 8 09:00")],
        [("5.0.3", "day -30 09:00"), ("5.1.0", "day -10 09:00"), ("5.2.0", "day 9 09:00")],
    ),
    incidents=(
        Planned(BotFlood, "Scrapers on item pages", "day 7 10:40", 0.5),
        Planned(
            ReleaseStopsEvent,
            "iOS 5.2.0 stops sending Order Placed",
            "release",
            72,
            {"event": "Order Placed", "source": "ios_app", "app_version": "5.2.0"},
        ),
        Planned(
            SparseEventStops,
            "Signed Up stops on the website",
            "day 8 09:00",
            8,
            {"source": "storefront"},
        ),
        Planned(
            RenamedProperty,
            "Android 5.2.0 renames order_id",
            "release",
            72,
            {"source": "android_app", "app_version": "5.2.0"},
        ),
        Planned(
            ConversionFalls,
            "Web checkout converts a third less",
            "day 9 10:00",
            6,
            {"source": "storefront"},
        ),
        Planned(
            Campaign,
            "Quarterly catalogue mailing",
            "day 10 09:00",
            3,
            {"platforms": ("web",), "multiplier": 2.0},
        ),
        Planned(
            DoubleFiring,
            "Website fires Order Placed twice",
            "day 10 13:00",
            5,
            {"source": "storefront"},
        ),
        Planned(LeakedCoupon, "Staff coupon leaked", "day 11 14:00", 1.5),
        Planned(EventsLost, "Collector edge drops 95 % of requests", "day 12 15:30", 1 / 3),
    ),
)

LARGE_25K = Profile(
    name="large-25k",
    summary="a large shop: 25k users/day, web 41 % / iOS 33 % / Android 26 %, phased releases "
    "over days, 3 % of app sessions offline, Chicago",
    users_per_day=25000,
    days=10,
    first=date(2026, 9, 7),
    rhythm=Rhythm("America/Chicago", EU_WEEK),
    platform_mix=(0.41, 0.33, 0.26),
    adoption=OVER_DAYS,
    offline=0.03,
    behaviour=Behaviour(currency="USD", locales=(("US", "en-US", 0.9), ("MX", "es-MX", 0.1))),
    releases=_releases(
        [("8.0.0", "day -26 09:00"), ("8.1.0", "day -12 09:00"), ("8.2.0", "day 3 09:00")],
        [("8.0.1", "day -26 09:00"), ("8.1.0", "day -11 09:00"), ("8.2.0", "day 2 09:00")],
    ),
    incidents=(
        Planned(
            SparseEventStops,
            "Signed Up stops on Android",
            "day 2 13:00",
            8,
            {"source": "android_app"},
        ),
        Planned(
            RenamedProperty,
            "Android 8.2.0 renames order_id",
            "release",
            72,
            {"source": "android_app", "app_version": "8.2.0"},
        ),
        Planned(
            ReleaseStopsEvent,
            "iOS 8.2.0 stops sending Order Placed",
            "release",
            72,
            {"event": "Order Placed", "source": "ios_app", "app_version": "8.2.0"},
        ),
        Planned(LeakedCoupon, "Staff coupon leaked", "day 4 22:00", 1.5),
        Planned(
            ConversionFalls,
            "iOS checkout converts a third less",
            "day 5 11:00",
            6,
            {"source": "ios_app"},
        ),
        Planned(
            Campaign,
            "Labor Day follow-up newsletter",
            "day 6 17:00",
            3,
            {"platforms": ("web", "ios", "android"), "multiplier": 1.6},
        ),
        Planned(
            DoubleFiring,
            "Website fires Order Placed twice",
            "day 7 09:00",
            5,
            {"source": "storefront"},
        ),
        Planned(BotFlood, "Scrapers on item pages", "day 8 03:00", 0.5),
        Planned(EventsLost, "Collector edge drops 95 % of requests", "day 9 16:00", 1 / 3),
    ),
)

PROFILES: dict[str, Profile] = {
    p.name: p for p in (SMALL_1K, SHOP_5K, FAST_RELEASES, MOBILE_OFFLINE, WEEKLY_SPARSE, LARGE_25K)
}


def get_profile(name: str) -> Profile:
    """The profile called `name` (ProfileError naming the known ones otherwise)."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise ProfileError(f"unknown profile {name!r}; use one of: {known}") from None
