"""Duplicate detection by `messageId` over a bounded window.

Delivery is at-least-once (trackers retry, Kafka consumers replay), so the same call may arrive
twice. A `Deduper` remembers the message ids it saw during the last `max_age_seconds` of event
time, and at most `max_entries` of them (the oldest are forgotten first). Pure: no clock, no
I/O; the caller passes each event's time and can persist the state with `to_state`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

_STATE_VERSION = 1


class Deduper:
    """`seen(message_id, ts)` is True when `message_id` was already seen within the window."""

    __slots__ = ("_ids", "_latest", "max_age_seconds", "max_entries")

    def __init__(self, max_age_seconds: float = 86_400, max_entries: int = 1_000_000) -> None:
        if isinstance(max_age_seconds, bool) or not (
            isinstance(max_age_seconds, int | float) and max_age_seconds > 0
        ):
            raise ValueError(f"max_age_seconds must be a positive number, not {max_age_seconds!r}")
        if not (isinstance(max_entries, int) and not isinstance(max_entries, bool)):
            raise ValueError(f"max_entries must be an integer, not {max_entries!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.max_age_seconds = float(max_age_seconds)
        self.max_entries = max_entries
        self._ids: OrderedDict[str, float] = OrderedDict()  # insertion order ~ time order
        self._latest = -math.inf  # the latest event time seen

    def __len__(self) -> int:
        return len(self._ids)

    def seen(self, message_id: str, ts: float) -> bool:
        """Record `message_id` at event time `ts` (epoch seconds); True if it is a duplicate.

        An id seen more than `max_age_seconds` before `ts` counts as new again. An empty or
        non-string id cannot be deduplicated: it is never a duplicate (and is not stored).
        A non-finite `ts` is taken as the latest time seen so far.
        """
        if type(message_id) is not str or not message_id:
            return False
        if not isinstance(ts, int | float) or not math.isfinite(ts):
            ts = self._latest if self._latest > -math.inf else 0.0
        ids = self._ids
        previous = ids.get(message_id)
        if previous is not None and abs(ts - previous) <= self.max_age_seconds:
            return True
        if previous is not None:
            del ids[message_id]
        ids[message_id] = ts
        if ts > self._latest:
            self._latest = ts
        self._evict()
        return False

    def _evict(self) -> None:
        ids = self._ids
        while len(ids) > self.max_entries:
            ids.popitem(last=False)
        horizon = self._latest - self.max_age_seconds
        while ids:
            oldest = next(iter(ids))
            if ids[oldest] >= horizon:
                break
            del ids[oldest]

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot (ids in insertion order)."""
        return {
            "version": _STATE_VERSION,
            "max_age_seconds": self.max_age_seconds,
            "max_entries": self.max_entries,
            "entries": [[message_id, ts] for message_id, ts in self._ids.items()],
        }

    @classmethod
    def from_state(cls, state: object) -> Deduper:
        """Rebuild a `Deduper` from `to_state()` output; ValueError when `state` is not one."""
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ValueError("not a Deduper state (expected a dict with version 1)")
        entries = state.get("entries")
        if not isinstance(entries, list):
            raise ValueError("Deduper state: 'entries' must be a list of [message_id, ts] pairs")
        deduper = cls(state.get("max_age_seconds"), state.get("max_entries"))  # type: ignore[arg-type]
        for entry in entries:
            if (
                not isinstance(entry, list | tuple)
                or len(entry) != 2
                or type(entry[0]) is not str
                or not isinstance(entry[1], int | float)
                or isinstance(entry[1], bool)
                or not math.isfinite(entry[1])
            ):
                raise ValueError(f"Deduper state: bad entry {entry!r:.80}")
            deduper._ids[entry[0]] = float(entry[1])
            deduper._latest = max(deduper._latest, float(entry[1]))
        deduper._evict()
        return deduper
