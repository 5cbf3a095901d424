"""Bounded memory of business keys: was this key seen within its horizon?

The validate stage asks a `KeyStore` about every event that carries a business key (a plan
`unique` key, or the automatic "same payload" key of `tracking_plan.business_keys`). Keys are
64-bit hashes (`key_hash`), so a huge or odd value costs no more memory than a short one.

    store = KeyStore(max_entries=100_000)
    store.seen(key_hash(b"..."), ts=received_at, horizon=86_400.0)  # False, then True

Semantics: `seen(key, ts, horizon)` is True when `key` was recorded with the same `horizon` at
most `horizon` seconds before `ts`, and records it at `ts` (a repeat refreshes it: "not seen in
the last 24h" counts from the latest sighting). Times are made monotonic: a `ts` older than the
latest time seen is taken as that latest time (the caller passes reception times, which only
drift back by clock skew between collectors), and a non-finite one likewise.

Memory, bounded and stated: one insertion-ordered table (`OrderedDict`) per distinct horizon,
int hash -> float time, oldest first. Entries older than their horizon are dropped as time moves
on (checked once a second of reception time), and at most `max_entries` entries are kept in
all: beyond that the oldest sighting (of any horizon) is forgotten first. Measured with
tracemalloc on CPython 3.11 in steady state (full, evicting): about 215 bytes per entry (180 for
the table's slot, order links and slack, 36 for the hash int; the times are the reception times
the envelopes of a batch share), so 100,000 entries take about 21 MB. A snapshot (`to_state`)
takes 16 bytes per entry (21 in base64). The horizon actually held is min(horizon, max_entries /
new keys per second): forgetting early can only miss a repeat, never invent one.

False positives: two different keys share a 64-bit hash with probability about n² / 2⁶⁵ among n
live keys (3e-10 for the default 100,000): a wrong `duplicate_key` is that unlikely.

Pure: no clock, no I/O; deterministic (xxHash's XXH3, not Python's randomised `hash`), so
answers and snapshots are the same in every process and after a restart.
"""

from __future__ import annotations

import base64
import math
import sys
from array import array
from collections import OrderedDict
from itertools import pairwise
from typing import Any

import xxhash

_STATE_VERSION = 1
SWEEP_EVERY = 1.0  # seconds of (reception) time between two drops of aged-out entries
_isfinite = math.isfinite
key_hash = xxhash.xxh3_64_intdigest  # bytes -> int in [0, 2**64): stable across versions
"""The 64-bit hash of a key's canonical bytes (XXH3, seed 0)."""


class KeyStore:
    """`seen(key, ts, horizon)`: was the 64-bit `key` recorded within `horizon` seconds before
    `ts`? Records it at `ts` either way. At most `max_entries` keys are remembered."""

    __slots__ = ("_latest", "_next_sweep", "_size", "_tables", "max_entries")

    def __init__(self, max_entries: int = 100_000) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a whole number ≥ 1, not {max_entries!r}")
        self.max_entries = max_entries
        self._tables: dict[float, OrderedDict[int, float]] = {}  # horizon -> key -> last seen
        self._size = 0
        self._latest = -math.inf
        self._next_sweep = -math.inf  # when to drop what aged out next (`SWEEP_EVERY`)

    def __len__(self) -> int:
        return self._size

    @property
    def latest(self) -> float:
        """The latest time recorded (-inf before any)."""
        return self._latest

    def seen(self, key: int, ts: float, horizon: float) -> bool:
        """True if `key` was recorded (with this `horizon`) at most `horizon` seconds before
        `ts`; records it at `ts` (see the module docstring for the time rules)."""
        if ts > self._latest:  # NaN compares False: taken as the latest
            if ts == math.inf:
                ts = self._latest if self._latest > -math.inf else 0.0
            self._latest = ts
            if ts >= self._next_sweep:
                self._sweep(ts)
        else:
            ts = self._latest if self._latest > -math.inf else 0.0
        table = self._tables.get(horizon)
        if table is None:
            if not (_finite_number(horizon) and horizon > 0):
                raise ValueError(f"horizon must be a positive number of seconds, not {horizon!r}")
            table = self._tables[horizon] = OrderedDict()
        previous = table.get(key)
        table[key] = ts
        if previous is not None:
            table.move_to_end(key)
            return ts - previous <= horizon
        self._size += 1
        if self._size > self.max_entries:
            self._evict_oldest()
        return False

    def _sweep(self, now: float) -> None:
        """Drop the entries last seen more than their horizon before `now` (at the front of
        each table); the next sweep is due `SWEEP_EVERY` seconds later. Between sweeps an
        entry may outlive its horizon by that much: answers compare times, so they are exact."""
        self._next_sweep = now + SWEEP_EVERY
        for horizon, table in self._tables.items():
            cutoff = now - horizon
            while table:
                oldest = next(iter(table))
                if table[oldest] >= cutoff:
                    break
                del table[oldest]
                self._size -= 1

    def _evict_oldest(self) -> None:
        """Forget the oldest sightings (of any horizon) until at most `max_entries` are left."""
        tables = [t for t in self._tables.values() if t]
        while self._size > self.max_entries:
            oldest = min(tables, key=lambda t: t[next(iter(t))]) if len(tables) > 1 else tables[0]
            oldest.popitem(last=False)
            self._size -= 1
            if not oldest:
                tables.remove(oldest)

    # ---------------------------------------------------------------- state

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot: per horizon, the keys and times in order, packed as
        base64 of little-endian uint64 / float64 arrays (16 bytes per entry)."""
        return {
            "version": _STATE_VERSION,
            "max_entries": self.max_entries,
            "latest": None if self._latest == -math.inf else self._latest,
            "tables": [
                {
                    "horizon": horizon,
                    "keys": _pack("Q", table.keys()),
                    "ts": _pack("d", table.values()),
                }
                for horizon, table in self._tables.items()
                if table
            ],
        }

    @classmethod
    def from_state(cls, state: object) -> KeyStore:
        """Rebuild a `KeyStore` from `to_state()` output; ValueError when `state` is not one."""
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"not a KeyStore state (expected a dict with version {_STATE_VERSION})"
            )
        store = cls(state.get("max_entries"))  # type: ignore[arg-type]
        latest = state.get("latest")
        if latest is not None and not _finite_number(latest):
            raise ValueError("KeyStore state: 'latest' must be a finite number or null")
        store._latest = -math.inf if latest is None else float(latest)
        tables = state.get("tables")
        if not isinstance(tables, list):
            raise ValueError("KeyStore state: 'tables' must be a list")
        for item in tables:
            if not isinstance(item, dict) or not _finite_number(item.get("horizon")):
                raise ValueError("KeyStore state: each table needs a finite 'horizon'")
            horizon = float(item["horizon"])
            if horizon <= 0 or horizon in store._tables:
                raise ValueError(f"KeyStore state: bad or repeated horizon {horizon!r}")
            keys, times = _unpack("Q", item.get("keys")), _unpack("d", item.get("ts"))
            if len(keys) != len(times):
                raise ValueError("KeyStore state: 'keys' and 'ts' differ in length")
            if any(not _isfinite(t) for t in times) or any(a > b for a, b in pairwise(times)):
                raise ValueError("KeyStore state: times must be finite and in order")
            table = store._tables[horizon] = OrderedDict(zip(keys, times, strict=True))
            if len(table) != len(keys):
                raise ValueError("KeyStore state: a key is listed twice")
            store._size += len(table)
            if times:
                store._latest = max(store._latest, times[-1])
        if store._size > store.max_entries:
            store._evict_oldest()
        return store


def _pack(code: str, values: Any) -> str:
    packed = array(code, values)
    if sys.byteorder == "big":  # pragma: no cover - the snapshots are little-endian everywhere
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def _unpack(code: str, text: object) -> array:
    if not isinstance(text, str):
        raise ValueError("KeyStore state: packed arrays must be base64 text")
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"KeyStore state: bad base64 ({exc})") from None
    if len(data) % 8:
        raise ValueError("KeyStore state: packed arrays hold 8 bytes per entry")
    values = array(code)
    values.frombytes(data)
    if sys.byteorder == "big":  # pragma: no cover
        values.byteswap()
    return values


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


__all__ = ["KeyStore", "key_hash"]
