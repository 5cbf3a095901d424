"""Duplicate detection by messageId over a bounded window."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracking_plan.dedupe import Deduper


def test_second_sighting_is_a_duplicate() -> None:
    d = Deduper()
    assert d.seen("m1", 100.0) is False
    assert d.seen("m1", 100.0) is True
    assert d.seen("m1", 150.0) is True
    assert d.seen("m2", 150.0) is False
    assert len(d) == 2


def test_window_by_event_time() -> None:
    d = Deduper(max_age_seconds=60)
    assert not d.seen("m1", 1000.0)
    assert d.seen("m1", 1060.0)  # exactly max_age later: still inside
    assert not d.seen("m1", 1121.0)  # more than max_age after the first sighting: new again
    assert d.seen("m1", 1130.0)


def test_old_entries_are_evicted_as_time_moves_on() -> None:
    d = Deduper(max_age_seconds=10)
    for i in range(100):
        d.seen(f"m{i}", float(i))
    assert len(d) == 11  # ids of t = 89..99
    assert not d.seen("m0", 100.0)  # forgotten


def test_memory_is_bounded_by_max_entries() -> None:
    d = Deduper(max_entries=3)
    for i in range(10):
        assert not d.seen(f"m{i}", 0.0)
    assert len(d) == 3
    assert d.seen("m9", 0.0) and d.seen("m7", 0.0)
    assert not d.seen("m0", 0.0)  # the oldest were evicted first


@pytest.mark.parametrize("bad_id", [None, "", 42, b"m1", ["m1"]])
def test_ids_that_cannot_be_deduplicated(bad_id: object) -> None:
    d = Deduper()
    assert not d.seen(bad_id, 1.0)  # type: ignore[arg-type]
    assert not d.seen(bad_id, 1.0)  # type: ignore[arg-type]
    assert len(d) == 0


@pytest.mark.parametrize("ts", [math.nan, math.inf, -math.inf, None, "now"])
def test_odd_times_do_not_break_the_window(ts: object) -> None:
    d = Deduper(max_age_seconds=10)
    d.seen("a", 100.0)
    assert not d.seen("b", ts)  # type: ignore[arg-type]
    assert d.seen("b", 100.0)
    assert d.seen("a", 100.0)


def test_state_round_trip_through_json() -> None:
    d = Deduper(max_age_seconds=30, max_entries=100)
    for i in range(50):
        d.seen(f"m{i}", 1000.0 + i)
    state = orjson.loads(orjson.dumps(d.to_state()))
    restored = Deduper.from_state(state)
    assert (restored.max_age_seconds, restored.max_entries, len(restored)) == (30.0, 100, 31)
    assert restored.seen("m49", 1049.0)
    assert not restored.seen("m0", 1049.0)
    assert restored.to_state()["entries"][:-1] == d.to_state()["entries"]


@pytest.mark.parametrize(
    "state",
    [
        None,
        [],
        {},
        {"version": 2, "entries": []},
        {"version": 1, "entries": {}},
        {"version": 1, "entries": [["m", "x"]], "max_age_seconds": 1, "max_entries": 1},
        {"version": 1, "entries": [["m"]], "max_age_seconds": 1, "max_entries": 1},
        {"version": 1, "entries": [[1, 2.0]], "max_age_seconds": 1, "max_entries": 1},
        {"version": 1, "entries": [], "max_age_seconds": -1, "max_entries": 1},
        {"version": 1, "entries": [], "max_age_seconds": 1, "max_entries": 0},
    ],
)
def test_bad_state_is_refused(state: object) -> None:
    with pytest.raises(ValueError):
        Deduper.from_state(state)


@pytest.mark.parametrize(
    ("age", "entries"), [(0, 1), (-1, 1), (math.nan, 1), (1, 0), (1, 1.5), (True, 1)]
)
def test_bad_settings_are_refused(age: float, entries: int) -> None:
    with pytest.raises(ValueError):
        Deduper(age, entries)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abcdefgh"), st.floats(0, 1000)), max_size=60),
    st.integers(1, 8),
)
def test_matches_a_simple_model_and_stays_bounded(
    events: list[tuple[str, float]], cap: int
) -> None:
    """Without evictions, `seen` answers exactly like a naive model; memory never exceeds cap."""
    d = Deduper(max_age_seconds=1e9, max_entries=cap)
    naive: set[str] = set()
    for message_id, ts in events:
        duplicate = d.seen(message_id, ts)
        if len(naive | {message_id}) <= cap:  # nothing could have been evicted yet
            assert duplicate == (message_id in naive)
        naive.add(message_id)
        assert len(d) <= cap
