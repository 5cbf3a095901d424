"""A user's lasting details: ids, devices, locale, whether they have an account, and the state
their sessions leave behind (logged in, the app version they last opened).

Details are drawn from the user's own random stream the first time the user is needed; the
state changes only through the user's own sessions, which every run of a seed generates alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simulation.randomness import stream, uuid

IPHONES = ("iPhone14,5", "iPhone14,7", "iPhone15,2", "iPhone15,4", "iPhone16,1", "iPhone17,3")
IOS_VERSIONS = ("17.6.1", "18.1", "18.2", "18.3.1")
ANDROIDS = (
    ("samsung", "SM-S921B"), ("samsung", "SM-A546B"), ("Google", "Pixel 8"),
    ("Google", "Pixel 7a"), ("Xiaomi", "23090RA98G"), ("OnePlus", "CPH2581"),
)  # fmt: skip
ANDROID_VERSIONS = ("12", "13", "14", "15")
BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
)
SKEWED_CLOCKS = 0.015  # share of devices whose clock is off by minutes to hours


@dataclass(slots=True)
class Device:
    """One device of a user (the website in one browser, or the app on one phone)."""

    platform: str
    anonymous_id: str
    skew: float  # seconds the device clock is ahead (negative: behind)
    details: dict  # platform-specific context (model, OS, user agent, screen)
    logged_in: bool = False
    last_version: str | None = None  # app version at the last open (None: never opened)


@dataclass(slots=True)
class Person:
    """A user of the shop."""

    index: int
    country: str
    locale: str
    intent: float  # how readily they buy (log-normal around 1)
    user_id: str | None  # set once they have an account
    loyalty: str
    signed_up_at: float | None
    devices: dict[str, Device] = field(default_factory=dict)

    @property
    def registered(self) -> bool:
        return self.user_id is not None


def new_person(
    seed: int, index: int, locales: tuple[tuple[str, str, float], ...], born: float, now: float
) -> Person:
    """The details of user `index` (first seen at `born`), drawn from their own stream."""
    rng = stream(seed, "person", index)
    total = sum(w for _, _, w in locales)
    pick = rng.random() * total
    country, locale = locales[-1][0], locales[-1][1]
    for c, loc, w in locales:
        pick -= w
        if pick < 0:
            country, locale = c, loc
            break
    intent = rng.lognormvariate(0.0, 0.55)
    days_known = max(0.0, (now - born) / 86400.0)
    registered = rng.random() < min(0.75, 0.12 + days_known / 120.0)
    user_id = f"cus_{rng.getrandbits(40):010x}" if registered else None
    loyalty = rng.choice(("none", "none", "bronze", "silver", "gold")) if registered else "none"
    return Person(
        index=index,
        country=country,
        locale=locale,
        intent=intent,
        user_id=user_id,
        loyalty=loyalty,
        signed_up_at=born if registered else None,
    )


def device_of(seed: int, person: Person, platform: str) -> Device:
    """The person's device on `platform`, created on first use (a customer's device is logged
    in, mostly)."""
    device = person.devices.get(platform)
    if device is not None:
        return device
    rng = stream(seed, "device", person.index, platform)
    skew = 0.0
    if rng.random() < SKEWED_CLOCKS:
        skew = rng.choice((-1, 1)) * 60.0 * rng.lognormvariate(2.5, 1.2)
    if platform == "ios":
        details = {
            "manufacturer": "Apple",
            "model": rng.choice(IPHONES),
            "os": rng.choice(IOS_VERSIONS),
            "screen": rng.choice(((390, 844), (393, 852), (430, 932))),
        }
    elif platform == "android":
        maker, model = rng.choice(ANDROIDS)
        details = {
            "manufacturer": maker,
            "model": model,
            "os": rng.choice(ANDROID_VERSIONS),
            "screen": rng.choice(((1080, 2340), (1080, 2400), (1440, 3088))),
        }
    else:
        details = {"user_agent": rng.choice(BROWSERS)}
    details["device_id"] = uuid(rng)
    logged_in = person.registered and rng.random() < 0.8
    device = Device(platform, uuid(rng), skew, details, logged_in=logged_in)
    person.devices[platform] = device
    return device
