"""What a user does in one session, as the tracking calls it produces.

A session is a walk through the shop: it lands on the home screen, an item (a link or an ad),
a category or a search; browses items; adds some to the bag; may check out, sign in or sign up
on the way, choose a delivery option and place the order (after minutes of payment forms); the
backend then confirms the payment, and sometimes a return comes days later. Apps send SDK
lifecycle events (installed, updated, opened, backgrounded); the website sends `page` calls and
the apps `screen` calls. How far a user goes depends on their intent and on the profile's
`Behaviour`. Sparse events (sign-ups, reviews, stock alerts) come from the screens that lead to
them (the Create Account screen before Signed Up).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Protocol

from simulation.apps import Release
from simulation.people import Device, Person
from simulation.randomness import uuid
from simulation.rhythm import lognormal_seconds, pick
from simulation.timestamps import iso

CATEGORIES = ("tents", "packs", "apparel", "footwear", "climbing", "kitchen")
QUERIES = {
    "tents": ("tent", "2 person tent", "ultralight tent", "tarp", "tent pegs", "bivy"),
    "packs": ("backpack", "daypack 20l", "hydration pack", "rain cover", "hip belt"),
    "apparel": ("rain jacket", "fleece", "merino shirt", "down jacket", "hiking pants"),
    "footwear": ("hiking boots", "trail runners", "gaiters", "wool socks", "sandals"),
    "climbing": ("harness", "chalk bag", "carabiner", "climbing shoes", "rope 60m"),
    "kitchen": ("stove", "gas canister", "mug", "spork", "water filter", "pot set"),
}
PRICES = {"tents": 260.0, "packs": 120.0, "apparel": 90.0, "footwear": 140.0,
          "climbing": 60.0, "kitchen": 35.0}  # fmt: skip
SOURCES = {"web": "storefront", "ios": "ios_app", "android": "android_app", "server": "backend"}
LIBRARIES = {
    "web": {"name": "analytics.js", "version": "next-1.81.0"},
    "ios": {"name": "analytics-ios", "version": "4.1.8"},
    "android": {"name": "analytics-android", "version": "4.11.3"},
    "server": {"name": "analytics-python", "version": "2.3.3"},
}
HOST = "https://www.fjord-outfitters.example"
LEAKED_CODE = "STAFF-FJORD-50"
PASTED_QUERIES = 0.002  # searches with a pasted text, longer than the plan allows (violations)
CODES = ("WELCOME10", "SPRING-15", "NEWSLETTER5", "FREESHIP", "LOYAL-20")


@dataclass(frozen=True)
class Behaviour:
    """How a profile's users behave (probabilities per step; users' intent scales the buying
    ones)."""

    add_to_bag: float = 0.12  # per item viewed, at intent 1
    checkout: float = 0.55  # per bag viewed with items
    order: float = 0.55  # per checkout
    promo: float = 0.12  # per bag viewed with items: a code redeemed
    account_visit: float = 0.09  # per home screen: the account screen
    signup: float = 0.5  # on the Create Account screen
    review: float = 0.01  # per item viewed by a registered user
    stock_alert: float = 0.12  # per sold-out item viewed
    returns: float = 0.05  # per order, days later
    web_reload: float = 0.008  # web orders whose confirmation is reloaded (fires again)
    currency: str = "EUR"
    locales: tuple[tuple[str, str, float], ...] = (("DE", "de-DE", 0.7), ("AT", "de-AT", 0.3))


@dataclass(slots=True)
class Call:
    """One tracking call: the true time of the event, the source it comes from, the body as the
    SDK sends it (without `sentAt`, which delivery adds), the app version, the device's clock
    error, and when delivery puts it on the wire (`sent`) and the collector gets it
    (`received`, None until delivered; `request`: the HTTP request it travels in)."""

    ts: float
    source: str
    body: dict[str, Any]
    version: str | None
    skew: float = 0.0
    sent: float = 0.0
    received: float | None = None
    request: int = 0


class Effects(Protocol):
    """What incidents change in a session's behaviour (see `simulation.incidents`)."""

    def factor(self, what: str, source: str, ts: float) -> float: ...

    def promo_code(self, ts: float) -> str | None: ...


class Catalog:
    """The shop's items: ids, categories, prices, stock, popularity (the same for every run)."""

    def __init__(self, size: int = 2400) -> None:
        rng = random.Random(20260302)
        self.items: list[tuple[str, str, float, bool]] = []
        by_category: dict[str, list[int]] = {c: [] for c in CATEGORIES}
        for n in range(size):
            category = CATEGORIES[n % len(CATEGORIES)]
            price = round(PRICES[category] * rng.lognormvariate(0.0, 0.5), 2)
            item = (f"itm-{100000 + n * 7:06d}", category, min(price, 4900.0), rng.random() > 0.06)
            by_category[category].append(len(self.items))
            self.items.append(item)
        order = list(range(size))
        rng.shuffle(order)
        popularity = [0.0] * size
        for rank, index in enumerate(order):
            popularity[index] = 1.0 / (rank + 10) ** 1.05
        self.cumulative = list(accumulate(popularity))
        self.by_category = {
            c: (ids, list(accumulate(popularity[i] for i in ids))) for c, ids in by_category.items()
        }

    def item(self, rng: random.Random, category: str | None = None) -> tuple[str, str, float, bool]:
        if category is None:
            return self.items[pick(self.cumulative, rng)]
        ids, cumulative = self.by_category[category]
        return self.items[ids[pick(cumulative, rng)]]


class Journey:
    """Writes the calls of one session."""

    def __init__(
        self,
        *,
        rng: random.Random,
        person: Person,
        device: Device,
        release: Release | None,
        start: float,
        behaviour: Behaviour,
        catalog: Catalog,
        effects: Effects,
        fresh_install: bool,
        campaign: str | None = None,
    ) -> None:
        self.rng = rng
        self.person = person
        self.device = device
        self.platform = device.platform
        self.app = self.platform != "web"
        self.source = SOURCES[self.platform]
        self.release = release
        self.version = release.version if release is not None else None
        self.t = start
        self.behaviour = behaviour
        self.catalog = catalog
        self.effects = effects
        self.fresh_install = fresh_install
        self.campaign = campaign
        self.calls: list[Call] = []
        self.bag: list[tuple[str, int, float]] = []
        self.bag_id = f"bag_{rng.getrandbits(48):012x}"
        self.path = "/"
        self.context = self._app_context() if self.app else None

    # ---------------------------------------------------------------------- the calls

    def _ids(self, body: dict[str, Any], message_id: str | None = None) -> dict[str, Any]:
        body["anonymousId"] = self.device.anonymous_id
        if self.device.logged_in and self.person.user_id is not None:
            body["userId"] = self.person.user_id
        body["messageId"] = message_id or uuid(self.rng)
        body["timestamp"] = iso(self.t + self.device.skew)
        return body

    def _app_context(self) -> dict[str, Any]:
        d = self.device.details
        os_name = "iOS" if self.platform == "ios" else "Android"
        assert self.release is not None
        return {
            "library": LIBRARIES[self.platform],
            "app": {
                "name": "Fjord",
                "version": self.release.version,
                "build": self.release.build,
                "namespace": "com.fjord.outfitters",
            },
            "os": {"name": os_name, "version": d["os"]},
            "device": {
                "id": d["device_id"],
                "manufacturer": d["manufacturer"],
                "model": d["model"],
                "type": self.platform,
            },
            "screen": {"width": d["screen"][0], "height": d["screen"][1]},
            "network": {"wifi": self.rng.random() < 0.55, "cellular": True},
            "locale": self.person.locale,
        }

    def _web_context(self, title: str) -> dict[str, Any]:
        context: dict[str, Any] = {
            "library": LIBRARIES["web"],
            "page": {"path": self.path, "url": HOST + self.path, "title": title},
            "userAgent": self.device.details["user_agent"],
            "locale": self.person.locale,
        }
        if self.campaign:
            context["campaign"] = {"name": self.campaign, "source": "newsletter", "medium": "email"}
        return context

    def _add(self, body: dict[str, Any], title: str = "") -> None:
        body["context"] = self.context if self.app else self._web_context(title)
        self.calls.append(Call(self.t, self.source, body, self.version, self.device.skew))

    def track(self, event: str, properties: dict[str, Any], message_id: str | None = None) -> None:
        body = {"type": "track", "event": event, "properties": properties}
        self._add(self._ids(body, message_id), event)

    def view(self, name: str, properties: dict[str, Any] | None = None, path: str = "/") -> None:
        """A screen (apps) or page (web) call, then the time spent on it."""
        self.path = path
        call = "screen" if self.app else "page"
        self._add(self._ids({"type": call, "name": name, "properties": properties or {}}), name)

    def identify(self) -> None:
        person = self.person
        traits: dict[str, Any] = {"loyalty_tier": person.loyalty, "country": person.country}
        if person.signed_up_at is not None:
            traits["created_at"] = iso(person.signed_up_at)
        self._add(self._ids({"type": "identify", "traits": traits}), "identify")

    def server(self, event: str, properties: dict[str, Any], at: float) -> None:
        """A call the backend sends about this user at `at` (its clock is right)."""
        body: dict[str, Any] = {"type": "track", "event": event, "properties": properties}
        if self.person.user_id is not None and self.device.logged_in:
            body["userId"] = self.person.user_id
        body["anonymousId"] = self.device.anonymous_id
        body["messageId"] = uuid(self.rng)
        body["timestamp"] = iso(at)
        body["context"] = {"library": LIBRARIES["server"]}
        self.calls.append(Call(at, SOURCES["server"], body, None))

    def wait(self, median: float, sigma: float = 0.9, cap: float = 900.0) -> None:
        self.t += lognormal_seconds(self.rng, median, sigma, cap)

    # ---------------------------------------------------------------------- the walk

    def run(self, max_steps: int = 40) -> list[Call]:
        if self.app:
            self._open_app()
        where = self._entry()
        for _ in range(max_steps):
            step = getattr(self, "_" + where)
            where = step()
            if where == "exit":
                break
        if self.app:
            self.wait(20.0)
            self.track("Application Backgrounded", {})
        return self.calls

    def _open_app(self) -> None:
        assert self.release is not None
        version, build = self.release.version, self.release.build
        device = self.device
        if self.fresh_install and device.last_version is None:
            self.track("Application Installed", {"version": version, "build": build})
        elif device.last_version is not None and device.last_version != version:
            self.track(
                "Application Updated",
                {"previous_version": device.last_version, "version": version, "build": build},
            )
        device.last_version = version
        self.track(
            "Application Opened",
            {"from_background": self.rng.random() < 0.35, "version": version, "build": build},
        )
        if device.logged_in and self.rng.random() < 0.2:
            self.identify()
        self.wait(2.0, 0.5, 20.0)

    def _entry(self) -> str:
        r = self.rng.random()
        if self.campaign:
            return "category" if r < 0.6 else "item"
        if r < 0.5:
            return "home"
        if r < 0.7:
            return "item"
        return "category" if r < 0.86 else "search"

    def _choose(self, options: tuple[tuple[str, float], ...]) -> str:
        r = self.rng.random() * sum(w for _, w in options)
        for name, weight in options:
            r -= weight
            if r < 0:
                return name
        return options[-1][0]

    def _home(self) -> str:
        self.view("Home", path="/")
        self.wait(12.0)
        account = self.behaviour.account_visit * (1.0 if not self.person.registered else 0.4)
        return self._choose((
            ("search", 0.26), ("category", 0.34), ("item", 0.12), ("account", account),
            ("bag", 0.05 if self.bag else 0.0), ("exit", 0.19),
        ))  # fmt: skip

    def _search(self) -> str:
        category = self.rng.choice(CATEGORIES)
        query = self.rng.choice(QUERIES[category])
        if self.rng.random() < PASTED_QUERIES:  # a pasted paragraph: longer than planned
            query = " ".join([query] * 40)[: self.rng.randint(130, 300)]
        results = int(self.rng.lognormvariate(3.0, 1.0)) if self.rng.random() > 0.07 else 0
        self.track("Search Submitted", {"query": query, "results": results})
        self.view("Search Results", {} if self.app else {"query": query}, path="/search")
        self.wait(10.0)
        if results == 0:
            return self._choose((("search", 0.4), ("home", 0.2), ("exit", 0.4)))
        self._category_hint = category
        return self._choose((("item", 0.58), ("search", 0.12), ("category", 0.05), ("exit", 0.25)))

    def _category(self) -> str:
        category = self.rng.choice(CATEGORIES)
        self._category_hint = category
        self.view("Category", {"category": category}, path=f"/c/{category}")
        self.wait(15.0)
        return self._choose((("item", 0.62), ("category", 0.1), ("search", 0.06), ("exit", 0.22)))

    def _item(self) -> str:
        rng, b = self.rng, self.behaviour
        category = getattr(self, "_category_hint", None) if rng.random() < 0.7 else None
        item_id, category, price, in_stock = self.catalog.item(rng, category)
        self.view("Item", {"item_id": item_id}, path=f"/i/{item_id}")
        self.track(
            "Item Viewed",
            {"item_id": item_id, "category": category, "price": price,
             "currency": b.currency, "in_stock": in_stock},
        )  # fmt: skip
        self.wait(25.0)
        if not in_stock:
            if rng.random() < b.stock_alert:
                channel = "push" if self.app and rng.random() < 0.6 else "email"
                self.track("Stock Alert Requested", {"item_id": item_id, "channel": channel})
            return self._choose((("item", 0.35), ("search", 0.2), ("exit", 0.45)))
        if self.person.registered and rng.random() < b.review * (self.person.intent**0.5):
            self.track(
                "Review Posted",
                {"item_id": item_id, "rating": rng.choice((5, 5, 5, 4, 4, 3, 2, 1)),
                 "has_photo": rng.random() < 0.2},
            )  # fmt: skip
            self.wait(40.0)
        if rng.random() < 0.03:
            self.track("Wishlist Saved", {"item_id": item_id})
        if rng.random() < min(0.6, b.add_to_bag * self.person.intent):
            quantity = 1 if rng.random() < 0.85 else rng.randint(2, 4)
            self.bag.append((item_id, quantity, price))
            self.track(
                "Item Added To Bag",
                {"bag_id": self.bag_id, "item_id": item_id, "quantity": quantity,
                 "unit_price": price},
            )  # fmt: skip
            self.wait(6.0)
            return self._choose((
                ("bag", 0.42), ("item", 0.18), ("search", 0.1), ("category", 0.12), ("exit", 0.18)
            ))  # fmt: skip
        return self._choose((
            ("item", 0.3), ("search", 0.14), ("category", 0.14), ("home", 0.04), ("exit", 0.38)
        ))  # fmt: skip

    def _value(self) -> float:
        return round(sum(q * p for _, q, p in self.bag), 2)

    def _bag(self) -> str:
        rng, b = self.rng, self.behaviour
        self.view("Bag", path="/bag")
        self.track(
            "Bag Viewed",
            {"bag_id": self.bag_id, "item_count": len(self.bag), "value": self._value()},
        )
        self.wait(14.0)
        if not self.bag:
            return self._choose((("home", 0.3), ("exit", 0.7)))
        # drawn either way, so that a leaked code changes what happens, not the random numbers
        promo, code, discount = rng.random(), rng.choice(CODES), float(rng.choice((5, 10, 15)))
        pause, message_id = lognormal_seconds(rng, 5.0, 0.9, 900.0), uuid(rng)
        if promo < min(0.95, b.promo * self.effects.factor("promo", self.source, self.t)):
            leaked = self.effects.promo_code(self.t)
            if leaked and promo >= b.promo:
                code, discount = leaked, 50.0
            self.track(
                "Promo Code Redeemed",
                {"bag_id": self.bag_id, "code": code, "discount_pct": discount},
                message_id,
            )
            self.t += pause
        if rng.random() < min(0.85, b.checkout * self.person.intent**0.5):
            return "checkout"
        return self._choose((("item", 0.25), ("exit", 0.75)))

    def _checkout(self) -> str:
        rng, b, person = self.rng, self.behaviour, self.person
        amount = self._value()
        self.view("Checkout", path="/checkout")
        self.track(
            "Checkout Begun",
            {"bag_id": self.bag_id, "amount": amount, "currency": b.currency,
             "item_count": len(self.bag)},
        )  # fmt: skip
        self.wait(30.0)
        if not self.device.logged_in:
            r = rng.random()
            if person.registered and r < 0.7:
                self.device.logged_in = True
                self.identify()
                self.wait(20.0)
            elif not person.registered and r < 0.4:
                self._sign_up()
        option = self._choose(
            (("standard", 0.6), ("express", 0.15), ("pickup", 0.15), ("locker", 0.1))
        )
        self.track("Delivery Option Chosen", {"bag_id": self.bag_id, "option": option})
        decision = rng.random()  # drawn always, like the promo
        self.wait(110.0, 0.8, 1800.0)
        chance = min(0.95, b.order * person.intent**0.35)
        if decision >= chance * self.effects.factor("order", self.source, self.t):
            return self._choose((("bag", 0.15), ("exit", 0.85)))
        self._order(amount)
        return self._choose((("home", 0.15), ("exit", 0.85)))

    def _order(self, amount: float) -> None:
        rng, b = self.rng, self.behaviour
        order_id = f"FJ-{rng.randrange(10**9):09d}"
        method = self._choose((
            ("card", 0.42), ("paypal", 0.25), ("klarna", 0.12),
            ("apple_pay", 0.13 if self.platform != "android" else 0.0),
            ("google_pay", 0.08 if self.platform != "ios" else 0.0),
        ))  # fmt: skip
        code = None
        for call in self.calls:
            if call.body.get("event") == "Promo Code Redeemed":
                code = call.body["properties"]["code"]
        properties = {
            "order_id": order_id,
            "amount": amount,
            "currency": b.currency,
            "payment_method": method,
            "promo_code": code,
            "items": [{"item_id": i, "quantity": q, "unit_price": p} for i, q, p in self.bag],
        }
        self.track("Order Placed", properties)
        placed = self.t
        self.view("Order Confirmation", path="/order/confirmation")
        confirm = placed + lognormal_seconds(rng, 6.0, 0.8, 300.0)
        provider = "adyen" if rng.random() < 0.7 else "stripe"
        self.server(
            "Payment Captured",
            {"order_id": order_id, "amount": amount, "currency": b.currency, "provider": provider},
            confirm,
        )
        if not self.app and rng.random() < b.web_reload:  # the confirmation page reloaded
            again = self.t
            self.t = placed + lognormal_seconds(rng, 40.0, 1.0, 1200.0)
            self.track("Order Placed", dict(properties))
            self.t = max(again, self.t)
        if rng.random() < b.returns:
            later = placed + 86400.0 * rng.uniform(2.0, 6.0)
            reason = rng.choice(("size", "size", "damaged", "changed_mind", "late"))
            self.server("Return Requested", {"order_id": order_id, "reason": reason}, later)
        self.wait(20.0)

    def _account(self) -> str:
        self.view("Account", path="/account")
        self.wait(10.0)
        if self.person.registered:
            if not self.device.logged_in and self.rng.random() < 0.5:
                self.device.logged_in = True
                self.identify()
            return self._choose((("home", 0.4), ("exit", 0.6)))
        if self.rng.random() < 0.7:
            self._sign_up()
        return self._choose((("home", 0.5), ("category", 0.2), ("exit", 0.3)))

    def _sign_up(self) -> None:
        """The Create Account screen, and perhaps the account."""
        rng = self.rng
        self.view("Create Account", path="/account/new")
        self.wait(45.0, 0.7, 600.0)
        if rng.random() >= self.behaviour.signup:
            return
        person = self.person
        person.user_id = f"cus_{rng.getrandbits(40):010x}"
        person.signed_up_at = self.t
        self.device.logged_in = True
        method = self._choose((("email", 0.6), ("apple", 0.25 if self.platform == "ios" else 0.05),
                               ("google", 0.2)))  # fmt: skip
        self.track("Signed Up", {"method": method, "marketing_opt_in": rng.random() < 0.4})
        self.identify()
        self.wait(8.0)
