"""Which app versions each source runs, and which of them send which events.

The engine needs three facts about releases, all from the volume records it is given:
- when each app version was first seen on its source (any event): a version first seen after
  the source's first ones, within `release_hours` or its source's newest, is a release
  arriving (`fresh`);
- when each version last sent each event on its source: an older version that stops sending
  an event a newer release sends is superseded, not broken (`superseded`);
- both forgotten once a version has been silent for `forget_days` (checked hourly), so the
  memory is bounded by the versions in use.

Pure: no Kafka, no clock; JSON-safe state.

    >>> def sent(ts, version, event="Order Placed"):
    ...     where = {"event": event, "source": "ios_app", "app_version": version}
    ...     return WindowRecord(where, ts, ts + 60.0, count=1)
    >>> r = Releases(newer=3600.0)
    >>> r.note(0.0, [sent(0.0, "2.0")])
    >>> r.note(7200.0, [sent(7200.0, "2.1")])
    >>> sorted(r.fresh(since=3600.0))
    ['2.1']
    >>> r.superseded({"event": "Order Placed", "source": "ios_app", "app_version": "2.0"},
    ...              since=7200.0)
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from detectors.records import WindowRecord

DAY = 86400.0
FORGET_DAYS = 7.0  # an app version unheard of (for an event) this long is forgotten
NEWER = 3600.0  # a version first seen this long after its source's first ones is newer


class Releases:
    """First sight of each app version per source, last sending of each event per version."""

    __slots__ = ("first_seen", "forget_days", "last_sent", "newer")

    def __init__(self, newer: float = NEWER, forget_days: float = FORGET_DAYS) -> None:
        self.newer = newer  # seconds after its source's first sight that make a version newer
        self.forget_days = forget_days
        self.first_seen: dict[str, dict[str, float]] = {}  # source -> version -> first window
        # "event|source" -> version -> last window it sent the event
        self.last_sent: dict[str, dict[str, float]] = {}

    def note(self, ts: float, records: Iterable[WindowRecord]) -> None:
        """Take in one window's records (at window start `ts`); hourly, forget the versions
        unheard of for `forget_days`."""
        for rec in records:
            series = rec.series
            version, event = series.get("app_version"), series.get("event")
            if rec.kind != "volume" or version is None or event is None or rec.count <= 0:
                continue
            source = str(series.get("source"))
            self.first_seen.setdefault(source, {}).setdefault(version, ts)
            self.last_sent.setdefault(f"{event}|{source}", {})[version] = ts
        if (self.first_seen or self.last_sent) and int(ts) % 3600 == 0:
            self._forget(ts - self.forget_days * DAY)

    def _forget(self, horizon: float) -> None:
        for key in list(self.last_sent):
            kept = {v: last for v, last in self.last_sent[key].items() if last >= horizon}
            if kept:
                self.last_sent[key] = kept
            else:
                del self.last_sent[key]
        heard = {v for seen in self.last_sent.values() for v in seen}
        for key in list(self.first_seen):
            kept = {v: first for v, first in self.first_seen[key].items() if v in heard}
            if kept:
                self.first_seen[key] = kept
            else:
                del self.first_seen[key]

    def fresh(self, since: float) -> set[str]:
        """Releases arriving: app versions first seen at least `newer` seconds after their
        source's first ones (not there from the start) that are either their source's newest
        (users update to the newest release for as long as its rollout lasts: a phased release
        reaches its last users a week after its first) or first seen at `since` or later."""
        newer = self.newer
        out: set[str] = set()
        for seen in self.first_seen.values():
            if not seen:
                continue
            start = min(seen.values())
            newest = max(seen, key=lambda v: (seen[v], v))
            out.update(
                v
                for v, first in seen.items()
                if first >= start + newer and (first >= since or v == newest)
            )
        return out

    def superseded(self, series: dict[str, str], since: float) -> bool:
        """Has an app version released after this one (first seen on the source `newer` seconds
        or more later) sent the same event on the same source since `since`? A released build's
        code does not change: when an older version stops sending an event that a newer one
        sends (installs and updates always come from the newest release, users move to it),
        its users have moved on; the event is not lost. (A newer version that stops sending
        what the older ones still send is the breakage, and is never superseded this way.)"""
        version, event = series.get("app_version"), series.get("event")
        if version is None or event is None:
            return False
        source = str(series.get("source"))
        first = self.first_seen.get(source, {})
        own = first.get(version)
        if own is None:
            return False
        newer_after = own + self.newer
        return any(
            other != version and last >= since and first.get(other, -math.inf) >= newer_after
            for other, last in self.last_sent.get(f"{event}|{source}", {}).items()
        )

    def to_state(self) -> dict[str, dict[str, float]]:
        """One map: sources (first sights) and "event|source" keys (last sendings)."""
        merged = {**self.first_seen, **self.last_sent}
        return {k: dict(sorted(v.items())) for k, v in sorted(merged.items())}

    @classmethod
    def from_state(
        cls, state: dict, newer: float = NEWER, forget_days: float = FORGET_DAYS
    ) -> Releases:
        r = cls(newer, forget_days)
        for key, seen in state.items():
            versions = {str(v): float(t) for v, t in seen.items()}
            (r.last_sent if "|" in str(key) else r.first_seen)[str(key)] = versions
        return r
