"""The traffic simulator: deterministic, valid per the plan, realistic shape (measured on the
generated stream, with the real plan loader and validator)."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams.simulator.traffic import Release, simulate
from tests.conftest import EXAMPLE_PLAN
from tracking_plan.loader import load_plan, parse_plan
from tracking_plan.model import Plan
from tracking_plan.normalise import parse_timestamp
from tracking_plan.validator import compile_plan

MONDAY = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def plan() -> Plan:
    return load_plan(EXAMPLE_PLAN)


@pytest.fixture(scope="module")
def two_days(plan: Plan) -> list[dict[str, Any]]:
    """Two weekdays of a small shop, with the default bug and duplicate rates."""
    return list(simulate(plan, MONDAY, 2.0, 2000, 11))


def _name(body: dict[str, Any]) -> str:
    return body.get("event") or body.get("name") or body["type"]


def test_same_seed_same_stream_other_seed_other_stream(plan: Plan) -> None:
    first = list(simulate(plan, MONDAY, 0.1, 3000, 5))
    again = list(simulate(plan, MONDAY, 0.1, 3000, 5))
    other = list(simulate(plan, MONDAY, 0.1, 3000, 6))
    assert len(first) > 500
    assert first == again
    assert first != other


def test_envelope_shape_and_received_at_order(two_days: list[dict[str, Any]]) -> None:
    previous = ""
    for envelope in two_days:
        assert set(envelope) == {"source", "received_at", "body"}
        received = envelope["received_at"]
        assert received.endswith("Z") and len(received) == 24
        assert received >= previous  # same-width ISO strings sort like times
        previous = received
        body = envelope["body"]
        event_time = parse_timestamp(body["timestamp"])
        assert event_time is not None
        delay = parse_timestamp(received) - event_time
        assert 0 <= delay <= 1800.5  # small network delay; a few offline devices minutes late
        assert body["type"] in ("track", "page", "screen", "identify")
        assert body["anonymousId"]
        assert body["context"]["library"]["name"]
    assert previous < (MONDAY + timedelta(days=2)).isoformat()[:19]


def test_every_intended_valid_call_passes_the_validator(plan: Plan) -> None:
    validator = compile_plan(plan)
    outcomes: Counter[str] = Counter()
    problems = []
    envelopes = simulate(plan, MONDAY, 0.5, 3000, 3, bug_rate=0.0, duplicate_rate=0.0)
    for envelope in envelopes:
        received = parse_timestamp(envelope["received_at"])
        result = validator.validate(envelope["body"], envelope["source"], received)
        outcomes[result.outcome] += 1
        if result.violations:
            problems.append((_name(envelope["body"]), [v.to_dict() for v in result.violations]))
    assert outcomes["valid"] > 5000
    assert problems == []


def test_background_bugs_are_about_half_a_percent(
    plan: Plan, two_days: list[dict[str, Any]]
) -> None:
    validator = compile_plan(plan)
    tracks = bad = 0
    codes: Counter[str] = Counter()
    for envelope in two_days:
        body = envelope["body"]
        result = validator.validate(
            body, envelope["source"], parse_timestamp(envelope["received_at"])
        )
        if body["type"] == "track":
            tracks += 1
            bad += bool(result.violations)
        codes.update(v.code for v in result.violations)
    assert 0.003 < bad / tracks < 0.008
    assert codes["missing_required"] > 0 and codes["wrong_type"] > 0


def test_client_retries_resend_the_same_message_id(two_days: list[dict[str, Any]]) -> None:
    ids = Counter(e["body"]["messageId"] for e in two_days)
    duplicated = [m for m, n in ids.items() if n > 1]
    assert 0.0005 < len(duplicated) / len(ids) < 0.005
    by_id = defaultdict(list)
    for envelope in two_days:
        if envelope["body"]["messageId"] in duplicated[:20]:
            by_id[envelope["body"]["messageId"]].append(envelope)
    for copies in by_id.values():
        first, second = copies[:2]
        assert first["received_at"] < second["received_at"]
        assert {k: v for k, v in first["body"].items() if k != "sentAt"} == {
            k: v for k, v in second["body"].items() if k != "sentAt"
        }


def test_daily_seasonality_evening_peak_night_trough(two_days: list[dict[str, Any]]) -> None:
    per_hour: Counter[int] = Counter()
    for envelope in two_days:
        per_hour[int(envelope["received_at"][11:13])] += 1
    # local time is UTC+1: the evening peak is around 19-20 UTC, the trough around 3 UTC
    assert per_hour[19] > 5 * per_hour[3]
    assert per_hour[19] > per_hour[9] > per_hour[3]


def test_weekend_has_another_daily_shape(plan: Plan) -> None:
    def share_before_noon(day: datetime) -> float:
        hours = Counter(int(e["received_at"][11:13]) for e in simulate(plan, day, 1.0, 1500, 2))
        return sum(hours[h] for h in range(6, 11)) / sum(hours.values())

    saturday = MONDAY + timedelta(days=5)
    assert share_before_noon(saturday) < share_before_noon(MONDAY)


def test_purchase_funnel_steps_decrease(plan: Plan, two_days: list[dict[str, Any]]) -> None:
    counts = Counter(_name(e["body"]) for e in two_days)
    steps = plan.funnels[0].steps
    values = [counts[s] for s in steps]
    assert values == sorted(values, reverse=True) and values[-1] > 20, values
    # realistic drop-offs: a few percent add to cart, about half of checkouts end in an order
    assert 0.01 < counts["Product Added"] / counts["Product Viewed"] < 0.06
    assert 0.3 < counts["Order Completed"] / counts["Checkout Started"] < 0.6


def test_sources_platforms_and_context(two_days: list[dict[str, Any]]) -> None:
    sources = Counter(e["source"] for e in two_days)
    assert set(sources) == {"web", "ios", "android", "server"}
    assert sources["web"] > sources["ios"] > sources["android"] > sources["server"]
    for envelope in two_days[:3000]:
        body, source = envelope["body"], envelope["source"]
        context = body["context"]
        if source in ("ios", "android"):
            assert context["app"]["version"]
            assert context["os"]["name"] == {"ios": "iOS", "android": "Android"}[source]
        if source == "web" and body["type"] == "page":
            assert context["page"]["path"].startswith("/")
    orders = [e for e in two_days if _name(e["body"]) == "Order Completed"]
    assert {e["source"] for e in orders} == {"server"}


def test_logins_identify_with_traits_then_user_id(two_days: list[dict[str, Any]]) -> None:
    identifies = [e["body"] for e in two_days if e["body"]["type"] == "identify"]
    assert len(identifies) > 50
    assert all(b["userId"].startswith("u_") and b["traits"]["country"] for b in identifies)
    user_of = {b["anonymousId"]: b["userId"] for b in identifies}
    later = [
        e["body"]
        for e in two_days
        if e["body"]["anonymousId"] in user_of and e["body"]["type"] == "track"
    ]
    with_user = [b for b in later if b.get("userId") == user_of[b["anonymousId"]]]
    assert with_user and all(b["userId"].startswith("u_") for b in with_user)


def test_app_release_ramps_up_over_a_day(plan: Plan) -> None:
    release = Release("ios", "9.9.0", (MONDAY + timedelta(hours=6)).timestamp(), 24.0)
    shares = []
    for day in range(3):
        begin = MONDAY + timedelta(days=day, hours=12)
        stream = simulate(plan, begin, 0.1, 4000, day, releases=[release])
        versions = Counter(
            e["body"]["context"]["app"]["version"] for e in stream if e["source"] == "ios"
        )
        shares.append(versions["9.9.0"] / sum(versions.values()))
    # 6 h after the release about half of the sessions run it, a day later nearly all
    assert 0.25 < shares[0] < 0.75
    assert shares[1] > 0.85 and shares[2] > 0.85


def test_streams_without_materialising(plan: Plan) -> None:
    """A year of traffic for a big shop: the first envelopes come at once (nothing is built
    ahead), and the pending heap stays small."""
    stream = simulate(plan, MONDAY, 365.0, 200_000, 1)
    first = list(itertools.islice(stream, 20_000))
    assert len(first) == 20_000
    frame = stream.gi_frame  # the generator's state: its heap holds only in-flight sessions
    assert frame is not None
    heap = frame.f_locals["heap"]
    assert len(heap) < 50_000


def test_bad_arguments(plan: Plan) -> None:
    with pytest.raises(ValueError, match="aware"):
        list(simulate(plan, datetime(2026, 1, 1), 1, 10, 1))
    with pytest.raises(ValueError, match="days"):
        list(simulate(plan, MONDAY, 0, 10, 1))
    with pytest.raises(ValueError, match="users_per_day"):
        list(simulate(plan, MONDAY, 1, 0, 1))


OTHER_PLAN = """
plan: Video app
version: "1"
sources:
  web: {platform: web}
  ios: {platform: ios}
funnels:
  - name: watch
    steps: [Video Opened, Video Played, Video Finished]
events:
  Product Viewed:
    properties:
      product_id: {type: string, required: true}
  Video Opened:
    properties:
      video_id: {type: string, required: true, max_length: 40}
      quality: {type: string, required: true, enum: [sd, hd, 4k]}
  Video Played:
    properties:
      position: {type: integer, required: true, min: 0, max: 7200}
      speed: {type: number, min: 0.5, max: 2}
  Video Finished:
    properties:
      watched: {type: number, required: true, min: 0, max: 1}
      liked: {type: boolean, required: true}
"""


def test_other_plans_get_valid_traffic_for_their_own_events() -> None:
    other = parse_plan(OTHER_PLAN, "video.yaml")
    validator = compile_plan(other)
    names: Counter[str] = Counter()
    for envelope in simulate(other, MONDAY, 0.5, 3000, 4, bug_rate=0.0):
        body = envelope["body"]
        result = validator.validate(body, envelope["source"], None)
        assert result.violations == [], (body, result.violations)
        names[_name(body)] += 1
    assert set(names) == {"Product Viewed", "Video Opened", "Video Played", "Video Finished"}
    assert names["Video Opened"] > names["Video Played"] > names["Video Finished"] > 10
