"""The aggregator's records for the detection engine (issue 16): activity per source, funnel
cohorts per app version, revisions for late events, and a state that resumes mid-stream."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.records import WindowRecord
from streams.merge import WindowMerger
from streams.windows import WindowAggregator
from tracking_plan.model import Funnel, Plan, SourceSpec

T0 = 1_790_000_040.0  # a minute boundary
MIDNIGHT = 1_790_035_200
PLAN = Plan(
    name="t",
    version="1",
    sources={"web": SourceSpec("web", platform="web"), "ios": SourceSpec("ios", platform="ios")},
    funnels=(Funnel("buy", ("View", "Add", "Order"), window_minutes=10),),
)


def agg(**kw: object) -> WindowAggregator:
    return WindowAggregator(plan=PLAN, funnels=PLAN.funnels, **kw)  # type: ignore[arg-type]


def add(a: WindowAggregator, name: str, t: float, user: str | None = "u1", source: str = "web",
        version: str | None = None, codes=(), **kw) -> bool:  # fmt: skip
    body: dict = {"type": "track", "event": name}
    if user is not None:
        body["anonymousId"] = user
    if version is not None:
        body["context"] = {"app": {"version": version}}
    return a.add(body, source, codes, event_key=name, received_at=t, ts=t, **kw)


def canon(records: list[WindowRecord]) -> list[str]:
    return [json.dumps(r.to_dict(), sort_keys=True) for r in records]


# ------------------------------------------------------------------ activity


def test_activity_counts_the_users_of_any_event_per_source():
    a = agg()
    add(a, "View", T0 + 1, "a")
    add(a, "Add", T0 + 2, "a")  # the same user, another event: once
    add(a, "Signed In", T0 + 3, "b", planned=False)  # unplanned events count
    add(a, "View", T0 + 4, "c", codes=["wrong_type"], quarantined=True)  # quarantined ones too
    add(a, "View", T0 + 5, None)  # no id: the window has activity, no user
    add(a, "View", T0 + 6, "a", source="ios")
    add(a, "View", T0 + 70, "d")  # the next window
    records = a.advance(T0 + 60 + 120)
    activity = [(r.series, r.count, r.distinct_users) for r in records if r.kind == "activity"]
    assert activity == [
        ({"source": "ios", "platform": "ios", "app_version": "unknown"}, 1, 1),
        ({"source": "web", "platform": "web", "app_version": "unknown"}, 3, 3),
    ]
    assert {r.window_start for r in records} == {T0}  # emitted with the window's volume records
    later = [r for r in a.flush_all() if r.kind == "activity"]
    # the next window: web's "d" is new, none of its 3 users of the window before went on; ios's
    # one user went silent (a window with no event still says so)
    assert [(r.window_start, r.series["source"], r.count, r.numerator, r.denominator)
            for r in later] == [(T0 + 60, "ios", 0, 0, 1), (T0 + 60, "web", 1, 0, 3)]  # fmt: skip


def test_activity_tells_how_many_running_sessions_went_on():
    """Of the users of the previous window (sessions running), those who sent something in this
    one (the others of this window arrived: new visits, or back after a pause); a source whose
    sessions all go silent still gets its record for the window after."""
    a = agg()
    add(a, "View", T0, "z", source="ios")
    add(a, "View", T0 + 61, "z", source="ios")
    for w, users in enumerate((["a", "b"], ["a", "b", "c"], ["b", "c", "x1"], ["c", "x2"], [],
                               [], ["a"])):  # fmt: skip
        for user in users:
            add(a, "View", T0 + 60 * w + 1, user)
    rows = [
        ((r.window_start - T0) // 60, r.series["source"], r.count, r.numerator, r.denominator)
        for r in a.flush_all()
        if r.kind == "activity"
    ]
    assert [row for row in rows if row[1] == "web"] == [
        (0, "web", 2, 0, 0),
        (1, "web", 3, 2, 2),  # a and b went on; c arrived
        (2, "web", 3, 2, 3),  # b and c went on, of a, b and c; x1 arrived
        (3, "web", 2, 1, 3),  # c went on, of b, c and x1
        (4, "web", 0, 0, 2),  # c and x2 silent: a window with no event at all still says so
        (6, "web", 1, 0, 0),  # a again later: arrived in this window
    ]
    assert [row for row in rows if row[1] == "ios"] == [
        (0, "ios", 1, 0, 0),
        (1, "ios", 1, 1, 1),
        (2, "ios", 0, 0, 1),
    ]


def test_a_window_of_anonymous_calls_still_has_an_activity_record():
    a = agg()
    add(a, "View", T0, None)
    (record,) = [r for r in a.flush_all() if r.kind == "activity"]
    assert (record.count, record.distinct_users) == (0, 0)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["View", "Add", "x"]),
            st.floats(0, 600, allow_nan=False),
            st.integers(0, 12),
            st.sampled_from(["web", "ios", "kiosk"]),
            st.booleans(),
        ),
        max_size=80,
    )
)
def test_activity_is_the_union_of_users_over_events(events):
    a = agg(allowed_lateness_seconds=600)
    expected: dict[tuple, set] = defaultdict(set)
    for name, t, user, source, quarantined in events:
        add(a, name, T0 + t, f"u{user}", source, planned=name != "x", quarantined=quarantined)
        platform = source if source in PLAN.sources else "unknown"
        expected[(T0 + t) // 60 * 60, source, platform].add(f"u{user}")
    got = {
        (r.window_start, r.series["source"], r.series["platform"]): r.count
        for r in a.flush_all()
        if r.kind == "activity" and r.count  # (records of users of earlier windows alone: 0)
    }
    assert got == {key: len(users) for key, users in expected.items()}


# ------------------------------------------------------------------ conversions per app version


def cohorts(records, by_version: bool) -> Counter:
    out: Counter = Counter()
    for r in records:
        if r.kind != "conversion":
            continue
        key = tuple(v for k, v in sorted(r.series.items()) if by_version or k != "app_version")
        out[(key, r.window_start, "num")] += r.numerator
        out[(key, r.window_start, "den")] += r.denominator
    return out


@settings(max_examples=100, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["View", "Add", "Order"]),
            st.floats(0, 3600, allow_nan=False),
            st.integers(0, 10),
            st.sampled_from(["web", "ios"]),
            st.sampled_from(["1.0", "2.0", None]),
        ),
        max_size=100,
    ),
    early=st.sampled_from([0, 5]),
)
def test_cohorts_per_app_version_sum_to_the_cohorts_per_source_and_platform(events, early):
    """Splitting a funnel cohort by the first step's app version changes no sum: with the
    versions left out (every cohort "unknown"), the records are those per (source, platform)."""
    with_versions = agg(allowed_lateness_seconds=60, early_minutes=early)
    without = agg(allowed_lateness_seconds=60, early_minutes=early)
    for name, t, user, source, version in sorted(events, key=lambda e: e[1]):
        add(with_versions, name, T0 + t, f"u{user}", source, version)
        add(without, name, T0 + t, f"u{user}", source, None)
    split = with_versions.flush_all()
    whole = without.flush_all()
    assert cohorts(split, by_version=False) == cohorts(whole, by_version=False)
    for r in split:
        if r.kind == "conversion":
            assert r.series["app_version"] in ("1.0", "2.0", "unknown")
    assert all(r.series["app_version"] == "unknown" for r in whole if r.kind == "conversion")


def test_the_cohort_takes_the_app_version_of_the_first_step():
    a = agg(allowed_lateness_seconds=0, early_minutes=0)
    add(a, "View", T0, "a", version="2.0")
    add(a, "Add", T0 + 30, "a", version="2.1")  # updated in between: the View's version counts
    add(a, "Other", T0 + 900, "z")
    records = {r.series["from_event"]: r for r in a.flush_all() if r.kind == "conversion"}
    assert records["View"].series["app_version"] == "2.0" and records["View"].numerator == 1
    assert records["Add"].series["app_version"] == "2.1"


# ------------------------------------------------------------------ late events


def test_a_late_event_within_the_horizon_is_in_one_revision_of_its_own_window():
    a = agg(allowed_lateness_seconds=120, late_horizon_seconds=3600)
    add(a, "View", T0 + 5, "a")
    add(a, "View", T0 + 400, "b")  # closes T0's window (400 - 120 >= 60)
    first = a.advance()
    assert [(r.window_start, r.count) for r in first if r.kind == "volume"] == [(T0, 1)]
    assert add(a, "View", T0 + 10, "c", codes=["wrong_type"]) is False  # late: a revision
    assert add(a, "View", T0 + 20, "d", repeated=True) is False
    assert add(a, "Add", T0 + 30, "d", codes=["x"], quarantined=True, repeated=True) is False
    assert [r for r in a.advance() if r.revision] == []  # published with the next window closed
    add(a, "View", T0 + 460, "e")  # the closed edge enters the next window
    revisions = [r for r in a.advance() if r.revision]
    summary = [(r.series["event"], r.window_start, r.count, r.violations, r.repeats)
               for r in revisions]  # fmt: skip
    assert summary == [("Add", T0, 0, 1, 1), ("View", T0, 2, 1, 1)]
    view = revisions[1]
    assert view.kind == "volume" and view.distinct_users == 0
    assert view.violation_codes == {"wrong_type": 1}
    assert view.series == {"event": "View", "source": "web", "platform": "web",
                           "app_version": "unknown"}  # fmt: skip
    assert a.revised_events == a.late_events == {"web": 3}
    rest = a.flush_all()
    assert not [r for r in rest if r.revision]  # each late event in exactly one revision
    assert not [r for r in rest if r.kind == "activity" and r.window_start == T0]


def test_an_event_beyond_the_late_horizon_is_counted_as_too_late():
    a = agg(allowed_lateness_seconds=120, late_horizon_seconds=3600)
    add(a, "View", T0, "a")
    add(a, "View", T0 + 2 * 3600, "b")
    assert add(a, "View", T0 + 30, "c") is False  # its window closed 2 h - 3 min ago
    assert add(a, "View", T0 + 3600 + 30, "d", source="ios") is False  # ~58 minutes ago
    records = a.flush_all()
    assert a.too_late_events == {"web": 1} and a.revised_events == {"ios": 1}
    assert a.late_events == {"web": 1, "ios": 1}
    assert [(r.window_start, r.count) for r in records if r.revision] == [(T0 + 3600, 1)]


def test_unplanned_names_of_late_events_are_pooled_too():
    a = agg(max_unplanned_series=2)
    add(a, "View", T0)
    add(a, "View", T0 + 400)
    for name in ("x1", "x2", "x3", "x4"):
        add(a, name, T0 + 1, planned=False)
    names = Counter(r.series["event"] for r in a.flush_all() if r.revision for _ in range(r.count))
    assert names == {"x1": 1, "x2": 1, "(other unplanned)": 2}


_LATE_EVENTS = st.lists(
    st.tuples(
        st.floats(0, 4 * 3600, allow_nan=False),  # event time
        st.floats(0, 3 * 3600, allow_nan=False),  # how late it arrives
        st.sampled_from(["View", "Add", "x"]),
        st.integers(0, 8),
        st.booleans(),
    ),
    min_size=1,
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(events=_LATE_EVENTS, batch=st.integers(1, 40))
def test_every_event_is_in_exactly_one_window_record_or_counted_too_late(events, batch):
    """Events arriving up to 3 h late (a 1 h horizon): each counted once, in its own window's
    record if on time, else in exactly one revision of that window, else as too late; the
    same records however the advance() calls are grouped."""
    arrivals = sorted(events, key=lambda e: e[0] + e[1])
    a, b = agg(late_horizon_seconds=3600), agg(late_horizon_seconds=3600)
    out_a, out_b = [], []
    on_time: Counter = Counter()
    revised: Counter = Counter()
    for i, (t, _delay, name, user, quarantined) in enumerate(arrivals):
        start = (T0 + t) // 60 * 60  # as the aggregator places it
        revisable = not start + 60 + 120 + 3600 <= a.watermark
        kept = add(a, name, T0 + t, f"u{user}", planned=name != "x", quarantined=quarantined)
        add(b, name, T0 + t, f"u{user}", planned=name != "x", quarantined=quarantined)
        out_a += a.advance()
        if i % batch == 0:
            out_b += b.advance()
        key = (name, start)
        if quarantined:
            continue
        if kept:
            on_time[key] += 1
        elif revisable:
            revised[key] += 1
    out_a += a.flush_all()
    out_b += b.flush_all()
    assert sorted(canon(out_a)) == sorted(canon(out_b))
    scored = Counter()
    revisions = Counter()
    seen = set()
    for r in out_a:
        if r.kind != "volume":
            continue
        key = (r.series["event"], r.window_start)
        (revisions if r.revision else scored)[key] += r.count
        if not r.revision:
            assert key not in seen  # one record per series and window
            seen.add(key)
    assert +scored == +on_time  # late events never reach the window's own (scored) record
    assert +revisions == +revised
    assert sum(a.late_events.values()) == sum(a.revised_events.values()) + sum(
        a.too_late_events.values()
    )


def test_the_merger_never_sums_a_revision_into_its_window_and_releases_it_after():
    merger = WindowMerger()
    series = {"event": "View", "source": "web", "platform": "web", "app_version": "1"}

    def rec(start: float, count: int, revision: bool = False) -> WindowRecord:
        return WindowRecord(dict(series), start, start + 60, count=count, revision=revision)

    assert merger.add("2", T0, []) == []
    # partition 1 closes T0, then sends a revision of it before partition 2 closes T0
    assert merger.add("1", T0 + 60, [rec(T0, 5)]) == []
    assert merger.add("1", T0 + 120, [rec(T0, 1, revision=True)]) == []
    released = merger.add("2", T0 + 60, [rec(T0, 3)])
    assert [(r.count, r.revision) for r in released] == [(8, False)]  # the window alone
    state = json.loads(json.dumps(merger.to_state()))
    restored = WindowMerger()
    restored.load_state(state)
    for m in (merger, restored):
        later = m.add("1", T0 + 180, [rec(T0, 2, revision=True)])
        assert [(r.window_start, r.count, r.revision) for r in later] == [(T0, 3, True)]
        assert m.dropped_late == 0


# ------------------------------------------------------------------ state


def _stream(seed: int) -> list[tuple[float, str, str, str, str, bool]]:
    """Sessions from 10:00 to 02:00 the next day (the companions choose at midnight), with
    app versions, two sources, out-of-order and late events (some hours late)."""
    rng = random.Random(seed)
    start = MIDNIGHT - 14 * 3600
    out = []
    for n in range(2400):
        t = start + rng.uniform(0, 16 * 3600)
        user, source, version = f"u{n}", rng.choice(["web", "ios"]), rng.choice(["1", "2"])
        steps = ["Home", "View", "Add", "Order"][: rng.randint(1, 4)]
        for k, name in enumerate(steps):
            when = t + 40 * k
            delay = rng.choice([0, 0, 0, rng.uniform(0, 90), rng.uniform(600, 9 * 3600)])
            out.append((when + delay, name, user, source, version, when))
    return [(arr, name, user, src, ver, when) for arr, name, user, src, ver, when in sorted(out)]


def test_a_snapshot_mid_stream_resumes_with_the_same_records():
    events = _stream(5)

    def feed(a: WindowAggregator, lo: int, hi: int) -> list[WindowRecord]:
        out = []
        for i in range(lo, hi):
            _arrival, name, user, source, version, when = events[i]
            add(a, name, when, user, source, version, codes=["x"] if i % 97 == 0 else ())
            if i % 37 == 0:
                out += a.advance()
        return out

    horizon = 6 * 3600  # (shorter than the default week: some late events are too late)
    whole = agg(late_horizon_seconds=horizon)
    expected = feed(whole, 0, len(events)) + whole.flush_all()
    assert any(r.revision for r in expected) and any(r.kind == "activity" for r in expected)
    assert any(r.series.get("funnel") == "(companion)" for r in expected)
    assert whole.too_late_events and whole.revised_events
    for cut in (len(events) // 3, 2 * len(events) // 3, len(events) - 5):
        first = agg(late_horizon_seconds=horizon)
        got = feed(first, 0, cut)
        state = json.dumps(first.to_state())
        assert json.dumps(first.to_state()) == state  # serialising changes nothing
        resumed = agg(late_horizon_seconds=horizon)
        resumed.load_state(json.loads(state))
        got += feed(resumed, cut, len(events)) + resumed.flush_all()
        assert canon(got) == canon(expected)
        assert resumed.late_events == whole.late_events
        assert resumed.revised_events == whole.revised_events
        assert resumed.too_late_events == whole.too_late_events


# written by the aggregator before issue 16 (state version 1): View by a (web) and b (ios),
# then a's Add, and a window at T0 + 33 min
V1_SNAPSHOT = (
    '{"v": 1, "watermark": 1790002040.0, "added": 4, "late": {"web": 1}, "volumes": [[1790000040,'
    ' [[["View", true, "web", "web", "unknown"], 1, ["a"], 0, {}], [["View", true, "ios", "ios",'
    ' "unknown"], 1, ["b"], 0, {}], [["Add", true, "web", "web", "unknown"], 1, ["a"], 0, {}]]],'
    ' [1790002020, [[["Late", true, "web", "web", "unknown"], 1, ["q"], 0, {}]]]], "unplanned":'
    ' [], "steps": [[0, 0, 1790000040, [[["web", "web"], {"a:a": [1790000040.0]}], [["ios",'
    ' "ios"], {"a:b": [1790000045.0]}]], {}], [0, 1, 1790000040, [[["web", "web"], {"a:a":'
    ' [1790000070.0]}]], {}]], "next": [[0, 1, {"a:a": [1790000070.0]}]], "entries": [[0, 0,'
    ' {"a:a": 1790000040.0, "a:b": 1790000045.0}], [0, 1, {"a:a": 1790000070.0}]], "early": []}'
)


def test_a_version_1_snapshot_still_loads():
    restored = agg(allowed_lateness_seconds=900)
    restored.load_state(json.loads(V1_SNAPSHOT))
    assert restored.late_events == {"web": 1} and restored.too_late_events == {}
    add(restored, "Other", T0 + 3600, "z")
    records = restored.flush_all()
    conv = [
        (r.series["source"], r.series["app_version"], r.numerator, r.denominator)
        for r in records
        if r.kind == "conversion" and r.series["from_event"] == "View"
    ]
    assert conv == [("ios", "unknown", 0, 1), ("web", "unknown", 1, 1)]
    assert [r.count for r in records if r.kind == "volume" and r.window_start == T0] == [1, 1, 1]
    again = agg(allowed_lateness_seconds=900)
    again.load_state(json.loads(json.dumps(restored.to_state())))  # now a version 2 snapshot
    assert again.to_state()["v"] == 2
