"""Unit tests of merging the window flushes of several partitions (pure, no Kafka)."""

from __future__ import annotations

import json

from detectors.records import WindowRecord
from streams.merge import WindowMerger, merge_records


def rec(event: str, start: float, count: int, users: int = 1, **kw) -> WindowRecord:
    return WindowRecord(
        series={"event": event, "source": "web"},
        window_start=start,
        window_end=start + 60,
        count=count,
        distinct_users=users,
        **kw,
    )


def test_merge_records_adds_partial_records_of_one_series_and_window() -> None:
    merged = merge_records(
        [
            rec("A", 0, 3, 2, violations=1, violation_codes={"wrong_type": 1}),
            rec("A", 0, 4, 3, violations=2, violation_codes={"wrong_type": 1, "too_long": 1}),
            rec("B", 0, 1),
            rec("A", 60, 5),
        ]
    )
    by_key = {(r.series["event"], r.window_start): r for r in merged}
    a = by_key[("A", 0)]
    assert (a.count, a.distinct_users, a.violations) == (7, 5, 3)
    assert a.violation_codes == {"too_long": 1, "wrong_type": 2}
    assert by_key[("B", 0)].count == 1 and by_key[("A", 60)].count == 5


def test_a_window_is_released_once_every_partition_is_past_it() -> None:
    m = WindowMerger(idle_grace_seconds=100)
    assert len(m.add("0", 60, [rec("A", 0, 1)], now=0)) == 1  # the only partition: released
    m2 = WindowMerger(idle_grace_seconds=100)
    m2.add("0", 0, [], now=0)
    m2.add("1", 0, [], now=0)
    assert m2.add("0", 120, [rec("A", 0, 1), rec("A", 60, 1)], now=1) == []
    released = m2.add("1", 60, [rec("A", 0, 2)], now=2)
    assert [(r.window_start, r.count) for r in released] == [(0, 3)]
    released = m2.add("1", 120, [rec("A", 60, 5)], now=3)
    assert [(r.window_start, r.count) for r in released] == [(60, 6)]


def test_a_silent_partition_stops_blocking_after_the_grace_period() -> None:
    m = WindowMerger(idle_grace_seconds=30)
    m.add("0", 0, [], now=0)
    m.add("1", 0, [], now=0)
    assert m.add("0", 60, [rec("A", 0, 1)], now=10) == []
    released = m.add("0", 120, [rec("A", 60, 1)], now=45)  # partition 1 silent for 45 s
    assert [r.window_start for r in released] == [0, 60]
    m.add("1", 60, [rec("A", 0, 9)], now=46)  # too late: counted, not merged
    assert m.dropped_late == 1


def test_state_round_trip() -> None:
    m = WindowMerger()
    m.add("0", 0, [], now=0)
    m.add("1", 60, [rec("A", 0, 1), rec("A", 60, 2)], now=0)
    restored = WindowMerger()
    restored.load_state(json.loads(json.dumps(m.to_state())))
    a = m.add("0", 120, [rec("A", 60, 1)], now=1)
    b = restored.add("0", 120, [rec("A", 60, 1)], now=1)
    assert [r.to_dict() for r in a] == [r.to_dict() for r in b]
    assert [(r.window_start, r.count) for r in a] == [(0, 1)]  # window 60: partition 1 is at 60
