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

Memory, bounded and stated: per distinct horizon, two generations of keys (plain dicts, int
hash -> float time): the current one, started less than a horizon ago, and the one before it.
When the current generation is a horizon old it becomes the previous one and the previous one is
forgotten, so a key is kept between one and two horizons after its latest sighting (a repeat
moves it into the current generation). At most `max_entries` keys are kept in all: a generation
that reaches `max_entries // 2` keys is rotated early, and beyond `max_entries` the oldest
generation (of any horizon) is forgotten first, as a whole. Measured with tracemalloc on CPython
3.11, at the peak of a full store's cycle: about 100 bytes per entry of `max_entries` (66 for the
dict slots, slack and resizing, 36 for the hash int; the times are the reception times the
envelopes of a batch share), so 100,000 entries take about 10 MB. A snapshot (`to_state`) takes
16 bytes per entry (21 in base64). Under heavy traffic the horizon actually held is at least
min(horizon, max_entries / 2 / new keys per second): forgetting early can only miss a repeat,
never invent one.

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
from typing import Any

import xxhash

_STATE_VERSION = 1
_isfinite = math.isfinite
_INF = math.inf
key_hash = xxhash.xxh3_64_intdigest  # bytes -> int in [0, 2**64): stable across versions
"""The 64-bit hash of a key's canonical bytes (XXH3, seed 0)."""


class _Table:
    """The keys of one horizon: `current` (key -> latest sighting), the generation started at
    `started`, less than a horizon before the latest time, and `previous`, the one before."""

    __slots__ = ("current", "previous", "started")

    def __init__(self, started: float) -> None:
        self.current: dict[int, float] = {}
        self.previous: dict[int, float] = {}
        self.started = started


class KeyStore:
    """`seen(key, ts, horizon)`: was the 64-bit `key` recorded within `horizon` seconds before
    `ts`? Records it at `ts` either way. At most `max_entries` keys are remembered."""

    __slots__ = ("_cap", "_latest", "_size", "_tables", "max_entries")

    def __init__(self, max_entries: int = 100_000) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a whole number ≥ 1, not {max_entries!r}")
        self.max_entries = max_entries
        self._cap = max(1, max_entries // 2)  # keys of one generation before it is rotated
        self._tables: dict[float, _Table] = {}  # by horizon
        self._size = 0
        self._latest = -_INF

    def __len__(self) -> int:
        return self._size

    @property
    def latest(self) -> float:
        """The latest time recorded (-inf before any)."""
        return self._latest

    def seen(self, key: int, ts: float, horizon: float) -> bool:
        """True if `key` was recorded (with this `horizon`) at most `horizon` seconds before
        `ts`; records it at `ts` (see the module docstring for the time rules)."""
        latest = self._latest
        if ts > latest and ts != _INF:  # NaN compares False: taken as the latest
            self._latest = ts
        else:
            ts = latest if latest > -_INF else 0.0
        table = self._tables.get(horizon)
        if table is None:
            if not (_finite_number(horizon) and horizon > 0):
                raise ValueError(f"horizon must be a positive number of seconds, not {horizon!r}")
            table = self._tables[horizon] = _Table(ts)
        elif ts - table.started >= horizon:
            self._rotate(table, ts, horizon)
        current = table.current
        last = current.get(key)
        current[key] = ts
        if last is None:
            last = table.previous.pop(key, None)
            if last is None:  # a new key
                self._size += 1
                if len(current) >= self._cap or self._size > self.max_entries:
                    self._shed(table, ts)
                return False
        return ts - last <= horizon

    def _rotate(self, table: _Table, ts: float, horizon: float) -> None:
        """Start a new generation at `ts`: the current one becomes the previous one, which is
        forgotten; both are when the current one started two horizons ago or more (its keys
        were all recorded less than a horizon after its start, so none is within a horizon
        of `ts`)."""
        dropped = len(table.previous)
        if ts - table.started >= 2 * horizon:
            dropped += len(table.current)
            table.previous = {}
        else:
            table.previous = table.current
        table.current = {}
        table.started = ts
        self._size -= dropped

    def _shed(self, table: _Table, ts: float) -> None:
        """Keep the bounds: rotate `table` early when its current generation is full, then
        forget the oldest generations while more than `max_entries` keys are left."""
        if len(table.current) >= self._cap:
            self._size -= len(table.previous)
            table.previous, table.current, table.started = table.current, {}, ts
        while self._size > self.max_entries:
            tables = [t for t in self._tables.values() if t.previous]
            if tables:  # the previous generation that ended first
                oldest = min(tables, key=lambda t: t.started)
                self._size -= len(oldest.previous)
                oldest.previous = {}
            else:  # only current generations: the one started first goes
                oldest = min(
                    (t for t in self._tables.values() if t.current), key=lambda t: t.started
                )
                self._size -= len(oldest.current)
                oldest.current, oldest.started = {}, ts

    # ---------------------------------------------------------------- state

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot: per horizon, its generations' keys and times packed as
        base64 of little-endian uint64 / float64 arrays (16 bytes per entry)."""
        return {
            "version": _STATE_VERSION,
            "max_entries": self.max_entries,
            "latest": None if self._latest == -_INF else self._latest,
            "tables": [
                {
                    "horizon": horizon,
                    "started": table.started,
                    "current": _pack_generation(table.current),
                    "previous": _pack_generation(table.previous),
                }
                for horizon, table in self._tables.items()
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
        store._latest = -_INF if latest is None else float(latest)
        tables = state.get("tables")
        if not isinstance(tables, list):
            raise ValueError("KeyStore state: 'tables' must be a list")
        for item in tables:
            if not isinstance(item, dict) or not all(
                _finite_number(item.get(k)) for k in ("horizon", "started")
            ):
                raise ValueError("KeyStore state: each table needs a finite horizon and start")
            horizon = float(item["horizon"])
            if horizon <= 0 or horizon in store._tables:
                raise ValueError(f"KeyStore state: bad or repeated horizon {horizon!r}")
            table = store._tables[horizon] = _Table(float(item["started"]))
            table.current = _unpack_generation(item.get("current"))
            table.previous = _unpack_generation(item.get("previous"))
            if not table.current.keys().isdisjoint(table.previous):
                raise ValueError("KeyStore state: a key is in both generations")
            store._size += len(table.current) + len(table.previous)
            for generation in (table.current, table.previous):
                if generation:
                    store._latest = max(store._latest, max(generation.values()))
            store._latest = max(store._latest, table.started)
        while store._size > store.max_entries:  # a state written with a larger bound
            store._shed(next(iter(store._tables.values())), store._latest)
        return store


def _pack_generation(generation: dict[int, float]) -> dict[str, str]:
    return {"keys": _pack("Q", generation.keys()), "ts": _pack("d", generation.values())}


def _unpack_generation(item: object) -> dict[int, float]:
    if not isinstance(item, dict):
        raise ValueError("KeyStore state: a generation must be {keys, ts}")
    keys, times = _unpack("Q", item.get("keys")), _unpack("d", item.get("ts"))
    if len(keys) != len(times):
        raise ValueError("KeyStore state: 'keys' and 'ts' differ in length")
    if not all(_isfinite(t) for t in times):
        raise ValueError("KeyStore state: times must be finite")
    generation = dict(zip(keys, times, strict=True))
    if len(generation) != len(keys):
        raise ValueError("KeyStore state: a key is listed twice")
    return generation


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
