"""Duplicate detection by messageId over a bounded window."""

from __future__ import annotations

import math
from collections import OrderedDict

import orjson
import pytest
from hypothesis import example, given, settings
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


def test_an_id_seen_again_long_before_its_first_sighting_moves_to_the_end() -> None:
    """Forgetting goes by insertion order: once the oldest id moves to the end, the ones after
    it that are out of the window go, and so does it."""
    d = Deduper(max_age_seconds=10)
    assert not d.seen("k", 100.0)
    assert not d.seen("j", 85.0)  # out of the window, but not the oldest id: kept for now
    assert len(d) == 2
    assert not d.seen("k", 80.0)  # 20 s before its first sighting: new again, moved last
    assert len(d) == 0


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
    assert restored.to_state()["ids"][:-1] == d.to_state()["ids"]
    assert restored.to_state()["ts"][:-1] == d.to_state()["ts"]


def test_version_1_state_still_loads() -> None:
    """Snapshots written before version 2 (``entries``: [id, ts] pairs) restore the same ids,
    in the same order, and answer the same as before."""
    old = {
        "version": 1,
        "max_age_seconds": 30.0,
        "max_entries": 3,
        "entries": [["m1", 1000.0], ["m3", 1002], ["m2", 1001.5], ["m0", 960.0]],
    }
    restored = Deduper.from_state(old)
    assert (restored.max_age_seconds, restored.max_entries, len(restored)) == (30.0, 3, 3)
    state = restored.to_state()
    assert (state["version"], state["ids"], state["ts"]) == (
        2,
        ["m3", "m2", "m0"],  # at most 3: the oldest went first
        [1002.0, 1001.5, 960.0],
    )
    assert Deduper.from_state(state).to_state() == state
    assert restored.seen("m3", 1010.0)
    assert not restored.seen("m0", 1010.0)  # 50 s after its last sighting: new again, last
    assert not restored.seen("m1", 1010.0)
    assert restored.to_state()["ids"] == ["m2", "m0", "m1"]


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
        {"version": 2, "ids": ["m"], "ts": [], "max_age_seconds": 1, "max_entries": 1},
        {"version": 2, "ids": {}, "ts": {}, "max_age_seconds": 1, "max_entries": 1},
        {"version": 2, "ids": [1], "ts": [2.0], "max_age_seconds": 1, "max_entries": 1},
        {"version": 2, "ids": ["m"], "ts": [math.inf], "max_age_seconds": 1, "max_entries": 1},
        {"version": 3, "ids": [], "ts": [], "max_age_seconds": 1, "max_entries": 1},
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


class OrderedDictDeduper:
    """The straightforward implementation `Deduper` must answer like (evicting after every
    new id, from an OrderedDict)."""

    def __init__(self, max_age: float, cap: int) -> None:
        self.max_age, self.cap = max_age, cap
        self.ids: OrderedDict[str, float] = OrderedDict()
        self.latest = -math.inf

    def seen(self, message_id: str, ts: float) -> bool:
        if not math.isfinite(ts):
            ts = self.latest if self.latest > -math.inf else 0.0
        previous = self.ids.get(message_id)
        if previous is not None and abs(ts - previous) <= self.max_age:
            return True
        if previous is not None:
            del self.ids[message_id]
        self.ids[message_id] = ts
        self.latest = max(self.latest, ts)
        while len(self.ids) > self.cap:
            self.ids.popitem(last=False)
        while self.ids and next(iter(self.ids.values())) < self.latest - self.max_age:
            self.ids.popitem(last=False)
        return False


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from("abcdefghij"),
            st.one_of(st.floats(0, 100), st.sampled_from([math.nan, math.inf])),
        ),
        max_size=80,
    ),
    st.floats(1, 30),
    st.integers(1, 6),
    st.integers(0, 80),
)
@example([("x", 99.0), ("y", 0.0), ("y", 50.0), ("y", 0.0), ("y", 50.0), ("z", 200.0)], 10.0, 5, 80)
def test_answers_and_keeps_what_the_straightforward_implementation_does(
    events: list[tuple[str, float]], max_age: float, cap: int, snapshot_at: int
) -> None:
    """With evictions by age and by count, ids seen again after the window, odd times, a
    snapshot restored midway: same answers, same ids in the same order."""
    d, model = Deduper(max_age, cap), OrderedDictDeduper(max_age, cap)
    for i, (message_id, ts) in enumerate(events):
        if i == snapshot_at:  # a restored deduper knows the latest time of the ids it holds
            d = Deduper.from_state(orjson.loads(orjson.dumps(d.to_state())))
            model.latest = max(model.ids.values(), default=-math.inf)
        assert d.seen(message_id, ts) == model.seen(message_id, ts)
        state = d.to_state()
        assert list(zip(state["ids"], state["ts"], strict=True)) == list(model.ids.items())


def test_ids_seen_again_and_again_after_the_window_move_behind_the_oldest() -> None:
    """An id bouncing between two times further apart than the window is new every time and
    moves to the end, behind an oldest id that stays."""
    d = Deduper(max_age_seconds=10)
    d.seen("stays", 1000.0)
    for i in range(20_000):
        assert not d.seen("bounces", 50.0 if i % 2 else 0.0)
    assert d.to_state()["ids"] == ["stays", "bounces"]
