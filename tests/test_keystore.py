"""The business key store: horizon, refresh, bounds, eviction order, snapshots, hostile input."""

from __future__ import annotations

import base64
import math
from array import array

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracking_plan.keystore import KeyStore, key_hash

DAY = 86_400.0
HORIZONS = (60.0, 3600.0, DAY)


class Naive:
    """The reference: every sighting kept forever; times made monotonic like the store's."""

    def __init__(self) -> None:
        self.last: dict[tuple[float, int], float] = {}
        self.latest = -math.inf

    def seen(self, key: int, ts: float, horizon: float) -> bool:
        if ts > self.latest and ts != math.inf:
            self.latest = ts
        ts = self.latest if self.latest > -math.inf else 0.0
        previous = self.last.get((horizon, key))
        self.last[(horizon, key)] = ts
        return previous is not None and ts - previous <= horizon


# (key, seconds since the previous call, horizon); few keys so that repeats are common
_CALLS = st.lists(
    st.tuples(
        st.integers(0, 12),
        st.sampled_from([0.0, 0.5, 1.0, 30.0, 59.0, 60.0, 61.0, 3599.0, 3600.0, 7200.0, DAY]),
        st.sampled_from(HORIZONS),
    ),
    max_size=120,
)


def _run(calls, store, naive=None, back: float = 0.0):
    """Feed `calls` (clock moving forward by each step; every third call `back` seconds in the
    past) to `store` (and `naive`); the answers."""
    answers = []
    now = 1_790_000_000.0
    for i, (key, step, horizon) in enumerate(calls):
        now += step
        ts = now - back if i % 3 == 2 else now
        got = store.seen(key_hash(b"k%d" % key), ts, horizon)
        if naive is not None:
            assert got == naive.seen(key_hash(b"k%d" % key), ts, horizon), (i, key, ts, horizon)
        answers.append(got)
    return answers


@settings(max_examples=300, deadline=None)
@given(_CALLS, st.sampled_from([0.0, 5.0, 4000.0]))
def test_answers_equal_a_naive_reference_while_nothing_is_evicted(calls, back):
    _run(calls, KeyStore(max_entries=10_000), Naive(), back)


@settings(max_examples=300, deadline=None)
@given(_CALLS, st.integers(1, 8))
def test_memory_never_exceeds_the_bound_and_eviction_only_misses_repeats(calls, bound):
    store, naive = KeyStore(max_entries=bound), Naive()
    now = 1_790_000_000.0
    for key, step, horizon in calls:
        now += step
        h = key_hash(b"k%d" % key)
        got, truth = store.seen(h, now, horizon), naive.seen(h, now, horizon)
        assert len(store) <= bound
        assert not got or truth  # forgetting early may miss a repeat, never invent one


@settings(max_examples=200, deadline=None)
@given(_CALLS, _CALLS)
def test_a_snapshot_round_trip_gives_the_same_answers_after_it(first, then):
    store = KeyStore(max_entries=20)
    _run(first, store)
    restored = KeyStore.from_state(orjson.loads(orjson.dumps(store.to_state())))
    assert len(restored) == len(store)
    assert restored.to_state() == store.to_state()
    assert _run(then, restored) == _run(then, store)


def test_a_key_repeats_within_its_horizon_counted_from_its_latest_sighting():
    store, k = KeyStore(), key_hash(b"ord_1")
    t = 1_790_000_000.0
    assert store.seen(k, t, DAY) is False
    assert store.seen(k, t + 23 * 3600, DAY) is True
    assert store.seen(k, t + 25 * 3600, DAY) is True  # 2 h after the latest sighting
    assert store.seen(k, t + 49 * 3600 + 1, DAY) is False  # a day and a second after it
    assert store.seen(k, t + 49 * 3600 + 1 + DAY, DAY) is True  # exactly a day: still within


def test_horizons_are_separate_and_the_oldest_generation_is_forgotten_first():
    store = KeyStore(max_entries=4)  # generations of at most 2 keys
    a, b, c, d = (key_hash(x) for x in (b"a", b"b", b"c", b"d"))
    t = 1_790_000_000.0
    store.seen(a, t, DAY)
    store.seen(b, t + 1, 3600.0)
    store.seen(a, t + 2, 3600.0)  # the same hash with another horizon is another entry
    assert len(store) == 3  # the 1-hour generation is full: rotated early (nothing lost)
    assert store.seen(b, t + 3, 3600.0) is True  # found in the previous generation
    store.seen(c, t + 4, DAY)
    assert len(store) == 4
    store.seen(d, t + 5, 60.0)  # over the bound: the previous 1-hour generation goes (a)
    assert len(store) == 4
    assert store.seen(a, t + 6, DAY) is True  # the day's generations are still there
    assert store.seen(a, t + 7, 3600.0) is False  # gone; now the oldest (c, a day) goes
    assert store.seen(c, t + 8, DAY) is False
    assert len(store) <= 4


def test_keys_are_kept_between_one_and_two_horizons():
    store = KeyStore()
    t = 1_790_000_000.0
    for i in range(100):
        store.seen(key_hash(b"%d" % i), t + i, 60.0)
    assert len(store) == 100  # t+0..59 in the previous generation, t+60..99 in the current
    store.seen(key_hash(b"x"), t + 120, 60.0)
    assert len(store) == 41  # t+60..99 and x
    assert store.seen(key_hash(b"60"), t + 120, 60.0) is True  # exactly a horizon
    store.seen(key_hash(b"y"), t + 1000, 60.0)
    assert len(store) == 1


def test_odd_times_are_taken_as_the_latest_time():
    store, k = KeyStore(), key_hash(b"k")
    assert store.seen(k, math.nan, 60.0) is False  # before any time: 0
    t = 1_790_000_000.0
    assert store.seen(k, t, 60.0) is False
    for odd in (math.nan, math.inf, -math.inf, t - 10 * DAY):  # all read as t
        assert store.seen(k, odd, 60.0) is True
    assert store.latest == t


@pytest.mark.parametrize("bound", [0, -1, True, 1.5, "10", None])
def test_a_bad_bound_is_refused(bound):
    with pytest.raises(ValueError, match="max_entries"):
        KeyStore(bound)  # type: ignore[arg-type]


@pytest.mark.parametrize("horizon", [0, -1.0, math.nan, math.inf, True, "1h"])
def test_a_bad_horizon_is_refused(horizon):
    with pytest.raises(ValueError, match="horizon"):
        KeyStore().seen(1, 1.0, horizon)  # type: ignore[arg-type]


def test_key_hash_is_stable_across_processes_and_releases():
    # XXH3-64 of these bytes, seed 0 (a snapshot written by one process is read by another)
    assert key_hash(b"") == 0x2D06800538D394C2
    assert key_hash(b"order") == key_hash(b"order") != key_hash(b"order ")
    assert 0 <= key_hash("é🎉".encode()) < 2**64


def _packed(code: str, *values) -> str:
    return base64.b64encode(array(code, values).tobytes()).decode()


def _state(generation: str = "current", **fields):
    store = KeyStore(10)
    store.seen(key_hash(b"a"), 1.0, 60.0)
    store.seen(key_hash(b"b"), 2.0, 60.0)
    state = store.to_state()
    state["tables"][0][generation].update(fields)
    return state


def _table(**fields):
    empty = {"keys": "", "ts": ""}
    table = {"horizon": 60.0, "started": 1.0, "current": empty, "previous": empty, **fields}
    return {"version": 1, "max_entries": 5, "tables": [table]}


def _both():
    state = _state()
    state["tables"][0]["previous"] = dict(state["tables"][0]["current"])
    return state


@pytest.mark.parametrize(
    "state",
    [
        None,
        [],
        {"version": 99},
        {"version": 1, "max_entries": 0, "tables": []},
        {"version": 1, "max_entries": 5, "latest": "x", "tables": []},
        {"version": 1, "max_entries": 5, "tables": {}},
        _table(horizon=math.nan),
        _table(horizon=-1.0),
        _table(started=None),
        _table(current=[]),
        {**_table(), "tables": _table()["tables"] * 2},  # a horizon twice
        _state(keys="not base64!"),
        _state(keys="AAAA"),  # 3 bytes: not whole entries
        _state(ts=_packed("d", 1.0)),  # fewer times than keys
        _state(keys=_packed("Q", 7, 7)),  # a key twice
        _state(ts=_packed("d", 1.0, math.nan)),
        _state(ts=_packed("d", 1.0, math.inf)),
        _both(),  # a key in both generations
    ],
)
def test_a_broken_snapshot_is_refused_with_a_value_error(state):
    with pytest.raises(ValueError):
        KeyStore.from_state(state)


def test_a_snapshot_larger_than_its_bound_is_cut_to_it():
    store = KeyStore(100)
    for i in range(50):
        store.seen(key_hash(b"%d" % i), 1_790_000_000.0 + i, DAY)
    state = store.to_state()
    state["max_entries"] = 10
    restored = KeyStore.from_state(state)
    assert len(restored) <= 10
    assert restored.seen(key_hash(b"0"), 1_790_000_100.0, DAY) is False  # the oldest went
