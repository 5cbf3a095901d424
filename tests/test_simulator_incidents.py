"""Injected incidents: each kind changes the generated traffic inside its window, by a realistic
amount, and nowhere else (measured by generating the same seed with and without it)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from detectors.annotations import parse_annotations
from streams.cli.simulate import annotations_yaml
from streams.simulator.incidents import (
    KINDS,
    Incident,
    IncidentError,
    load_incidents,
    make_incident,
    parse_at,
    parse_duration,
)
from streams.simulator.traffic import Release, simulate
from tests.conftest import EXAMPLE_PLAN, ROOT
from tracking_plan.loader import load_plan
from tracking_plan.model import Plan
from tracking_plan.normalise import parse_timestamp
from tracking_plan.validator import compile_plan

MONDAY = datetime(2026, 11, 2, tzinfo=UTC)
INCIDENT_START = MONDAY + timedelta(hours=17)  # a busy weekday evening
BUCKET = 600.0
RELEASES = [Release("ios", "5.7.0", MONDAY.timestamp() - 86_400 * 5, 36.0)]


@pytest.fixture(scope="module")
def plan() -> Plan:
    return load_plan(EXAMPLE_PLAN)


def run(plan: Plan, incidents: list[Incident], users: int = 5000) -> list[dict[str, Any]]:
    """Traffic from 1 h before to 3 h after the incident start (a small shop); conversion
    cases need more checkouts: a big shop, from 10 min before to 3 h 10 min after."""
    if users > 5000:
        begin, days = INCIDENT_START - timedelta(minutes=10), 200 / 1440
    else:
        begin, days = INCIDENT_START - timedelta(hours=1), 4 / 24
    return list(simulate(plan, begin, days, users, 21, incidents, releases=RELEASES))


def profile(
    plan: Plan, envelopes: Iterable[dict[str, Any]], validate: bool = True
) -> Counter[tuple[Any, ...]]:
    """Deduplicated calls per (10-min bucket of event time, source, call name, quarantined)."""
    validator = compile_plan(plan)
    seen: set[str] = set()
    counts: Counter[tuple[Any, ...]] = Counter()
    for envelope in envelopes:
        body = envelope["body"]
        if body["messageId"] in seen:
            continue
        seen.add(body["messageId"])
        received = parse_timestamp(envelope["received_at"])
        outcome = validator.validate(body, envelope["source"], received).outcome if validate else ""
        moment = parse_timestamp(body["timestamp"])
        bucket = int((moment - INCIDENT_START.timestamp()) // BUCKET)
        name = body.get("event") or body.get("name") or body["type"]
        counts[(bucket, envelope["source"], name, outcome == "quarantined")] += 1
    return counts


def window_buckets(incident: Incident) -> range:
    end = (incident.effect_end - INCIDENT_START).total_seconds()
    return range(0, int(-(-end // BUCKET)))


def changed(base: Counter[tuple[Any, ...]], other: Counter[tuple[Any, ...]]) -> set[Any]:
    return {k for k in set(base) | set(other) if base[k] != other[k]}


def total(counts: Counter[tuple[Any, ...]], inside: range, **match: Any) -> int:
    fields = ("bucket", "source", "name", "bad")
    return sum(
        n
        for key, n in counts.items()
        if key[0] in inside and all(key[fields.index(k)] == v for k, v in match.items())
    )


def conversion(envelopes: list[dict[str, Any]], source: str, inside: range) -> tuple[int, int]:
    """(users who started a checkout on `source` in the window, those who then ordered)."""
    starters: dict[str, float] = {}
    orders: dict[str, list[float]] = {}
    for envelope in envelopes:
        body = envelope["body"]
        moment = parse_timestamp(body["timestamp"])
        bucket = int((moment - INCIDENT_START.timestamp()) // BUCKET)
        name = body.get("event")
        if name == "Checkout Started" and envelope["source"] == source and bucket in inside:
            starters.setdefault(body["anonymousId"], moment)
        elif name == "Order Completed":
            orders.setdefault(body["anonymousId"], []).append(moment)
    converted = sum(
        any(start <= t <= start + 3600 for t in orders.get(user, ()))
        for user, start in starters.items()
    )
    return len(starters), converted


def make(plan: Plan, kind: str, minutes: int, **params: Any) -> Incident:
    end = INCIDENT_START + timedelta(minutes=minutes)
    return make_incident(kind, INCIDENT_START, end, params, name=kind, plan=plan)


BIG = 15_000  # users per day for the conversion cases


@pytest.fixture(scope="module")
def baselines(plan: Plan) -> dict[int, tuple[list[dict[str, Any]], Counter[tuple[Any, ...]]]]:
    """Traffic without incidents, per shop size (generated on first use)."""

    class Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, users: int) -> Any:
            envelopes = run(plan, [], users)
            self[users] = (envelopes, profile(plan, envelopes, users <= 5000))
            return self[users]

    return Lazy()


CASES = {
    "spike": {"event": "Product Viewed", "source": "web", "factor": 3},
    "drop": {"source": "ios", "keep": 0.4},
    "disappeared": {"event": "Products Searched", "source": "web"},
    "new_event": {"event": "Wishlist Added", "source": "ios", "app_version": "5.8.1",
                  "rollout_hours": 1},
    "violation_surge": {"event": "Product List Viewed", "source": "ios", "app_version": "5.8.1",
                        "rollout_hours": 1, "rename": {"list_id": "listId"}},
    "conversion_up": {"source": "web"},
    "conversion_down": {"source": "web", "fail": 0.5},
    "campaign": {"sources": ["web"], "factor": 2.0},
}  # fmt: skip


def test_every_kind_has_a_case() -> None:
    assert set(CASES) == set(KINDS)


@pytest.mark.parametrize("kind", list(CASES))
def test_incident_changes_the_data_in_its_window_only(
    plan: Plan, baselines: dict[int, Any], kind: str
) -> None:
    minutes = 45 if kind in ("spike", "drop", "campaign") else 120
    incident = make(plan, kind, minutes, **CASES[kind])
    users = BIG if kind.startswith("conversion") else 5000
    base_envelopes, base = baselines[users]
    envelopes = run(plan, [incident], users)
    counts = profile(plan, envelopes, users <= 5000)
    inside = window_buckets(incident)
    diff = changed(base, counts)
    assert diff, "the incident changed nothing"
    assert {key[0] for key in diff} <= set(inside), "changes outside the window"
    params = incident.params
    if kind == "spike":
        ratio = total(counts, inside, source="web", name="Product Viewed") / total(
            base, inside, source="web", name="Product Viewed"
        )
        assert 2.5 < ratio < 3.5
        assert {key[1:3] for key in diff} == {("web", "Product Viewed")}
    elif kind == "drop":
        ratio = total(counts, inside, source="ios") / total(base, inside, source="ios")
        assert 0.3 < ratio < 0.5
        assert {key[1] for key in diff} <= {"ios", "server"}
    elif kind == "disappeared":
        assert total(counts, inside, source="web", name="Products Searched") == 0
        assert total(base, inside, source="web", name="Products Searched") > 50
        assert {key[1:3] for key in diff} == {("web", "Products Searched")}
    elif kind == "new_event":
        added = total(counts, inside, source="ios", name="Wishlist Added", bad=True)
        assert added > 30 and total(base, inside, name="Wishlist Added") == 0
        assert {key[1:3] for key in diff} == {("ios", "Wishlist Added")}
    elif kind == "violation_surge":
        bad = total(counts, inside, source="ios", name="Product List Viewed", bad=True)
        bad_before = total(base, inside, source="ios", name="Product List Viewed", bad=True)
        assert bad > 10 * max(1, bad_before)
        assert {key[1:3] for key in diff} == {("ios", "Product List Viewed")}
    elif kind in ("conversion_up", "conversion_down"):
        started, converted = conversion(base_envelopes, params["source"], inside)
        started_now, converted_now = conversion(envelopes, params["source"], inside)
        assert started == started_now > 60
        ratio = (converted_now / started_now) / (converted / started)
        if kind == "conversion_up":
            assert 1.3 < ratio < 2.4  # about +80 %
            assert {key[1:3] for key in diff} == {("web", "Order Completed")}
        else:
            assert 0.25 < ratio < 0.75  # about -50 %
            assert {key[1:3] for key in diff} == {("server", "Order Completed")}
    elif kind == "campaign":
        ratio = total(counts, range(0, 4), source="web") / total(base, range(0, 4), source="web")
        assert 1.6 < ratio < 2.4
        assert {key[1] for key in diff} <= {"web", "server"}


def test_version_incidents_hit_only_their_release(plan: Plan) -> None:
    incident = make(plan, "violation_surge", 120, **CASES["violation_surge"])
    envelopes = run(plan, [incident])
    validator = compile_plan(plan)
    bad_versions: Counter[str] = Counter()
    for envelope in envelopes:
        body = envelope["body"]
        if body.get("event") == "Product List Viewed" and "listId" in body["properties"]:
            bad_versions[body["context"]["app"]["version"]] += 1
            result = validator.validate(body, envelope["source"], None)
            assert result.outcome == "quarantined"
    assert set(bad_versions) == {"5.8.1"}


def test_example_schedule_covers_every_kind_with_realistic_sizes(plan: Plan) -> None:
    incidents = load_incidents(ROOT / "examples" / "incidents.yaml", MONDAY, plan)
    assert {i.kind for i in incidents} == set(KINDS)
    for incident in incidents:
        assert MONDAY + timedelta(days=7) <= incident.start < incident.end
        assert incident.end <= MONDAY + timedelta(days=14)
        p = incident.params
        if incident.kind == "spike":
            assert 2 <= p["factor"] <= 4
        if incident.kind == "drop":
            assert 0.3 <= p["keep"] <= 0.5
        if incident.kind == "conversion_down":
            assert 0.4 <= p["fail"] <= 0.6
        label = incident.label()
        assert label["kind"] == incident.kind and label["start"] < label["end"]
        assert label["expect_alert"] == (incident.kind != "campaign")
        if incident.kind.startswith("conversion"):
            assert {"from_event", "to_event", "source"} <= set(label["series"])
        elif incident.kind not in ("drop", "campaign"):
            assert {"event", "source"} <= set(label["series"])
    ordered = sorted(incidents, key=lambda i: i.start)
    for first, second in itertools.pairwise(ordered):
        assert first.effect_end <= second.start, f"{first.name} overlaps {second.name}"


def test_annotations_file_matches_the_detectors_format(plan: Plan) -> None:
    incidents = load_incidents(ROOT / "examples" / "incidents.yaml", MONDAY, plan)
    parsed = parse_annotations(annotations_yaml(incidents))
    campaigns = [i for i in incidents if i.kind == "campaign"]
    assert [a.name for a in parsed] == [c.name for c in campaigns]
    assert all("server" in a.sources for a in parsed)
    assert all(a.start == c.start.timestamp() for a, c in zip(parsed, campaigns, strict=True))
    committed = parse_annotations((ROOT / "examples" / "annotations.yaml").read_text())
    assert committed == parsed


def test_times_and_durations() -> None:
    assert parse_at("day 9 14:00", MONDAY + timedelta(hours=5)) == MONDAY + timedelta(
        days=9, hours=14
    )
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2d") == timedelta(days=2)
    assert parse_duration(45) == timedelta(minutes=45)
    for bad in ("tomorrow", "day x 1:00", "day 1 25:00"):
        with pytest.raises(ValueError):
            parse_at(bad, MONDAY)
    for bad in ("0m", "soon", "-5m", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("kind: spikes\n    at: day 1 10:00\n    duration: 1h", "unknown kind 'spikes'"),
        ("kind: spike\n    at: day 1 10:00\n    duration: 1h\n    source: web", "needs event"),
        ("kind: spike\n    at: day 1\n    duration: 1h", "not like 'day 9 14:00'"),
        ("kind: drop\n    at: day 1 10:00\n    duration: 1h\n    source: tv", "not in the plan"),
        ("kind: drop\n    at: day 1 10:00\n    duration: 1h\n    source: web\n    keep: 7",
         "keep must be between 0 and 1"),
        ("kind: spike\n    at: day 1 10:00\n    duration: 1h\n    event: Nope\n    source: web",
         "event 'Nope' is not in the plan"),
        ("kind: new_event\n    at: day 1 10:00\n    duration: 1h\n    event: Product Viewed\n"
         "    source: ios\n    app_version: '1.0'", "already in the plan"),
        ("kind: drop\n    at: day 1 10:00\n    duration: 1h\n    source: web\n    colour: red",
         "unknown parameter(s) colour"),
        ("at: day 1 10:00", "missing kind, duration"),
    ],
)  # fmt: skip
def test_bad_schedule_entries_name_the_problem(
    plan: Plan, tmp_path: Path, entry: str, message: str
) -> None:
    path = tmp_path / "incidents.yaml"
    path.write_text(f"incidents:\n  - name: Odd one\n    {entry}\n", encoding="utf-8")
    with pytest.raises(IncidentError) as info:
        load_incidents(path, MONDAY, plan)
    text = str(info.value)
    assert str(path) in text and "incident 1 (Odd one)" in text and message in text


@pytest.mark.parametrize(
    "content",
    [b"incidents: [unclosed", b"\xff\xfe not utf-8", b"- just a list", b"incidents: 3"],
)
def test_unreadable_schedules(plan: Plan, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(IncidentError, match=str(path)):
        load_incidents(path, MONDAY, plan)
    with pytest.raises(IncidentError, match="cannot read"):
        load_incidents(tmp_path / "missing.yaml", MONDAY, plan)


def test_labels_name_the_deviations_the_incident_causes_elsewhere():
    from datetime import UTC, datetime, timedelta

    from streams.simulator.incidents import make_incident

    start = datetime(2026, 11, 2, tzinfo=UTC)
    end = start + timedelta(hours=2)
    up = make_incident("conversion_up", start, end, {"source": "web"}).label()
    assert {"kind": "spike", "series": {"event": "Order Completed"}} in up["related"]
    gone = make_incident(
        "disappeared", start, end, {"event": "A", "source": "ios", "app_version": "5.7.1"}
    ).label()
    assert gone["related"] == [
        {"kind": "drop", "series": {"event": "A", "source": "ios", "platform": "ios"}}
    ]
    web = make_incident("disappeared", start, end, {"event": "A", "source": "web"}).label()
    assert "related" not in web  # a whole event gone: nothing else moves
