"""Realistic synthetic Segment traffic for a tracking plan (pure: no Kafka, no HTTP).

`simulate` yields envelopes ``{"source", "received_at", "body"}`` in `received_at` order, as
the collector would write them, for an e-commerce shop with a website, two apps and a backend:

- users: a pool of ~3 x `users_per_day` people (each on one platform) who come back ~1.25
  times a day on average, so about `users_per_day` distinct users are active per day; some have
  an account and log in (``identify`` with traits, then ``userId`` on every call), a few sign up;
- sessions arrive as a Poisson process whose rate follows the shop's local hour of day (evening
  peak, night trough; a later, flatter shape at weekends) and day of week;
- sources web / ios / android / server with platform shares and a Segment-like ``context``
  (library, page for web; app.version, os, device for apps);
- app-version rollouts: each app release reaches ~95 % of the users over `rollout_hours`
  (a user upgrades once the release's adoption passes the user's own threshold);
- behaviour: page/screen views, searches, list views, product views, cart, coupon, the purchase
  funnel of the plan (Product Viewed -> Product Added -> Checkout Started -> Order Completed,
  with realistic drop-offs), ``Order Completed`` and refunds (days later) sent by the server;
- property values drawn to satisfy the plan (enums, patterns, ranges, required fields; unplanned
  properties are left out), then ~`bug_rate` of the track calls get a realistic tracking bug
  (missing required property, wrong type, wrong enum case), and ~`duplicate_rate` of the calls
  are resent by a client retry with the same messageId;
- network: ``received_at`` = event time + a small delay (web ~0.1-0.6 s, apps flush every
  ~30 s, a few offline devices deliver minutes late, server ~0.1 s);
- plans with other events: planned track events the shop model does not know are sent in ~3 %
  of the sessions, and the steps of unknown funnels with 50 % step-to-step conversion (values
  from the property specs; `pattern` constraints of such properties are not generated).

Incidents (`streams.simulator.incidents`) change the traffic inside their window only: arrivals,
each session and each incident draw from random streams of their own, so the same seed with and
without an incident gives the same calls outside its window. The output is deterministic for a
seed and memory stays bounded (sessions are generated in time order, starting an hour before
`start` so that the first minutes are not empty, and their calls wait in a heap only until they
are due), so days of traffic stream through. Envelopes of one session share nested ``context``
objects: treat them as read-only.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.simulator.incidents import Effect, Incident, make_effect
from streams.simulator.sessions import Session, SimEvent, User
from tracking_plan.model import CallType, EventSpec, Plan, PropertySpec, PropType, Status

Envelope = dict[str, Any]

DAY = 86_400.0
UTC_OFFSET_HOURS = 1.0  # the shop's local time (CET) drives the daily rhythm
SESSIONS_PER_USER_DAY = 1.25
POOL_FACTOR = 3  # users in the pool per active user per day
# Relative session rate by local hour (0..23), weekdays and weekends; normalised to mean 1.
HOURS_WEEKDAY = (
    0.35,
    0.2,
    0.12,
    0.08,
    0.07,
    0.1,
    0.25,
    0.5,
    0.75,
    0.9,
    1.0,
    1.05,
    1.15,
    1.1,
    1.0,
    1.0,
    1.05,
    1.15,
    1.35,
    1.6,
    1.8,
    1.75,
    1.3,
    0.7,
)
HOURS_WEEKEND = (
    0.45,
    0.3,
    0.18,
    0.1,
    0.08,
    0.08,
    0.12,
    0.25,
    0.45,
    0.75,
    1.05,
    1.25,
    1.35,
    1.3,
    1.25,
    1.2,
    1.2,
    1.25,
    1.35,
    1.5,
    1.6,
    1.5,
    1.15,
    0.7,
)
DAY_WEIGHTS = (0.96, 0.93, 0.95, 0.97, 1.0, 1.07, 1.12)  # Monday .. Sunday
PLATFORM_SHARES = {"web": 0.5, "ios": 0.28, "android": 0.22}
INITIAL_VERSIONS = {
    "ios": (("5.6.0", 0.93), ("5.5.2", 1.0)),
    "android": (("7.3.0", 0.9), ("7.2.1", 1.0)),
}
# First regular release: (major, minor) after the initial version, day offset, rollout hours.
REGULAR_RELEASES = {"ios": ((5, 7), 3, 36.0), "android": ((7, 4), 5, 48.0)}
RELEASE_EVERY_DAYS = 14

# Behaviour (probabilities per session / per product view).
P_LOGGED_IN = 0.6
P_LOGIN = 0.25
P_SIGN_UP = 0.03
P_ADD = 0.025
P_REMOVE = 0.06
P_CART_VIEW = 0.6
P_CHECKOUT = 0.5
P_COUPON = 0.15
P_PAYMENT = 0.75
P_ORDER = 0.55
P_REFUND = 0.03
WARM_UP = 3600.0  # seconds of sessions simulated before `start` (their calls are not yielded)
LATE_SHARE = 0.003  # app events delivered minutes late (offline devices)

CATEGORIES = ("shoes", "jackets", "shirts", "trousers", "bags", "hats", "socks", "dresses")
WORDS = ("running", "rain", "linen", "wool", "leather", "summer", "kids", "black", "red", "slim")
COUNTRIES = (
    ("DE", "de-DE", 0.45),
    ("FR", "fr-FR", 0.2),
    ("NL", "nl-NL", 0.1),
    ("AT", "de-AT", 0.1),
    ("ES", "es-ES", 0.1),
    ("IT", "it-IT", 0.05),
)
REFERRERS = (
    "",
    "https://www.google.com/",
    "https://www.google.com/",
    "https://www.instagram.com/",
    "https://www.bing.com/",
    "https://newsletter.acme-shop.example/",
)
PAYMENT = {
    "web": ("card", "paypal", "invoice"),
    "ios": ("apple_pay", "card", "paypal"),
    "android": ("google_pay", "card", "paypal"),
}
IOS_DEVICES = (
    ("iPhone15,2", "17.6"),
    ("iPhone16,1", "18.1"),
    ("iPhone14,5", "17.5"),
    ("iPhone13,2", "16.7"),
)
ANDROID_DEVICES = (
    ("samsung", "SM-S918B", "14"),
    ("Google", "Pixel 8", "15"),
    ("Xiaomi", "23049PCD8G", "13"),
    ("samsung", "SM-A546B", "14"),
)
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.0 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
)
LIBRARIES = {
    "web": ("analytics.js", "next-1.72.0"),
    "ios": ("analytics-ios", "4.1.8"),
    "android": ("analytics-android", "4.11.3"),
    "server": ("analytics-python", "2.3.3"),
}
SITE = "https://shop.acme.example"
# Track events the shop model below sends by itself (others in a plan get generic traffic).
KNOWN_EVENTS = frozenset(
    (
        "Products Searched", "Product List Viewed", "Product Viewed", "Product Added",
        "Product Removed", "Cart Viewed", "Checkout Started", "Payment Info Entered",
        "Order Completed", "Order Refunded", "Coupon Applied", "Signed Up",
    )
)  # fmt: skip


@dataclass(frozen=True)
class Release:
    """An app release: adoption among the platform's users grows from `at` (epoch seconds)
    towards `max_share`, reaching 95 % of it after `rollout_hours`."""

    platform: str
    version: str
    at: float
    rollout_hours: float = 36.0
    max_share: float = 0.95

    def share(self, t: float) -> float:
        if t < self.at:
            return 0.0
        return self.max_share * (1.0 - math.exp(-3.0 * (t - self.at) / (self.rollout_hours * 3600)))


def default_releases(start: datetime, days: float) -> list[Release]:
    """The regular app releases: one per app every two weeks, staggered between the apps."""
    midnight = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = start.timestamp() + days * DAY
    out = []
    for platform, ((major, minor), offset, hours) in REGULAR_RELEASES.items():
        k = 0
        while (at := (midnight + timedelta(days=offset + k * RELEASE_EVERY_DAYS, hours=9))) and (
            at.timestamp() < end
        ):
            out.append(Release(platform, f"{major}.{minor + k}.0", at.timestamp(), hours))
            k += 1
    return out


@dataclass(frozen=True)
class _Shape:
    """What the plan allows for one event key, precomputed."""

    allowed: frozenset[str] | None  # None: unplanned properties allowed
    required: tuple[PropertySpec, ...]
    required_names: frozenset[str]
    enums: tuple[tuple[str, tuple[Any, ...]], ...]
    sources: frozenset[str]
    specs: dict[str, PropertySpec]


def simulate(
    plan: Plan,
    start: datetime,
    days: float,
    users_per_day: int,
    seed: int,
    incidents: Sequence[Incident] = (),
    *,
    bug_rate: float = 0.005,
    duplicate_rate: float = 0.002,
    releases: Sequence[Release] | None = None,
) -> Iterator[Envelope]:
    """Yield the envelopes of `days` of traffic from `start` (aware datetime), in received_at
    order. `releases` defaults to `default_releases`; incidents bound to an app version add
    their release. Same arguments -> same output."""
    if start.tzinfo is None:
        raise ValueError("start must be time-zone aware (UTC)")
    if not (days > 0 and math.isfinite(days)):
        raise ValueError("days must be a positive number")
    if users_per_day < 1:
        raise ValueError("users_per_day must be at least 1")
    if not (0 <= bug_rate <= 1 and 0 <= duplicate_rate <= 1):
        raise ValueError("bug_rate and duplicate_rate must be between 0 and 1")
    sim = _Simulation(
        plan,
        start,
        days,
        users_per_day,
        seed,
        list(incidents),
        bug_rate,
        duplicate_rate,
        default_releases(start, days) if releases is None else list(releases),
    )
    return sim.run()


def _profile_table() -> list[list[float]]:
    """Rate factor by [weekday][hour], mean 1 over a week."""
    table = []
    for day, weight in enumerate(DAY_WEIGHTS):
        hours = HOURS_WEEKEND if day >= 5 else HOURS_WEEKDAY
        mean = sum(hours) / 24
        table.append([weight * h / mean for h in hours])
    week_mean = sum(map(sum, table)) / (7 * 24)
    return [[v / week_mean for v in row] for row in table]


class _Simulation:
    def __init__(
        self,
        plan: Plan,
        start: datetime,
        days: float,
        users_per_day: int,
        seed: int,
        incidents: list[Incident],
        bug_rate: float,
        duplicate_rate: float,
        releases: list[Release],
    ) -> None:
        self.plan = plan
        self.seed = seed
        # Independent random streams, so that an incident changes nothing outside its window:
        # arrivals and users come from `arrivals`, each campaign has its own stream, and each
        # session draws from its own `rng` (seeded from its arrival stream).
        self.arrivals = random.Random(seed)
        self.rng = random.Random(seed)  # the random stream of the session being generated
        self.start = start.timestamp()
        self.end = self.start + days * DAY
        self.bug_rate = bug_rate
        self.duplicate_rate = duplicate_rate
        self.sources: dict[str, str] = {}
        for name, spec in plan.sources.items():
            self.sources.setdefault(spec.platform or name, name)
        self.server = self.sources.get("server")
        shares = {p: s for p, s in PLATFORM_SHARES.items() if p in self.sources}
        if not shares:
            raise ValueError("the plan has no web, ios or android source to simulate")
        total = sum(shares.values())
        self.platforms = list(shares)
        self.platform_cum = list(_cumulative([shares[p] / total for p in self.platforms]))
        self.shares = {p: shares[p] / total for p in self.platforms}
        self.pool_size = max(1, POOL_FACTOR * users_per_day)
        self.pool: dict[int, User] = {}
        self.base_rate = users_per_day * SESSIONS_PER_USER_DAY / DAY  # sessions per second
        self.profile = _profile_table()
        self.effects: list[Effect] = []
        self.campaigns: list[Any] = []
        for incident in incidents:
            effect = make_effect(incident, _platform_of(plan, incident))
            (self.campaigns if incident.kind == "campaign" else self.effects).append(effect)
        self.rate_max = self.base_rate * max(map(max, self.profile)) * 1.05
        self.releases = _by_platform(releases, shipped_releases(plan, incidents))
        self.shapes = {key: _shape(spec) for key, spec in plan.events.items()}
        self.seq = 0
        self.heap: list[tuple[float, int, str, dict[str, Any]]] = []
        self._iso_cache: dict[int, str] = {}
        rng = random.Random(f"catalogue {seed}")
        self.products = [
            (
                f"p_{rng.getrandbits(32):08x}"[:10],
                rng.choice(CATEGORIES),
                round(math.exp(rng.gauss(3.4, 0.7)), 2) + 0.99,
            )
            for _ in range(1500)
        ]
        self.product_cum = list(_cumulative([1.0 / (i + 1) ** 1.05 for i in range(1500)]))
        self.bots: dict[str, list[User]] = {}
        library = LIBRARIES["server"]
        self.server_library = {"name": library[0], "version": library[1]}
        self.views = {
            (spec.call.value, spec.name)
            for spec in plan.events.values()
            if spec.call.value != "track"
        }
        self.view_keys = {
            (spec.call.value, spec.name): key
            for key, spec in plan.events.items()
            if spec.call is not CallType.TRACK and spec.name
        }
        # Planned events and funnels the shop model does not know: sent now and then.
        self.other_events = [
            spec
            for key, spec in plan.events.items()
            if spec.call is CallType.TRACK
            and key not in KNOWN_EVENTS
            and spec.status is not Status.DEPRECATED
        ]
        self.other_funnels = [
            f.steps
            for f in plan.funnels
            if not set(f.steps) <= KNOWN_EVENTS and all(step in plan.events for step in f.steps)
        ]

    # -- the main loop -------------------------------------------------------------------------

    def run(self) -> Iterator[Envelope]:
        heap, end = self.heap, self.end
        pop = heapq.heappop
        # sessions start an hour early so that the first minutes already have visits going on
        begin = self.start - WARM_UP
        streams = [self._arrivals(self.arrivals, begin, end, 1.0, None)]
        for index, campaign in enumerate(self.campaigns):
            rng = random.Random(self.seed * 1_000_003 + index + 1)
            # the campaign multiplies the sessions of its platforms by `factor`
            share = sum(self.shares.get(p, 0.0) for p in self._campaign_platforms(campaign))
            extra = (campaign.params["factor"] - 1.0) * share
            stop = min(end, campaign.end)
            streams.append(self._arrivals(rng, campaign.start, stop, extra, campaign))
        first, iso, session = self.start, self._iso, self._session
        for t, rng, campaign in heapq.merge(*streams, key=lambda arrival: arrival[0]):
            while heap and heap[0][0] <= t:
                received, _, source, body = pop(heap)
                if received >= first:
                    yield {"source": source, "received_at": iso(received), "body": body}
            session(t, rng, campaign)
        while heap:
            item = pop(heap)
            if self.start <= item[0] < end:
                yield self._envelope(item)

    def _arrivals(
        self, rng: random.Random, begin: float, stop: float, factor: float, campaign: Any
    ) -> Iterator[tuple[float, random.Random, Any]]:
        """Session start times: a Poisson process of rate `factor` x the seasonal rate
        (thinning of a homogeneous process)."""
        rate_max = self.rate_max * factor
        t = begin
        while True:
            t += rng.expovariate(rate_max)
            if t >= stop:
                return
            if rng.random() * rate_max < self._rate(t) * factor:
                yield t, rng, campaign

    def _campaign_platforms(self, campaign: Any) -> list[str]:
        names = [s for s in campaign.params["sources"] if s in self.plan.sources]
        platforms = [self.plan.sources[s].platform or s for s in names]
        return [p for p in platforms if p in self.shares] or self.platforms

    def _rate(self, t: float) -> float:
        local = t + UTC_OFFSET_HOURS * 3600.0
        day = int(local // DAY)
        hour = (local - day * DAY) / 3600.0
        h = int(hour)
        row = self.profile[(day + 3) % 7]  # 1970-01-01 was a Thursday
        nxt = row[h + 1] if h < 23 else self.profile[(day + 4) % 7][0]
        return self.base_rate * (row[h] + (nxt - row[h]) * (hour - h))

    def _envelope(self, item: tuple[float, int, str, dict[str, Any]]) -> Envelope:
        return {"source": item[2], "received_at": self._iso(item[0]), "body": item[3]}

    def _iso(self, ts: float) -> str:
        """ISO-8601 UTC with milliseconds (truncated), e.g. ``2026-11-02T10:00:00.123Z``."""
        ms = int(ts * 1000.0)
        second = ms // 1000
        prefix = self._iso_cache.get(second)
        if prefix is None:
            if len(self._iso_cache) > 200_000:
                self._iso_cache.clear()
            moment = datetime.fromtimestamp(second, UTC)
            prefix = self._iso_cache[second] = moment.strftime("%Y-%m-%dT%H:%M:%S.")
        return f"{prefix}{ms - second * 1000:03d}Z"

    # -- people --------------------------------------------------------------------------------

    @staticmethod
    def _uuid(rng: random.Random) -> str:
        h = f"{rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"

    def _new_user(self, platform: str, t: float, rng: random.Random) -> User:
        user = User(self._uuid(rng), platform, rng.random())
        user.country, user.locale, _ = rng.choices(COUNTRIES, [c[2] for c in COUNTRIES])[0]
        if rng.random() < 0.45:
            user.registered = True
            user.user_id = f"u_{rng.getrandbits(40):010x}"
            user.created = self._iso(t - rng.uniform(1, 900) * DAY)
            user.tier = rng.choices(("free", "plus", "pro"), (0.8, 0.15, 0.05))[0]
        if platform == "web":
            user.device = (rng.choice(USER_AGENTS),)
        elif platform == "ios":
            user.device = rng.choice(IOS_DEVICES)
        else:
            user.device = rng.choice(ANDROID_DEVICES)
        return user

    def bot_user(self, platform: str, rng: random.Random) -> User:
        """One of a few crawler identities (for spikes)."""
        bots = self.bots.setdefault(platform, [])
        if len(bots) < 25:
            bot = User(self._uuid(rng), platform, 2.0)
            devices = {"ios": IOS_DEVICES[0], "android": ANDROID_DEVICES[0]}
            bot.device = devices.get(platform, (USER_AGENTS[0],))
            bots.append(bot)
        return bots[rng.randrange(len(bots))]

    def _version(self, platform: str, u: float, t: float) -> str | None:
        for release in self.releases.get(platform, ()):
            if t >= release.at and u < release.share(t):
                return release.version
        for version, cut in INITIAL_VERSIONS.get(platform, ()):
            if u < cut:
                return version
        return None

    # -- one session ---------------------------------------------------------------------------

    def _session(self, t0: float, arrivals: random.Random, campaign: Any) -> None:
        if campaign is None:
            index = arrivals.randrange(self.pool_size)
            user = self.pool.get(index)
            if user is None:
                platform = self.platforms[bisect.bisect(self.platform_cum, arrivals.random())]
                user = self.pool[index] = self._new_user(platform, t0, arrivals)
        else:  # campaign visitors are new people on the campaign's sources
            platforms = self._campaign_platforms(campaign)
            weights = [self.shares[p] for p in platforms]
            user = self._new_user(arrivals.choices(platforms, weights)[0], t0, arrivals)
        session_seed = arrivals.getrandbits(64)
        self.rng = random.Random(session_seed)
        platform = user.platform
        s = Session(user, platform, self.sources[platform], self._version(platform, user.u, t0))
        if campaign is not None:
            s.campaign = campaign.incident.name or "campaign"
        events = self._behaviour(s, t0)
        if self.other_events or self.other_funnels:
            self._other_events(s, events)
        incident_rng = rng = self.rng
        effects = self.effects
        if effects:
            last = max(e.t for e in events)
            live = [e for e in effects if e.start <= last and e.end > t0 and e.hits(s)]
            if live:
                incident_rng = random.Random(session_seed ^ 0x5EED_1C1D)
                events = self._apply(s, events, live, incident_rng)
        for event in events:
            self._emit(s, event, incident_rng if event.extra else rng)

    def _apply(
        self, s: Session, events: list[SimEvent], live: list[Effect], rng: random.Random
    ) -> list[SimEvent]:
        """Let each live incident change the events in its window. A dropped event stays in the
        list, marked, and extra events are marked too, so that emitting them draws the same
        random numbers for the untouched events as without the incident."""
        for effect in live:
            out: list[SimEvent] = []
            for event in events:
                if event.dropped or not (effect.start <= event.t < effect.end):
                    out.append(event)
                    continue
                changed = effect.apply(self, s, event, rng)
                if not any(e is event for e in changed):
                    event.dropped = True
                    out.append(event)
                for other in changed:
                    if other is not event:
                        other.extra = True
                    out.append(other)
            events = out
        return events

    def _behaviour(self, s: Session, t: float) -> list[SimEvent]:
        """The calls of one visit, in time order (server calls interleaved)."""
        rng = self.rng
        user = s.user
        web = s.platform == "web"
        call = "page" if web else "screen"
        views = self.views
        src = s.source
        out: list[SimEvent] = []
        page: dict[str, str] | None = None
        referrer = rng.choice(REFERRERS) if web else ""

        def view(name: str, path: str, title: str, props: dict[str, Any]) -> None:
            nonlocal page, referrer
            if web:
                page = {"path": path, "referrer": referrer, "title": title, "url": SITE + path}
                referrer = SITE + path
            if (call, name) not in views:
                return  # a page/screen the plan does not list: its tracker is not tagged
            event = SimEvent(t, src, call, name, props, page)
            event.user_id = user.user_id if s.logged_in else None
            out.append(event)

        def track(name: str, props: dict[str, Any]) -> None:
            event = SimEvent(t, src, "track", name, props, page)
            event.user_id = user.user_id if s.logged_in else None
            out.append(event)

        def server(at: float, name: str, props: dict[str, Any]) -> None:
            event = SimEvent(at, self.server or src, "track", name, props)
            event.user_id = user.user_id  # the backend knows the account (None for guests)
            out.append(event)

        s.logged_in = user.registered and rng.random() < P_LOGGED_IN
        product = self._product()
        if web and rng.random() < 0.35:  # landing on a product page from search or social
            view("Product", f"/p/{product[0]}", "Product", {"product_id": product[0]})
            track("Product Viewed", self._viewed(product))
        else:
            view("Home", "/", "Acme Shop", {})
        if user.registered and not s.logged_in and rng.random() < P_LOGIN:
            t += rng.uniform(5, 40)
            self._identify(s, t, out, page)
        elif not user.registered and rng.random() < P_SIGN_UP:
            t += rng.uniform(20, 90)
            user.registered = True
            user.user_id = f"u_{rng.getrandbits(40):010x}"
            user.created = self._iso(t)
            method = rng.choices(("email", "google", "apple"), (0.6, 0.3, 0.1))[0]
            track("Signed Up", {"method": method, "signed_up_at": user.created})
            self._identify(s, t + 0.3, out, page)
        for _ in range(min(25, 1 + int(rng.expovariate(0.3)))):
            t += 3.0 + rng.expovariate(1 / 20)
            r = rng.random()
            category = rng.choice(CATEGORIES)
            if r < 0.25:
                query = f"{rng.choice(WORDS)} {category}"
                view("Search", f"/search?q={query.replace(' ', '+')}", "Search", {})
                track("Products Searched", {"query": query, "results_count": rng.randrange(0, 240)})
                t += rng.uniform(0.5, 2)
                track("Product List Viewed", {"list_id": "search_results", "category": category})
            elif r < 0.6:
                view("Category", f"/c/{category}", category.title(), {})
                track("Product List Viewed", {"list_id": f"cat_{category}", "category": category})
            for _ in range(1 + int(rng.expovariate(1.0))):
                t += 2.0 + rng.expovariate(1 / 15)
                product = self._product()
                view("Product", f"/p/{product[0]}", "Product", {"product_id": product[0]})
                t += rng.uniform(0.1, 1.5)
                track("Product Viewed", self._viewed(product))
                if rng.random() < P_ADD:
                    t += rng.uniform(3, 30)
                    quantity = 1 if rng.random() < 0.85 else rng.randint(2, 4)
                    if not s.cart_id:
                        s.cart_id = f"cart_{rng.getrandbits(48):012x}"
                    s.cart.append((product, quantity))
                    props = {
                        "cart_id": s.cart_id,
                        "product_id": product[0],
                        "price": product[2],
                        "quantity": quantity,
                        "currency": "EUR",
                    }
                    track("Product Added", props)
                    if rng.random() < P_REMOVE:
                        t += rng.uniform(5, 60)
                        (gone, qty) = s.cart.pop()
                        props = {"cart_id": s.cart_id, "product_id": gone[0], "quantity": qty}
                        track("Product Removed", props)
        if not s.cart:
            return out
        if rng.random() < P_CART_VIEW:
            t += rng.uniform(3, 30)
            view("Cart", "/cart", "Cart", {})
            items = [{"product_id": p[0], "quantity": q} for p, q in s.cart]
            track("Cart Viewed", {"cart_id": s.cart_id, "products": items})
        if rng.random() >= P_CHECKOUT:
            return out
        t += rng.uniform(5, 40)
        if user.registered and not s.logged_in and rng.random() < 0.6:
            self._identify(s, t, out, page)
            t += rng.uniform(5, 20)
        view("Checkout", "/checkout", "Checkout", {})
        if rng.random() < P_COUPON:
            s.coupon = f"{rng.choice(('WELCOME', 'SAVE', 'BF'))}{rng.choice((10, 15, 20))}"
            t += rng.uniform(2, 20)
            discount = round(self._cart_value(s) * int(s.coupon[-2:]) / 100, 2)
            track(
                "Coupon Applied", {"cart_id": s.cart_id, "coupon": s.coupon, "discount": discount}
            )
        t += rng.uniform(1, 5)
        value = self._cart_value(s)
        track(
            "Checkout Started",
            {"cart_id": s.cart_id, "value": value, "currency": "EUR", "coupon": s.coupon},
        )
        if rng.random() >= P_PAYMENT:
            return out
        t += rng.uniform(10, 60)
        method = rng.choice(PAYMENT.get(s.platform, ("card",)))
        track(
            "Payment Info Entered",
            {"checkout_id": f"chk_{rng.getrandbits(48):012x}", "payment_method": method},
        )
        if self.server is None or rng.random() >= P_ORDER:
            return out
        t += rng.uniform(2, 12)
        order = self.order_properties(s, rng)
        server(t, "Order Completed", order)
        if rng.random() < P_REFUND:
            later = t + rng.uniform(1, 6) * DAY
            amount = round(order["total"] * rng.choice((1.0, 1.0, 0.5)), 2)
            refund = {"order_id": order["order_id"], "amount": amount, "currency": "EUR"}
            server(later, "Order Refunded", refund)
        return out

    def _other_events(self, s: Session, out: list[SimEvent]) -> None:
        """Planned events outside the shop model: each in ~3 % of the sessions, and the steps
        of other funnels (half of the visitors go on to the next step), values per the plan."""
        rng = self.rng
        t0, t1 = out[0].t, max(e.t for e in out)
        for spec in self.other_events:
            if rng.random() < 0.03:
                props = {p.name: sample_value(p, rng) for p in spec.properties if p.required}
                out.append(SimEvent(rng.uniform(t0, t1 + 1), s.source, "track", spec.name, props))
        for steps in self.other_funnels:
            if rng.random() >= 0.2:
                continue
            t = rng.uniform(t0, t1 + 1)
            for step in steps:
                spec = self.plan.events[step]
                props = {p.name: sample_value(p, rng) for p in spec.properties if p.required}
                out.append(SimEvent(t, s.source, "track", step, props))
                if rng.random() >= 0.5:
                    break
                t += 5.0 + rng.expovariate(1 / 30)

    def _identify(self, s: Session, t: float, out: list[SimEvent], page: Any) -> None:
        user = s.user
        s.logged_in = True
        traits = {"plan": user.tier, "country": user.country}
        if user.created:
            traits["created_at"] = user.created
        event = SimEvent(t, s.source, "identify", None, traits, page)
        event.user_id = user.user_id
        out.append(event)

    def _product(self) -> tuple[str, str, float]:
        return self.products[bisect.bisect(self.product_cum, self.rng.random())]

    def _viewed(self, product: tuple[str, str, float]) -> dict[str, Any]:
        props: dict[str, Any] = {"product_id": product[0], "price": product[2]}
        if self.rng.random() < 0.8:
            props["category"] = product[1]
            props["sku"] = f"SKU-{product[0][2:].upper()}"
        if self.rng.random() < 0.6:
            props["currency"] = "EUR"
        return props

    @staticmethod
    def _cart_value(s: Session) -> float:
        return round(sum(p[2] * q for p, q in s.cart), 2)

    def order_properties(self, s: Session, rng: random.Random) -> dict[str, Any]:
        """The properties of an `Order Completed` for the session's cart."""
        if not s.cart:
            s.cart.append((self.products[bisect.bisect(self.product_cum, rng.random())], 1))
        total = self._cart_value(s)
        if s.coupon:
            total = round(total * (1 - int(s.coupon[-2:]) / 100), 2)
        order_id = f"ord_{rng.getrandbits(64):016x}"
        products = [{"product_id": p[0], "price": p[2], "quantity": q} for p, q in s.cart]
        return {
            "order_id": order_id,
            "total": total,
            "revenue": round(total / 1.19, 2),
            "currency": "EUR",
            "coupon": s.coupon,
            "products": products,
        }

    # -- turning calls into bodies -------------------------------------------------------------

    def _emit(self, s: Session, event: SimEvent, rng: random.Random) -> None:
        """Turn one call into a Segment body and queue it by its reception time (the hot path:
        every random draw here happens whether or not the event is dropped)."""
        call = event.call
        name = event.name
        props = event.props
        shape = self.shapes.get(name if call == "track" else self.view_keys.get((call, name), call))
        if not event.raw:
            if shape is None or (shape.sources and event.source not in shape.sources):
                return  # the plan does not have it: a real tracker would not send it either
            allowed = shape.allowed
            if (
                (allowed is not None and not props.keys() <= allowed)
                or not shape.required_names <= props.keys()
                or shape.enums
            ):
                props = self._conform(shape, props)
        random_ = rng.random
        if call == "track" and random_() < self.bug_rate:
            bug_rng = random.Random(rng.getrandbits(32))  # a fixed number of draws
            if not event.raw and shape is not None:
                props = self._bug(shape, props, bug_rng)
        bot = event.user
        anon = s.user.anon if bot is None else bot.anon
        if call == "track":
            body: dict[str, Any] = {
                "type": "track",
                "event": name,
                "properties": props,
                "anonymousId": anon,
            }
        elif call == "identify":
            body = {"type": "identify", "traits": props, "anonymousId": anon}
        else:
            body = {"type": call, "name": name, "properties": props, "anonymousId": anon}
        if bot is None and event.user_id:
            body["userId"] = event.user_id
        source = event.source
        t = event.t
        if source == self.server:
            body["context"] = {"library": self.server_library}
            received = t + 0.02 - 0.08 * math.log(1.0 - random_())
        else:
            ctx = self._base_context(s) if bot is None else self._build_context(s, bot)
            body["context"] = {**ctx, "page": event.page} if event.page is not None else {**ctx}
            if s.platform == "web":
                received = t + 0.05 - 0.15 * math.log(1.0 - random_())
            elif random_() < LATE_SHARE:  # an offline device delivers minutes late
                received = t + 60.0 + 1740.0 * random_()
            else:
                received = t + 0.3 + 29.7 * random_()  # mobile SDKs flush every 30 s
        h = f"{rng.getrandbits(128):032x}"
        body["messageId"] = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"
        iso = self._iso
        body["timestamp"] = iso(t)
        sent = received - 0.02 - 0.2 * random_()
        body["sentAt"] = iso(sent if sent > t else t)
        retried = random_() < self.duplicate_rate
        again = received + 2.0 + 58.0 * random_() if retried else 0.0
        if event.dropped:
            return
        self.seq += 1
        heapq.heappush(self.heap, (received, self.seq, source, body))
        if retried:  # the client retried: same messageId again
            copy = dict(body)
            copy["sentAt"] = iso(again - 0.05)
            self.seq += 1
            heapq.heappush(self.heap, (again, self.seq, source, copy))

    def _base_context(self, s: Session) -> dict[str, Any]:
        """The session's context (built once; events get a shallow copy, so nested objects are
        shared between the events of a session: consumers must not mutate them)."""
        ctx = s.context
        if ctx is None:
            ctx = s.context = self._build_context(s, s.user)
        return ctx

    def _build_context(self, s: Session, user: User) -> dict[str, Any]:
        platform = user.platform
        name, version = LIBRARIES.get(platform, LIBRARIES["web"])
        ctx: dict[str, Any] = {"library": {"name": name, "version": version}, "locale": user.locale}
        if platform == "web":
            ctx["userAgent"] = user.device[0]
            if s.campaign:
                ctx["campaign"] = {"name": s.campaign, "source": "newsletter", "medium": "email"}
            return ctx
        version = s.version or ""
        ctx["app"] = {
            "name": "Acme Shop",
            "version": version,
            "build": version.replace(".", "") or "0",
            "namespace": "com.acme.shop",
        }
        if platform == "ios":
            model, os_version = user.device[:2]
            ctx["os"] = {"name": "iOS", "version": os_version}
            ctx["device"] = {"manufacturer": "Apple", "model": model, "type": "ios"}
        else:
            maker, model, os_version = user.device[:3]
            ctx["os"] = {"name": "Android", "version": os_version}
            ctx["device"] = {"manufacturer": maker, "model": model, "type": "android"}
        if s.campaign:
            ctx["campaign"] = {"name": s.campaign, "source": "push", "medium": "push"}
        return ctx

    # -- the plan ------------------------------------------------------------------------------

    def _conform(self, shape: _Shape, props: dict[str, Any]) -> dict[str, Any]:
        """Keep only planned properties, add missing required ones, fix enum values."""
        if shape.allowed is not None:
            props = {k: v for k, v in props.items() if k in shape.allowed}
        for spec in shape.required:
            if spec.name not in props:
                props[spec.name] = sample_value(spec, self.rng)
        for name, enum in shape.enums:
            if name in props and props[name] not in enum:
                props[name] = self.rng.choice(enum)
        return props

    @staticmethod
    def _bug(shape: _Shape, props: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        """A realistic tracking bug that breaks the plan (the event stays recognisable)."""
        props = dict(props)
        required = [s.name for s in shape.required if not s.has_default and s.name in props]
        typed = [
            n
            for n, v in props.items()
            if v is not None and n in shape.specs and shape.specs[n].type in _BUG_TYPES
        ]
        enums = [n for n, _ in shape.enums if isinstance(props.get(n), str)]
        r = rng.random()
        if enums and r < 0.15:
            name = rng.choice(enums)
            props[name] = props[name].title() + " "  # "Card " from a copy-pasted label
        elif typed and (r < 0.55 or not required):
            name = rng.choice(typed)
            value = props[name]
            # numbers sent as text ("19.99"), ids sent as numbers
            props[name] = len(value) if isinstance(value, str) else f"{value}"
        elif required:
            del props[rng.choice(required)]
        return props


_BUG_TYPES = (PropType.NUMBER, PropType.INTEGER, PropType.STRING)


def _shape(spec: EventSpec) -> _Shape:
    props = spec.properties
    allowed = None if spec.allow_unplanned_properties else frozenset(p.name for p in props)
    if spec.status is Status.DEPRECATED:
        allowed = frozenset()
    return _Shape(
        allowed=allowed,
        required=tuple(p for p in props if p.required),
        required_names=frozenset(p.name for p in props if p.required),
        enums=tuple((p.name, p.enum) for p in props if p.enum),
        sources=frozenset(spec.sources) if spec.call is CallType.TRACK else frozenset(),
        specs={p.name: p for p in props},
    )


def _platform_of(plan: Plan, incident: Incident) -> str:
    """The platform an incident's source sends from ("" for none)."""
    source = incident.params.get("source")
    return plan.sources[source].platform if source in plan.sources else source or ""


def shipped_releases(plan: Plan, incidents: Sequence[Incident]) -> list[Release]:
    """The app releases the version-bound incidents ship (rolled out from their start over
    `rollout_hours`), which `simulate` adds to its releases: pass them with `releases=` to
    simulate the same releases without the incidents."""
    out: list[Release] = []
    for incident in incidents:
        version = incident.params.get("app_version")
        if incident.kind != "campaign" and version:
            hours = float(incident.params.get("rollout_hours", 6.0))
            platform = _platform_of(plan, incident)
            out.append(Release(platform, str(version), incident.start.timestamp(), hours))
    return out


def _by_platform(releases: list[Release], shipped: list[Release]) -> dict[str, list[Release]]:
    """Releases per platform, newest first, with the `shipped` ones not already known."""
    known = {(r.platform, r.version) for r in releases}
    every = list(releases)
    for release in shipped:
        if (release.platform, release.version) not in known:
            every.append(release)
            known.add((release.platform, release.version))
    out: dict[str, list[Release]] = {}
    for release in sorted(every, key=lambda r: r.at, reverse=True):
        out.setdefault(release.platform, []).append(release)
    return out


def _cumulative(weights: list[float]) -> Iterator[float]:
    total = sum(weights)
    acc = 0.0
    for w in weights[:-1]:
        acc += w / total
        yield acc


def sample_value(spec: PropertySpec, rng: random.Random) -> Any:
    """A value that satisfies `spec` (for required properties the simulator knows nothing
    about). Patterns are not generated: such properties get a plain token."""
    if spec.enum:
        return rng.choice(spec.enum)
    if spec.has_default:
        return spec.default
    kind = spec.type
    low = spec.minimum if spec.minimum is not None else 0
    if kind is PropType.NUMBER:
        high = spec.maximum if spec.maximum is not None else low + 100
        return round(rng.uniform(low, high), 2)
    if kind is PropType.INTEGER:
        high = spec.maximum if spec.maximum is not None else low + 100
        return rng.randint(math.ceil(low), math.floor(high))
    if kind is PropType.BOOLEAN:
        return rng.random() < 0.5
    if kind is PropType.TIMESTAMP:
        return "2026-01-01T00:00:00.000Z"
    if kind is PropType.ARRAY:
        count = max(1, int(spec.minimum or 0))
        return [sample_value(spec.items, rng) if spec.items else "x" for _ in range(count)]
    if kind is PropType.OBJECT:
        return {p.name: sample_value(p, rng) for p in spec.properties if p.required}
    if spec.format == "currency":
        return "EUR"
    if spec.format == "uri":
        return SITE + "/"
    if spec.format == "date-time":
        return "2026-01-01T00:00:00Z"
    return "x" * max(1, int(spec.minimum or 0))
