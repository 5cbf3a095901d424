"""A small history file for the page's and `explain`'s tests: four days of minute windows of a
shop with three sources and a server, and on the last day the website sending its orders
twice for two hours (with the alert the detectors raised about it)."""

from __future__ import annotations

import math
import random
from pathlib import Path

from detectors.records import WindowRecord
from streams.history import HistoryStore

START = 1772668800.0  # Thu 2026-03-05 00:00 UTC
DAYS = 4
INCIDENT = (START + 3 * 86400 + 14 * 3600, START + 3 * 86400 + 16 * 3600)  # day 3, 14:00-16:00
SOURCES = {
    "storefront": ("web", "unknown"),
    "ios_app": ("ios", "6.4.0"),
    "android_app": ("android", "6.4.0"),
}
PER_MINUTE = {"Item Viewed": 6.0, "Checkout Begun": 1.2, "Order Placed": 0.8}

ALERT = {
    "id": "a1b2c3d4e5f60718",
    "kind": "spike",
    "series": {"event": "Order Placed", "source": "storefront", "platform": "web"},
    "state": "resolved",
    "started_at": "2026-03-08T14:04:00Z",
    "updated_at": "2026-03-08T16:10:00Z",
    "ended_at": "2026-03-08T16:10:00Z",
    "observed": 190.0,
    "expected": 96.0,
    "lower": 70.0,
    "upper": 122.0,
    "score": 0.97,
    "explanation": "Order Placed on storefront was sent twice from 14:04 UTC to 16:10 UTC: 95 of "
    "190 events in 2 h repeat a business key already received (usually 0 %): tracking fires it "
    "twice, so its counts and conversions are inflated.",
    "attribution": [],
}


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def records(days: int = DAYS, seed: int = 3) -> list[WindowRecord]:
    rng = random.Random(seed)
    out: list[WindowRecord] = []
    for minute in range(days * 1440):
        t = START + 60 * minute
        daily = 0.35 + 0.65 * math.sin(math.pi * ((t % 86400) / 86400)) ** 2  # quiet nights
        doubled = INCIDENT[0] <= t < INCIDENT[1]
        for source, (platform, version) in SOURCES.items():
            dims = {"source": source, "platform": platform, "app_version": version}
            counts = {e: _poisson(rng, m * daily) for e, m in PER_MINUTE.items()}
            active = counts["Item Viewed"] + _poisson(rng, 2 * daily)
            for event, n in counts.items():
                repeats = (
                    n if (doubled and source == "storefront" and event == "Order Placed") else 0
                )
                if n or repeats:
                    out.append(
                        WindowRecord(
                            {"event": event, **dims},
                            t,
                            t + 60,
                            count=n + repeats,
                            distinct_users=n,
                            repeats=repeats,
                        )
                    )
            out.append(
                WindowRecord(
                    dims,
                    t,
                    t + 60,
                    count=active,
                    distinct_users=active,
                    kind="activity",
                    numerator=int(0.8 * active),
                    denominator=active,
                )
            )
            ordered = min(counts["Order Placed"], counts["Checkout Begun"])
            if counts["Checkout Begun"]:
                labels = {
                    "funnel": "purchase",
                    "from_event": "Checkout Begun",
                    "to_event": "Order Placed",
                    **dims,
                }
                out.append(
                    WindowRecord(
                        labels,
                        t,
                        t + 60,
                        count=ordered,
                        kind="conversion",
                        numerator=ordered,
                        denominator=counts["Checkout Begun"],
                    )
                )
        paid = sum(_poisson(rng, PER_MINUTE["Order Placed"] * daily) for _ in SOURCES)
        if paid:
            out.append(
                WindowRecord(
                    {
                        "event": "Payment Captured",
                        "source": "backend",
                        "platform": "server",
                        "app_version": "unknown",
                    },
                    t,
                    t + 60,
                    count=paid,
                    distinct_users=paid,
                )
            )
    return out


def build(path: Path) -> Path:
    with HistoryStore(path) as store:
        store.add_windows(records())
        store.add_alerts([{**ALERT, "state": "firing", "ended_at": None}, ALERT])
    return path
