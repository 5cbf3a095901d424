"""Merging the window flushes of several aggregate partitions (pure: no Kafka, no Faust).

Each partition of events.valid has its own `WindowAggregator`; events of one user share a
partition (the partition key is the user's id), so the partial records of one series and window
simply add up: counts, distinct users, violations, repeats, quarantined events, numerators
and denominators.

A *flush* is what one aggregate partition publishes: its records and `closed_until`, the time
below which it will never emit again. `WindowMerger` releases a window once every partition that
has flushed is past it. A partition that has sent nothing for `idle_grace_seconds` of *wall*
time (`now`, passed in by the caller) is left out, so that an idle partition does not stall
detection; its later records for released windows are counted in `dropped_late`. (A lag in
event time is no sign of idleness: while a backlog is read, partitions race ahead of each
other by hours.)

Revision records (late events of a window a partition already closed) are never summed into
the window's own records and never dropped as late: they are released with the first release
after their window's, so that a window's records always reach the detectors before its
revisions, and never in the same call.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

from detectors.records import WindowRecord

_RECORD_FIELDS = tuple(WindowRecord.__dataclass_fields__)


def record_dict(record: WindowRecord) -> dict[str, Any]:
    """`record.to_dict()` without `dataclasses.asdict`'s deep copy (a hot path)."""
    out = {name: getattr(record, name) for name in _RECORD_FIELDS}
    out["series"] = dict(record.series)
    out["violation_codes"] = dict(record.violation_codes)
    return out


def merge_records(records: Iterable[WindowRecord]) -> list[WindowRecord]:
    """Sum the partial records of the same series and window (first-seen order kept); a
    revision is summed with revisions only."""
    merged: dict[tuple[str, float, bool], WindowRecord] = {}
    for rec in records:
        key = (rec.series_key(), rec.window_start, rec.revision)
        into = merged.get(key)
        if into is None:
            merged[key] = WindowRecord.from_dict(record_dict(rec))  # a copy: `rec` stays as is
            continue
        into.count += rec.count
        into.distinct_users += rec.distinct_users
        if into.arrivals is not None or rec.arrivals is not None:
            into.arrivals = into.arriving_users + rec.arriving_users
        into.violations += rec.violations
        into.repeats += rec.repeats
        into.quarantined += rec.quarantined
        into.numerator += rec.numerator
        into.denominator += rec.denominator
        into.planned = into.planned and rec.planned
        codes = Counter(into.violation_codes)
        codes.update(rec.violation_codes)
        into.violation_codes = dict(sorted(codes.items()))
    return list(merged.values())


class WindowMerger:
    """Collects flushes from partitions; `add` returns the merged records of released windows."""

    def __init__(self, idle_grace_seconds: float = 120.0) -> None:
        self.idle_grace = idle_grace_seconds
        self.closed: dict[str, float] = {}  # partition -> closed_until
        self.seen_at: dict[str, float] = {}  # partition -> wall time of its last flush
        self.pending: dict[float, list[WindowRecord]] = {}
        self.revisions: list[WindowRecord] = []  # revisions held until their window is released
        self.released_until = -math.inf
        self.dropped_late = 0

    def add(
        self, partition: str, closed_until: float, records: list[WindowRecord], now: float = 0.0
    ) -> list[WindowRecord]:
        """Take one flush (`now`: wall-clock seconds); return the records of released windows."""
        previous = self.closed.get(partition, -math.inf)
        self.closed[partition] = max(previous, closed_until)
        self.seen_at[partition] = now
        before = self.released_until
        for rec in records:
            if rec.revision:
                self.revisions.append(rec)
                continue
            if rec.window_end <= self.released_until:
                self.dropped_late += 1
                continue
            self.pending.setdefault(rec.window_start, []).append(rec)
        active = [
            c for p, c in self.closed.items() if now - self.seen_at.get(p, now) <= self.idle_grace
        ]
        horizon = min(active, default=max(self.closed.values()))
        released: list[WindowRecord] = []
        for start in sorted(self.pending):
            if self.pending[start][0].window_end > horizon:
                break
            released.extend(merge_records(self.pending.pop(start)))
        self.released_until = max(self.released_until, horizon)
        if self.revisions:  # those of windows released before this call
            ready = [r for r in self.revisions if r.window_end <= before]
            if ready:
                self.revisions = [r for r in self.revisions if r.window_end > before]
                released.extend(merge_records(ready))
        return released

    def to_state(self) -> dict[str, Any]:
        return {
            "closed": self.closed,
            "pending": [[s, [record_dict(r) for r in recs]] for s, recs in self.pending.items()],
            "revisions": [record_dict(r) for r in self.revisions],
            "released_until": None if self.released_until == -math.inf else self.released_until,
            "dropped_late": self.dropped_late,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.closed = {k: float(v) for k, v in state["closed"].items()}
        self.pending = {
            float(s): [WindowRecord.from_dict(r) for r in recs] for s, recs in state["pending"]
        }
        self.revisions = [WindowRecord.from_dict(r) for r in state.get("revisions", [])]
        released = state["released_until"]
        self.released_until = -math.inf if released is None else float(released)
        self.dropped_late = int(state["dropped_late"])
