"""Incident classes: what each does to the traffic, its ground-truth label and annotation.

An incident acts in one of four places, always keyed so that the rest of the traffic is the
same as without it (`simulation.randomness`):
- behaviour: a factor on a session's chance of a step (`factor`: the order after checkout, a
  promotion code in the bag), decided on a draw the session makes either way;
- calls, after delivery (`transform`): drop, rename a property, fire twice, add bot calls;
- the collector (`loses`): requests lost on the way;
- extra sessions (`extra_sessions`): visitors a campaign brings.

Labels follow `detectors.backtest.Label` (name, kind, series, start, end, expect_alert,
related) plus `class`, the incident class (`CLASSES`). Series keys are what an alert about the
incident carries: event, source, platform (implied by the source), app_version.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from simulation.delivery import deliver_web
from simulation.journeys import LEAKED_CODE, SOURCES, Call
from simulation.randomness import stream, unit, uuid
from simulation.timestamps import iso

PLATFORM_OF = {source: platform for platform, source in SOURCES.items()}
PURCHASE = "Order Placed"
CHECKOUT = "Checkout Begun"
PAYMENT = "Payment Captured"
COUPON = "Promo Code Redeemed"

# incident class -> what it is (the classes of issue 16's independent set)
CLASSES = {
    "release_stops_event": "an app release stops sending an event",
    "double_firing": "the website fires the purchase twice (new messageId, same order id)",
    "renamed_property": "an app release renames a required property",
    "sparse_event_stops": "a sparse event stops on one platform",
    "conversion_falls": "one platform's checkout-to-purchase conversion falls",
    "leaked_coupon": "a leaked promotion code multiplies redemptions",
    "bot_flood": "bots multiply one page's views",
    "events_lost": "most events are lost on the way to the collector",
    "campaign": "an announced campaign (must not alert)",
}


def _series(source: str | None = None, **keys: str | None) -> dict[str, str]:
    out = {k: v for k, v in keys.items() if v is not None}
    if source is not None:
        out["source"] = source
        out["platform"] = PLATFORM_OF[source]
    return out


@dataclass(frozen=True)
class Incident:
    """Something that happens to the traffic from `start` to `end` (UTC epochs)."""

    name: str
    start: float
    end: float
    cls: ClassVar[str] = ""
    kind: ClassVar[str] = ""  # the engine's anomaly kind it should raise

    def active(self, ts: float) -> bool:
        return self.start <= ts < self.end

    # -------------------------------------------------------------- effects (default: none)

    def factor(self, what: str, source: str, ts: float) -> float:
        return 1.0

    def promo_code(self, ts: float) -> str | None:
        return None

    def transform(self, call: Call, seed: int) -> list[Call] | None:
        """The calls that replace `call` (None: `call` unchanged)."""
        return None

    def loses(self, call: Call, seed: int) -> bool:
        return False

    def extra_sessions(self, platform: str, ts: float) -> float:
        """Mean number of extra sessions to add next to a session starting at `ts`."""
        return 0.0

    # -------------------------------------------------------------- ground truth

    @property
    def series(self) -> dict[str, str]:
        return {}

    @property
    def related(self) -> list[tuple[str, dict[str, str]]]:
        """Deviations the incident causes on other series (neither finds nor false alerts)."""
        return []

    @property
    def expect_alert(self) -> bool:
        return True

    def label(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class": self.cls,
            "kind": self.kind,
            "series": self.series,
            "start": iso(self.start),
            "end": iso(self.end),
            "expect_alert": self.expect_alert,
            "related": [{"kind": k, "series": s} for k, s in self.related],
        }

    def annotation(self) -> dict[str, Any] | None:
        return None


@dataclass(frozen=True)
class ReleaseStopsEvent(Incident):
    """App version `app_version` on `source` no longer sends `event` (it grows with adoption)."""

    event: str = PURCHASE
    source: str = "ios_app"
    app_version: str = ""
    cls: ClassVar[str] = "release_stops_event"
    kind: ClassVar[str] = "disappeared"

    def transform(self, call: Call, seed: int) -> list[Call] | None:
        if (
            call.version == self.app_version
            and call.source == self.source
            and call.body.get("event") == self.event
            and self.active(call.ts)
        ):
            return []
        return None

    @property
    def series(self) -> dict[str, str]:
        return _series(self.source, event=self.event, app_version=self.app_version)

    @property
    def related(self) -> list[tuple[str, dict[str, str]]]:
        return [
            ("drop", _series(self.source, event=self.event)),
            ("conversion_down", _series(self.source, from_event=CHECKOUT, to_event=self.event)),
        ]


@dataclass(frozen=True)
class RenamedProperty(Incident):
    """App version `app_version` on `source` sends `event` with property `old` renamed `new`."""

    event: str = PURCHASE
    source: str = "android_app"
    app_version: str = ""
    old: str = "order_id"
    new: str = "orderId"
    cls: ClassVar[str] = "renamed_property"
    kind: ClassVar[str] = "violation_surge"

    def transform(self, call: Call, seed: int) -> list[Call] | None:
        body = call.body
        if (
            call.version == self.app_version
            and call.source == self.source
            and body.get("event") == self.event
            and self.active(call.ts)
        ):
            properties = {
                self.new if k == self.old else k: v for k, v in body["properties"].items()
            }
            return [replace(call, body={**body, "properties": properties})]
        return None

    @property
    def series(self) -> dict[str, str]:
        return _series(self.source, event=self.event, app_version=self.app_version)

    @property
    def related(self) -> list[tuple[str, dict[str, str]]]:
        # the purchase event is blocked by the plan: it vanishes from the valid stream too
        return [
            ("disappeared", _series(self.source, event=self.event, app_version=self.app_version)),
            ("drop", _series(self.source, event=self.event)),
            ("conversion_down", _series(self.source, from_event=CHECKOUT, to_event=self.event)),
        ]


@dataclass(frozen=True)
class DoubleFiring(Incident):
    """The website sends `event` twice: the copy has a new messageId, the same properties (and
    order id), and follows within a second or two."""

    event: str = PURCHASE
    source: str = "storefront"
    cls: ClassVar[str] = "double_firing"
    kind: ClassVar[str] = "spike"

    def transform(self, call: Call, seed: int) -> list[Call] | None:
        body = call.body
        if call.source != self.source or body.get("event") != self.event:
            return None
        if not self.active(call.ts):
            return None
        rng = stream(seed, "double", body["messageId"])
        ts = call.ts + 0.3 + 1.5 * rng.random()
        copy = {**body, "messageId": uuid(rng), "timestamp": iso(ts + call.skew)}
        twin = Call(ts, call.source, copy, call.version, call.skew)
        deliver_web(twin, seed, 13)
        return [call, twin]

    @property
    def series(self) -> dict[str, str]:
        return _series(self.source, event=self.event)

    @property
    def related(self) -> list[tuple[str, dict[str, str]]]:
        return [("conversion_up", _series(self.source, from_event=CHECKOUT, to_event=self.event))]


@dataclass(frozen=True)
class SparseEventStops(Incident):
    """`event` (a few an hour) stops coming from `source`; what leads to it goes on."""

    event: str = "Signed Up"
    source: str = "android_app"
    screen: str = "Create Account"  # what precedes the event
    cls: ClassVar[str] = "sparse_event_stops"
    kind: ClassVar[str] = "disappeared"

    def transform(self, call: Call, seed: int) -> list[Call] | None:
        if call.source == self.source and call.body.get("event") == self.event:
            return [] if self.active(call.ts) else None
        return None

    @property
    def series(self) -> dict[str, str]:
        return _series(self.source, event=self.event)

    @property
    def related(self) -> list[tuple[str, dict[str, str]]]:
        return [("drop", _series(self.source, event=self.event))]


@dataclass(frozen=True)
class ConversionFalls(Incident):
    """Checkouts on `source` turn into orders `keep` times as often (a payment step failing)."""

    source: str = "ios_app"
    keep: float = 2 / 3
    cls: ClassVar[str] = "conversion_falls"
    kind: ClassVar[str] = "conversion_down"

    def factor(self, what: str, source: str, ts: float) -> float:
        if what == "order" and source == self.source and self.active(ts):
            return self.keep
        return 1.0

    @property
    def series(self) -> dict[str, str]:
        return _series(self.source, from_event=CHECKOUT, to_event=PURCHASE)

    @property
    def related(self) -> list[tuple[str, dict[str, str]]]:
        return [
            ("drop", _series(self.source, event=PURCHASE)),
            ("drop", _series(SOURCES["server"], event=PAYMENT)),
        ]


@dataclass(frozen=True)
class LeakedCoupon(Incident):
    """A staff promotion code leaks: redemptions (every source) multiply by `multiplier`."""

    multiplier: float = 8.0
    cls: ClassVar[str] = "leaked_coupon"
    kind: ClassVar[str] = "spike"

    def factor(self, what: str, source: str, ts: float) -> float:
        return self.multiplier if what == "promo" and self.active(ts) else 1.0

    def promo_code(self, ts: float) -> str | None:
        return LEAKED_CODE if self.active(ts) else None

    @property
    def series(self) -> dict[str, str]:
        return {"event": COUPON}


@dataclass(frozen=True)
class BotFlood(Incident):
    """Scrapers load `page` on `source` `multiplier` times as often as people do (most of them
    without cookies, so with a new anonymousId each time)."""

    page: str = "Item"
    source: str = "storefront"
    multiplier: float = 10.0
    cls: ClassVar[str] = "bot_flood"
    kind: ClassVar[str] = "spike"
    BOT_AGENT: ClassVar[str] = (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/131.0.0.0 Safari/537.36"
    )

    def transform(self, call: Call, seed: int) -> list[Call] | None:
        body = call.body
        if (
            call.source != self.source
            or body.get("type") != "page"
            or body.get("name") != self.page
        ):
            return None
        if not self.active(call.ts):
            return None
        rng = stream(seed, "bots", body["messageId"])
        extra = self.multiplier - 1.0
        count = int(extra) + (rng.random() < extra - int(extra))
        out = [call]
        for _ in range(count):
            ts = call.ts + 60.0 * rng.random()
            if ts >= self.end:
                continue
            anonymous = uuid(rng) if rng.random() < 0.7 else f"bot-{rng.randrange(30):02d}"
            item = f"itm-{100000 + 7 * rng.randrange(2400):06d}"
            path = f"/i/{item}"
            bot = {
                "type": "page",
                "name": self.page,
                "properties": {"item_id": item},
                "anonymousId": anonymous,
                "messageId": uuid(rng),
                "timestamp": iso(ts),
                "context": {
                    "library": body["context"]["library"],
                    "page": {"path": path, "url": "https://www.fjord-outfitters.example" + path,
                             "title": self.page},
                    "userAgent": self.BOT_AGENT,
                    "locale": "en-US",
                },
            }  # fmt: skip
            twin = Call(ts, call.source, bot, None)
            deliver_web(twin, seed, 14)
            out.append(twin)
        return out

    @property
    def series(self) -> dict[str, str]:
        return _series(self.source, event=f"page:{self.page}")

    @property
    def related(self) -> list[tuple[str, dict[str, str]]]:
        return [("spike", _series(self.source))]


@dataclass(frozen=True)
class EventsLost(Incident):
    """The collector's edge drops requests: only `keep` of them arrive (every source)."""

    keep: float = 0.05
    cls: ClassVar[str] = "events_lost"
    kind: ClassVar[str] = "drop"

    def loses(self, call: Call, seed: int) -> bool:
        received = call.received if call.received is not None else call.ts
        return self.active(received) and unit(seed, "lost", call.request) >= self.keep

    @property
    def related(self) -> list[tuple[str, dict[str, str]]]:
        return [("disappeared", {}), ("conversion_down", {})]


@dataclass(frozen=True)
class Campaign(Incident):
    """An announced newsletter or push: `multiplier` times the sessions on `platforms` (new
    visitors from the campaign), annotated so that it must not alert."""

    platforms: tuple[str, ...] = ("web",)
    multiplier: float = 2.0
    cls: ClassVar[str] = "campaign"
    kind: ClassVar[str] = "campaign"

    def extra_sessions(self, platform: str, ts: float) -> float:
        if platform in self.platforms and self.active(ts):
            return self.multiplier - 1.0
        return 0.0

    @property
    def expect_alert(self) -> bool:
        return False

    def label(self) -> dict[str, Any]:
        return {**super().label(), "annotation": self.annotation()}

    def annotation(self) -> dict[str, Any] | None:
        sources = [SOURCES[p] for p in self.platforms] + [SOURCES["server"]]
        return {
            "name": self.name,
            "start": iso(self.start).replace(".000Z", "Z"),
            "end": iso(self.end).replace(".000Z", "Z"),
            "sources": sources,
            "events": [],
        }


@dataclass
class Effects:
    """The incidents of a run, as the generator and the sessions ask them."""

    incidents: list[Incident] = field(default_factory=list)
    seed: int = 0

    def factor(self, what: str, source: str, ts: float) -> float:
        value = 1.0
        for incident in self.incidents:
            value *= incident.factor(what, source, ts)
        return value

    def promo_code(self, ts: float) -> str | None:
        for incident in self.incidents:
            code = incident.promo_code(ts)
            if code is not None:
                return code
        return None

    def apply(self, calls: list[Call]) -> list[Call]:
        """The calls after every incident's transform and the collector's losses."""
        out = calls
        for incident in self.incidents:
            if type(incident).transform is Incident.transform:
                continue
            changed: list[Call] = []
            for call in out:
                replaced = incident.transform(call, self.seed)
                if replaced is None:
                    changed.append(call)
                else:
                    changed.extend(replaced)
            out = changed
        for incident in self.incidents:
            if type(incident).loses is not Incident.loses:
                out = [c for c in out if not incident.loses(c, self.seed)]
        return out
