"""detectors.traffic: a source's mix by app version, and the scope each volume series is in."""

from __future__ import annotations

import pytest

from detectors.records import WindowRecord
from detectors.rollup import Rolled, series_key
from detectors.traffic import context_entry, scope, source_mix, traffic_context, traffic_mix

DIMS = ("app_version",)


def rec(event: str, source: str, version: str | None, count: int, kind="volume"):
    series = {"event": event, "source": source}
    if version is not None:
        series["app_version"] = version
    return WindowRecord(series, 0.0, 60.0, count=count, kind=kind)


def rolled(series: dict[str, str], n: float, metric="volume") -> Rolled:
    return Rolled(key=series_key(metric, series), metric=metric, series=series, numerator=n)


def test_the_mix_counts_every_event_of_a_source_by_version():
    mix = traffic_mix(
        [
            rec("A", "ios_app", "2.0", 3),
            rec("B", "ios_app", "2.0", 2),
            rec("A", "ios_app", "2.1", 1),
            rec("A", "ios_app", "2.1", 0),  # nothing sent: not traffic
            rec("A", "web", None, 5),  # no version: no slice
            rec("A", "ios_app", "2.0", 9, kind="activity"),  # users, not events
        ],
        DIMS,
    )
    assert mix["ios_app"]["app_version"]["2.0"] == [5.0, {"A", "B"}]
    assert mix["ios_app"]["app_version"]["2.1"] == [1.0, {"A"}]
    assert mix["web"] == {}
    one = {"event": "A", "source": "ios_app", "platform": "ios"}
    assert source_mix(one, "volume", mix, DIMS) == {"app_version": {"2.0": 5.0, "2.1": 1.0}}
    assert source_mix({"event": "A"}, "volume", mix, DIMS) == {}  # all sources: no mix
    assert source_mix(one, "conversion", mix, DIMS) == {}
    assert source_mix(one, "volume", {}, DIMS) == {}


@pytest.mark.parametrize(
    ("series", "metric", "expected"),
    [
        ({"event": "A"}, "volume", ""),  # an event's total: all events
        ({"event": "A", "source": "web", "platform": "web"}, "volume", "web"),
        ({"source": "web", "platform": "web"}, "activity", None),
        ({"from_event": "A", "to_event": "B"}, "conversion", None),
        ({"event": "A"}, "violation", None),
    ],
)
def test_the_scope_of_a_series(series, metric, expected):
    assert scope(rolled(series, 1.0, metric)) == expected


def test_the_context_takes_the_series_own_part_out_of_its_scope():
    web_a = rolled({"event": "A", "source": "web", "platform": "web"}, 12.0)
    web_b = rolled({"event": "B", "source": "web", "platform": "web"}, 30.0)
    ios_a = rolled({"event": "A", "source": "ios_app", "platform": "ios"}, 4.0)
    new = rolled({"event": "C", "source": "web", "platform": "web"}, 2.0)  # no model yet
    total_a = rolled({"event": "A"}, 16.0)
    all_rolled = {r.key: r for r in (web_a, web_b, ios_a, new, total_a)}
    expected = {web_a.key: 10.0, web_b.key: 20.0, ios_a.key: 5.0, total_a.key: 15.0}
    ctx = traffic_context(all_rolled, expected)
    assert ctx[0]["web"] == [42.0, 30.0] and ctx[0]["ios_app"] == [4.0, 5.0]
    assert context_entry(ctx, web_a) == (30.0, 20.0, 10.0)  # B's traffic, against A's own
    assert context_entry(ctx, ios_a) == (0.0, 0.0, 5.0)  # alone on its source
    assert context_entry(ctx, total_a) == (0.0, 0.0, 15.0)
    assert context_entry(ctx, new) == (0.0, 0.0, 0.0)
