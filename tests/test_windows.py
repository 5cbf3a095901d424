"""Unit tests of the pure event-time window aggregator."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.records import WITHIN
from streams.pipeline import tally
from streams.windows import (
    DEFAULT_DIMENSIONS,
    OTHER_UNPLANNED,
    Tally,
    WindowAggregator,
    path_labels,
    tally_paths,
)
from tracking_plan.model import Funnel, Plan, SourceSpec
from tracking_plan.normalise import format_timestamp
from tracking_plan.validator import Result
from tracking_plan.violations import Violation

T0 = 1_790_000_040.0  # a minute boundary
PLAN = Plan(
    name="t",
    version="1",
    sources={"web": SourceSpec("web", platform="web"), "ios": SourceSpec("ios", platform="ios")},
    funnels=(Funnel("buy", ("View", "Add", "Order"), window_minutes=10),),
)


def ev(name: str, t: float, user: str = "u1", **extra: object) -> dict:
    body = {"type": "track", "event": name, "anonymousId": user, "timestamp": format_timestamp(t)}
    body.update(extra)
    return body


def agg(**kw: object) -> WindowAggregator:
    return WindowAggregator(plan=PLAN, funnels=PLAN.funnels, **kw)  # type: ignore[arg-type]


def add(a: WindowAggregator, name: str, t: float, user: str = "u1", source: str = "web", **kw):
    return a.add(
        ev(name, t, user), source, kw.pop("codes", ()), event_key=name, received_at=t, **kw
    )


def _canon(record) -> str:
    return json.dumps(record.to_dict(), sort_keys=True)


def volumes(records):
    return {(r.series["event"], r.window_start): r for r in records if r.kind == "volume"}


def test_counts_and_distinct_users_per_window():
    a = agg()
    for i, user in enumerate(["a", "b", "a", "c"]):
        add(a, "View", T0 + i, user)
    add(a, "View", T0 + 61, "a")
    assert a.advance() == []  # nothing closed: watermark T0+61, lateness 120 s
    records = [r for r in a.advance(T0 + 60 + 120) if r.kind == "volume"]
    assert [(r.window_start, r.count, r.distinct_users) for r in records] == [(T0, 4, 3)]
    rest = volumes(a.flush_all())
    assert rest[("View", T0 + 60)].count == 1
    assert rest[("View", T0 + 60)].series == {
        "event": "View",
        "source": "web",
        "platform": "web",
        "app_version": "unknown",
    }


def test_arrivals_count_a_visit_once_over_the_minutes_it_spans():
    """a browses three minutes in a row, b in the first and the third, c in the third: each
    minute counts its users, arrivals only those not there the minute before."""
    a = agg()
    for minute, users in enumerate([["a", "b"], ["a"], ["a", "b", "c"]]):
        for user in users:
            add(a, "View", T0 + 60 * minute + 5, user)
    add(a, "View", T0 + 60 * 4 + 5, "a")  # after an empty minute: a arrives again
    got = {(r.window_start - T0) // 60: r for r in a.flush_all() if r.kind == "volume"}
    assert {m: (r.distinct_users, r.arrivals) for m, r in got.items()} == {
        0: (2, 2),
        1: (1, 0),
        2: (3, 2),
        4: (1, 1),
    }


def test_dimensions_from_plan_and_context():
    a = agg()
    body = ev("View", T0, context={"os": {"name": "Android"}, "app": {"version": "4.2"}})
    a.add(body, "ios", (), event_key="View", received_at=T0)
    a.add(body, "unknown-source", (), event_key="View", received_at=T0)
    series = sorted(tuple(r.series.values()) for r in a.flush_all() if r.kind == "volume")
    assert series == [("View", "ios", "ios", "4.2"), ("View", "unknown-source", "Android", "4.2")]


def test_late_event_is_counted_as_late_not_added():
    a = agg(allowed_lateness_seconds=30, late_horizon_seconds=0)
    add(a, "View", T0 + 200)
    assert add(a, "View", T0 + 150) is True  # its window ends T0+180 > 200-30
    assert add(a, "View", T0 + 100) is False  # window ends T0+120 <= T0+170
    assert a.late_events == a.too_late_events == {"web": 1}
    records = a.flush_all()
    assert sum(r.count for r in records if r.kind == "volume") == 2
    assert not [r for r in records if r.revision]


def test_violation_counts_include_quarantined_events():
    a = agg()
    add(a, "View", T0, codes=["wrong_type", "missing_required"], quarantined=True)
    add(a, "View", T0, codes=["unplanned_property"])  # flagged, forwarded
    add(a, "View", T0)
    (rec,) = [r for r in a.flush_all() if r.kind == "volume"]
    assert (rec.count, rec.violations) == (2, 2)
    assert rec.violation_codes == {"missing_required": 1, "unplanned_property": 1, "wrong_type": 1}
    assert rec.distinct_users == 1


def test_unplanned_events_get_their_own_series_and_are_bounded():
    a = agg(max_unplanned_series=2)
    for name in ["x1", "x2", "x3", "x4"]:
        add(a, name, T0, planned=False)
    recs = volumes(a.flush_all())
    assert {k[0] for k in recs} == {"x1", "x2", OTHER_UNPLANNED}
    assert recs[(OTHER_UNPLANNED, T0)].count == 2
    assert all(not r.planned for r in recs.values())


def test_funnel_conversion_within_window_and_across_sources():
    a = agg(allowed_lateness_seconds=900)
    add(a, "View", T0 + 1, "a")
    add(a, "View", T0 + 2, "b")
    add(a, "View", T0 + 3, "c")
    add(a, "Add", T0 + 300, "a")  # 5 min later: converts
    add(a, "Add", T0 - 5, "c")  # before the view: does not count
    # a server-side step carrying only the userId matches through the alias
    a.add(
        {"type": "track", "event": "View", "anonymousId": "d", "userId": "U", "timestamp": T0 + 4},
        "web",
        (),
        event_key="View",
        received_at=T0,
    )
    a.add(
        {"type": "track", "event": "Add", "userId": "U", "timestamp": T0 + 30},
        "ios",
        (),
        event_key="Add",
        received_at=T0,
    )
    add(a, "Add", T0 + 60 * 11, "b")  # 11 min later: outside the 10-minute funnel window
    assert a.late_events == {}
    records = a.flush_all()
    # the cohort of window T0 is published, dated, with window T0 + 10 min + 1 min
    conv = [r for r in records if r.kind == "conversion" and r.window_start == T0 + 660]
    (view_add,) = [r for r in conv if r.series["from_event"] == "View"]
    assert (view_add.numerator, view_add.denominator) == (2, 4)
    assert view_add.series == {
        "funnel": "buy",
        "from_event": "View",
        "to_event": "Add",
        "source": "web",
        "platform": "web",
        "app_version": "unknown",
    }


def test_conversion_is_emitted_only_once_the_funnel_window_has_passed():
    a = agg(allowed_lateness_seconds=0)
    add(a, "View", T0, "a")
    add(a, "Add", T0 + 599, "a")
    early = a.advance(T0 + 600)
    assert not [r for r in early if r.kind == "conversion"]
    later = a.advance(T0 + 60 + 600 + 60)
    (rec,) = [r for r in later if r.kind == "conversion"]
    assert (rec.window_start, rec.numerator, rec.denominator) == (T0 + 660, 1, 1)


def test_bad_timestamp_falls_back_to_received_at():
    a = agg()
    a.add({"event": "View", "timestamp": "yesterday"}, "web", (), event_key="View", received_at=T0)
    (rec,) = [r for r in a.flush_all() if r.kind == "volume"]
    assert rec.window_start == T0 and rec.distinct_users == 0


def test_state_round_trip_gives_the_same_records():
    rng = random.Random(7)
    events = [
        (rng.choice(["View", "Add", "Order"]), T0 + rng.uniform(0, 900), f"u{rng.randint(0, 9)}")
        for _ in range(300)
    ]
    whole, split = agg(), agg()
    for name, t, user in events[:150]:
        add(whole, name, t, user)
        add(split, name, t, user)
    whole.advance()
    split.advance()
    restored = agg()
    restored.load_state(json.loads(json.dumps(split.to_state())))
    for name, t, user in events[150:]:
        add(whole, name, t, user)
        add(restored, name, t, user)
    assert [r.to_dict() for r in whole.flush_all()] == [r.to_dict() for r in restored.flush_all()]


@settings(max_examples=150, deadline=None)
@given(
    offsets=st.lists(st.floats(0, 3600, allow_nan=False), min_size=1, max_size=80),
    seed=st.integers(0, 2**16),
    batch=st.integers(1, 20),
)
def test_every_event_counted_once_whatever_the_order_within_lateness(offsets, seed, batch):
    """Shuffling events within the lateness keeps the totals; grouping of advance() is free."""
    lateness = 120
    timeline = sorted(offsets)
    rng = random.Random(seed)
    # perturb arrival order: each event may arrive up to `lateness - window` seconds "early"
    arrival = sorted(timeline, key=lambda t: t - rng.uniform(0, lateness - 60))
    a = agg(allowed_lateness_seconds=lateness)
    records = []
    for i, t in enumerate(arrival):
        add(a, "View", T0 + t, f"u{i % 7}")
        if i % batch == 0:
            records += a.advance()
    records += a.flush_all()
    vol = [r for r in records if r.kind == "volume"]
    assert sum(r.count for r in vol) == len(offsets)
    assert a.late_events == {}
    starts = [r.window_start for r in vol]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


@settings(max_examples=100, deadline=None)
@given(
    offsets=st.lists(st.floats(0, 1800, allow_nan=False), min_size=1, max_size=60),
    batch=st.integers(1, 10),
)
def test_counted_plus_late_equals_added_and_batching_does_not_matter(offsets, batch):
    one, many = agg(allowed_lateness_seconds=30), agg(allowed_lateness_seconds=30)
    out_one, out_many = [], []
    for i, t in enumerate(offsets):
        add(one, "View", T0 + t)
        add(many, "View", T0 + t)
        if i % batch == 0:
            out_many += many.advance()
    out_one += one.flush_all()
    out_many += many.flush_all()
    counted = sum(r.count for r in out_one if r.kind == "volume" and not r.revision)
    assert counted + sum(one.late_events.values()) == len(offsets)
    revised = sum(r.count for r in out_one if r.revision)
    assert revised + sum(one.too_late_events.values()) == sum(one.late_events.values())
    # the same records; only the moment (and so the order) in which they come out may differ
    assert sorted(map(_canon, out_one)) == sorted(map(_canon, out_many))


def test_end_of_input_drops_cohorts_that_had_no_time_to_convert():
    a = agg(allowed_lateness_seconds=0)
    add(a, "View", T0, "a")
    add(a, "Add", T0 + 30, "a")
    add(a, "View", T0 + 60 * 8, "b")  # its 10-minute horizon runs past the last event
    records = a.flush_all()
    cohorts = {r.window_start for r in records if r.kind == "conversion"}
    assert cohorts == set()  # T0's horizon (T0 + 11 min) also ends after the last event (8 min)
    a = agg(allowed_lateness_seconds=0)
    add(a, "View", T0, "a")
    add(a, "Add", T0 + 30, "a")
    add(a, "View", T0 + 60 * 11, "b")  # the window T0+11 min is the last: T0 horizon is done
    records = a.flush_all()
    conv = [r for r in records if r.kind == "conversion" and r.series["from_event"] == "View"]
    assert [(r.window_start, r.numerator, r.denominator) for r in conv] == [(T0 + 660, 1, 1)]
    assert max(r.window_start for r in records) <= T0 + 660


def test_a_busy_user_enters_a_funnel_cohort_once_per_horizon():
    a = agg(allowed_lateness_seconds=0)
    add(a, "View", T0, "b")  # a visitor who does not convert
    for minute in range(10):  # one who views a product every minute...
        add(a, "View", T0 + 60 * minute, "a")
    add(a, "Add", T0 + 60 * 9 + 30, "a")  # ...and adds one to the cart
    add(a, "View", T0 + 60 * 25, "a")  # a new visit after the 10-minute horizon: a new entry
    add(a, "Other", T0 + 60 * 40, "z")  # time passes: every cohort is complete
    conv = [r for r in a.advance() if r.kind == "conversion" and r.series["from_event"] == "View"]
    assert sum(r.denominator for r in conv) == 3  # a (twice, 25 min apart) and b
    assert sum(r.numerator for r in conv) == 1
    state = a.to_state()
    b = agg(allowed_lateness_seconds=0)
    b.load_state(state)
    assert b.to_state() == state


_IDS = st.sampled_from(["u1", "u2", "", 7, 2.5, True, None, {"x": 1}, "absent"])
_VALUES = st.sampled_from(["Android", "", "x" * 80, 3, 1.5, True, None, {"a": 1}, [1], "absent"])
_DIMS = (
    DEFAULT_DIMENSIONS,
    ("source", "platform", "app_version", "context.locale", "anonymousId", "userId", "channel"),
    ("context.os.name", "context.app.version", "context.os", "a..b"),
)


def _set(holder: dict, key: str, value: object) -> None:
    if value != "absent":
        holder[key] = value


@settings(max_examples=150, deadline=None)
@given(
    calls=st.lists(
        st.tuples(
            st.sampled_from(["View", "Add", "Order", "x1", "x2"]),
            st.floats(0, 1500, allow_nan=False),
            st.sampled_from(["web", "ios", "kiosk"]),
            _IDS,
            _IDS,
            _VALUES,
            _VALUES,
            _VALUES,
            st.sampled_from([(), ("wrong_type",), ("missing_required", "wrong_type")]),
            st.booleans(),
        ),
        max_size=40,
    ),
    dims=st.sampled_from(_DIMS),
)
def test_tallies_count_like_the_events_they_stand_for(calls, dims) -> None:
    """`add` (whole events) and the pipeline's tallies (`streams.pipeline.tally` of the same
    validation result, counted by `add_tallies`) give the same records and state: the two read
    ids, platforms and dimension values alike (string ids only, scalar labels)."""
    paths = tally_paths(dims)
    by_tally, by_event = agg(dimensions=dims), agg(dimensions=dims)
    for key, t, source, anonymous, user, os_name, version, locale, codes, q in calls:
        event: dict = {"type": "track", "event": key}
        _set(event, "anonymousId", anonymous)
        _set(event, "userId", user)
        context: dict = {}
        _set(context, "os", {"name": os_name} if os_name != "absent" else "absent")
        _set(context, "app", {"version": version} if version != "absent" else "absent")
        _set(context, "locale", locale)
        _set(event, "channel", locale)  # a top-level dimension
        event["context"] = context
        planned = not key.startswith("x")
        problems = [Violation(code, "$", "x", "y") for code in codes]
        result = Result(
            "quarantined" if q else "valid", None if q else event, problems, key, key, planned,
            T0 + t,
        )  # fmt: skip
        by_tally.add_tallies([tally(source, result, T0 + t, event, paths)], paths)
        by_event.add(
            event, source, codes, event_key=key, received_at=T0 + t, ts=T0 + t,
            planned=planned, quarantined=q,
        )  # fmt: skip
    assert by_tally.late_events == by_event.late_events
    assert _sorted_codes(by_tally.to_state()) == _sorted_codes(by_event.to_state())
    assert list(map(_canon, by_tally.flush_all())) == list(map(_canon, by_event.flush_all()))


def test_top_level_and_dotted_dimensions_are_both_read() -> None:
    """A dimension may name a top-level field (``channel``) or a dotted path: both reach the
    series (top-level names once came out "unknown" on the tally path the worker uses)."""
    dims = ("source", "channel", "context.locale")
    a = agg(dimensions=dims)
    body = ev("View", T0, channel="email", context={"locale": "de-DE"})
    a.add(body, "web", event_key="View", received_at=T0)
    (record,) = [r for r in a.flush_all() if r.kind == "volume"]
    assert record.series == {
        "event": "View", "source": "web", "channel": "email", "context.locale": "de-DE"
    }  # fmt: skip


def _sorted_codes(state: dict) -> dict:
    """A window state with the violation codes of each series in sorted order."""
    for _start, series in state["volumes"]:
        for item in series:
            item[4] = sorted(item[4].items())
    return state


def test_a_new_platform_map_relabels_the_tallies_that_follow() -> None:
    paths = tally_paths(DEFAULT_DIMENSIONS)
    a = agg()
    labels = path_labels({"context": {"os": {"name": "Android"}}}, paths)
    a.add_tallies([Tally("web", "View", True, T0, (), False, "u", None, labels)], paths)
    a.platforms = {"web": "phone"}
    a.add_tallies([Tally("web", "View", True, T0 + 1, (), False, "u", None, labels)], paths)
    a.platforms = {}
    a.add_tallies([Tally("web", "View", True, T0 + 2, (), False, "u", None, labels)], paths)
    platforms = [r.series["platform"] for r in a.flush_all() if r.kind == "volume"]
    assert sorted(platforms) == ["Android", "phone", "web"]


# ------------------------------------------------------------------ early conversion records

PLAN_HOUR = Plan(
    name="t",
    version="1",
    sources=PLAN.sources,
    funnels=(Funnel("buy", ("View", "Add", "Order"), window_minutes=60),),
)


def hour_agg(**kw: object) -> WindowAggregator:
    return WindowAggregator(plan=PLAN_HOUR, funnels=PLAN_HOUR.funnels, **kw)  # type: ignore[arg-type]


def conversions(records, from_event: str = "View") -> list[tuple[float, int, int, str | None]]:
    return [
        (r.window_start, r.numerator, r.denominator, r.series.get(WITHIN))
        for r in records
        if r.kind == "conversion" and r.series["from_event"] == from_event
    ]


def _hour_cohort(a: WindowAggregator) -> None:
    for user, t in (("a", 1), ("b", 2), ("c", 3)):
        add(a, "View", T0 + t, user)
    add(a, "Add", T0 + 300, "a")  # within 5 minutes
    add(a, "Add", T0 + 1800, "b")  # within half an hour
    add(a, "Order", T0 + 5000, "c")  # keeps the watermark moving; c never adds


def test_early_conversion_is_published_after_minutes_and_the_whole_one_after_the_window():
    a = hour_agg(allowed_lateness_seconds=0, early_minutes=10)
    for user, t in (("a", 1), ("b", 2), ("c", 3)):
        add(a, "View", T0 + t, user)
    add(a, "Add", T0 + 300, "a")
    assert conversions(a.advance(T0 + 600)) == []  # the early horizon has not passed yet
    add(a, "Add", T0 + 1800, "b")
    # cohort T0, within 10 minutes: only a; dated T0 + 10 min + 1 window
    assert conversions(a.advance(T0 + 60 + 600 + 60)) == [(T0 + 660, 1, 3, "10")]
    assert conversions(a.advance(T0 + 3000)) == []  # published once
    # the whole hour: a and b, dated T0 + 60 min + 1 window, without the early label
    assert conversions(a.advance(T0 + 60 + 3600 + 60)) == [(T0 + 3660, 2, 3, None)]


def test_no_early_records_when_disabled_or_when_the_funnel_window_is_as_short():
    a = hour_agg(allowed_lateness_seconds=0, early_minutes=0)
    _hour_cohort(a)
    assert conversions(a.flush_all()) == [(T0 + 3660, 2, 3, None)]
    short = agg(allowed_lateness_seconds=0, early_minutes=10)  # a 10-minute funnel window
    add(short, "View", T0, "a")
    add(short, "Add", T0 + 30, "a")
    add(short, "Order", T0 + 900, "a")
    assert conversions(short.flush_all()) == [(T0 + 660, 1, 1, None)]


def test_early_minutes_must_not_be_negative():
    with pytest.raises(ValueError, match="early_minutes"):
        hour_agg(early_minutes=-1)


def test_a_snapshot_between_the_early_and_the_whole_record_publishes_each_once():
    whole = hour_agg(allowed_lateness_seconds=0)
    _hour_cohort(whole)
    expected = conversions(whole.flush_all())
    assert expected == [(T0 + 660, 1, 3, "10"), (T0 + 3660, 2, 3, None)]

    first = hour_agg(allowed_lateness_seconds=0)
    for user, t in (("a", 1), ("b", 2), ("c", 3)):
        add(first, "View", T0 + t, user)
    add(first, "Add", T0 + 300, "a")
    add(first, "Add", T0 + 1800, "b")
    got = conversions(first.advance())  # watermark T0 + 30 min: the early record is out
    snapshot = json.dumps(first.to_state())
    for old_format in (False, True):
        state = json.loads(snapshot)
        if old_format:  # a snapshot written before early records existed
            del state["early"]
        restored = hour_agg(allowed_lateness_seconds=0)
        restored.load_state(state)
        add(restored, "Order", T0 + 5000, "c")
        assert got + conversions(restored.flush_all()) == expected


@settings(max_examples=100, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["View", "Add", "Order"]),
            st.floats(0, 3 * 3600, allow_nan=False),
            st.integers(0, 15),
            st.sampled_from(["web", "ios"]),
        ),
        min_size=1,
        max_size=120,
    ),
    batch=st.integers(1, 30),
)
def test_an_early_record_counts_the_same_users_and_never_more_conversions(events, batch):
    """Whatever the events and however often the watermark moves: every cohort published whole
    was published early too, on the same users, with at most as many conversions."""
    a = hour_agg(allowed_lateness_seconds=60)
    records = []
    for i, (name, t, user, source) in enumerate(sorted(events, key=lambda e: e[1])):
        add(a, name, T0 + t, f"u{user}", source)
        if i % batch == 0:
            records += a.advance()
    records += a.flush_all()
    early, whole = {}, {}
    for r in records:
        if r.kind != "conversion":
            continue
        key = (r.series["from_event"], r.series["source"])
        if WITHIN in r.series:
            early[(*key, r.window_start - 660)] = (r.numerator, r.denominator)
        else:
            whole[(*key, r.window_start - 3660)] = (r.numerator, r.denominator)
    assert len(early) + len(whole) == sum(r.kind == "conversion" for r in records)  # once each
    for cohort, (num, den) in whole.items():
        assert cohort in early
        assert early[cohort][1] == den and early[cohort][0] <= num
