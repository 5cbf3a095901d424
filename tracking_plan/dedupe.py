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

_STATE_VERSION = 2  # 1: "entries" as [message_id, ts] pairs (still read)
_isfinite = math.isfinite


class Deduper:
    """`seen(message_id, ts)` is True when `message_id` was already seen within the window.

    The ids live in an OrderedDict in insertion order (an id seen again after the window moves
    to the end), which is the order they are forgotten in; `_front_ts`, the time of the oldest,
    tells `seen` when there is anything to forget.
    """

    __slots__ = ("_front_ts", "_ids", "_latest", "max_age_seconds", "max_entries")

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
        self._front_ts = math.inf  # the time of the oldest id (`_evict` keeps it)

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
        if type(ts) is not float or not _isfinite(ts):  # rare: checked in full
            ts = self._event_time(ts)
        ids = self._ids
        previous = ids.get(message_id)
        if previous is not None:
            if abs(ts - previous) <= self.max_age_seconds:
                return True
            del ids[message_id]  # seen too long ago: new again, and now the newest
        ids[message_id] = ts
        if ts > self._latest:
            self._latest = ts
        if (  # `_evict` has nothing to do unless the oldest id changed, or is now too old
            previous is not None
            or len(ids) == 1
            or len(ids) > self.max_entries
            or self._front_ts < self._latest - self.max_age_seconds
        ):
            self._evict()
        return False

    def _event_time(self, ts: object) -> float:
        """`ts` if it is a finite number, else the latest time seen (0 before any)."""
        if not isinstance(ts, int | float) or not math.isfinite(ts):
            return self._latest if self._latest > -math.inf else 0.0
        return ts

    def _evict(self) -> None:
        """Forget the oldest ids beyond `max_entries`, then those older than the window."""
        ids = self._ids
        while len(ids) > self.max_entries:
            ids.popitem(last=False)
        horizon = self._latest - self.max_age_seconds
        while ids:
            oldest = next(iter(ids))
            if ids[oldest] >= horizon:
                self._front_ts = ids[oldest]
                return
            del ids[oldest]
        self._front_ts = math.inf

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot: the ids and their times, in insertion order."""
        return {
            "version": _STATE_VERSION,
            "max_age_seconds": self.max_age_seconds,
            "max_entries": self.max_entries,
            "ids": list(self._ids.keys()),
            "ts": list(self._ids.values()),
        }

    @classmethod
    def from_state(cls, state: object) -> Deduper:
        """Rebuild a `Deduper` from `to_state()` output (this version's or version 1's);
        ValueError when `state` is not one."""
        if not isinstance(state, dict) or state.get("version") not in (1, _STATE_VERSION):
            raise ValueError("not a Deduper state (expected a dict with version 1 or 2)")
        if state["version"] == 1:
            entries = state.get("entries")
            if not isinstance(entries, list):
                raise ValueError(
                    "Deduper state: 'entries' must be a list of [message_id, ts] pairs"
                )
        else:
            ids, times = state.get("ids"), state.get("ts")
            if not isinstance(ids, list) or not isinstance(times, list) or len(ids) != len(times):
                raise ValueError("Deduper state: 'ids' and 'ts' must be lists of the same length")
            entries = zip(ids, times, strict=True)
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
