"""The pure part of the quarantine replay: --since parsing, filters, and the planner's accounting
on any input (hypothesis), without Kafka."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_quarantine_support import V1, V2, plan, quarantine_messages, scenario

from streams.quarantine import (
    NO_ENVELOPE,
    ReplayFilter,
    ReplayPlanner,
    ledger_key,
    parse_since,
    replay_marker,
    valid_messages,
)
from tracking_plan.validator import compile_plan

NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)
FIXED = compile_plan(plan(V2, coupon=True))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW - timedelta(hours=2)),
        (" 30M ", NOW - timedelta(minutes=30)),
        ("1.5d", NOW - timedelta(hours=36)),
        ("90s", NOW - timedelta(seconds=90)),
        ("1w", NOW - timedelta(days=7)),
        ("2026-11-23T17:00:00Z", NOW - timedelta(hours=1)),
        ("2026-11-23T18:00:00+01:00", NOW - timedelta(hours=1)),
        ("2026-11-23T17:00:00", NOW - timedelta(hours=1)),  # no zone: UTC
        ("2026-11-23", NOW - timedelta(hours=18)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_parse_since_accepts_or_explains_anything(text: str) -> None:
    try:
        when = parse_since(text, NOW)
    except ValueError as exc:
        assert "--since" in str(exc)
    else:
        assert when <= NOW and when.tzinfo is not None


def test_planner_sorts_a_worker_quarantine() -> None:
    envs = scenario(fixable=12, broken=3, unplanned=2)
    messages = quarantine_messages(envs["fixable"] + envs["broken"] + envs["unplanned"], plan(V1))
    planner = ReplayPlanner(FIXED, valid_partitions=4, replayed={"fix-a-0"})
    chosen = [item for p, value in messages for item in planner.message(p, 0, value)]
    s = planner.summary
    assert len(chosen) == s.republished == 11 and s.already_replayed == 1
    assert dict(s.still_invalid) == {"wrong_type": 3, "unplanned_event": 2}
    assert {c.key for c in chosen} == {f"fix-a-{i}" for i in range(1, 12)}
    assert all(c.partition == c.where[0] for c in chosen)  # the worker's partition

    # the same messages again in the same run: each id is chosen once
    again = [item for p, value in messages for item in planner.message(p, 1, value)]
    assert again == [] and planner.summary.repeated == 11

    out = valid_messages(chosen, "run-1", V2)
    assert len(out) == len({c.partition for c in chosen})  # one message per partition
    for p, value in out:
        msg = orjson.loads(value)
        assert msg["origin"] == [p, -1] and msg["tallies"] == []
        assert replay_marker(value) == msg["replay"] and msg["replay"]["run"] == "run-1"
    assert sum(len(orjson.loads(v)["events"]) for _, v in out) == 11

    small = valid_messages(chosen, "run-1", V2, max_bytes=1000)  # split by size, nothing lost
    assert len(small) > len(out)
    assert sorted(k for _, v in small for k in orjson.loads(v)["replay"]["ids"]) == sorted(
        c.key for c in chosen
    )
    assert all(len(v) < 2000 for _, v in small)


def test_filter_by_code_event_and_source() -> None:
    f = ReplayFilter(events=frozenset({"A"}), sources=frozenset({"web"}), codes=frozenset({"x"}))
    assert f.matches("A", "web", {"x", "y"})
    assert not f.matches("B", "web", {"x"})
    assert not f.matches("A", "ios", {"x"})
    assert not f.matches("A", "web", {"y"})
    assert ReplayFilter().matches(None, "anything", set())


def test_ledger_key_is_bounded() -> None:
    body = {"messageId": "m" * 10_000}
    key = ledger_key({"source": "web", "received_at": "x", "body": body})
    assert key.startswith("sha1:") and len(key) < 100
    assert ledger_key({"source": "web", "received_at": "x", "body": {"messageId": "abc"}}) == "abc"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
records = st.fixed_dictionaries(
    {},
    optional={
        "envelope": json_values
        | st.fixed_dictionaries(
            {"source": st.text(max_size=5), "received_at": st.text(max_size=30)},
            optional={"body": json_values},
        ),
        "violations": st.lists(json_values, max_size=3),
        "plan_version": json_values,
    },
)


@settings(max_examples=200, deadline=None)
@given(st.lists(records | json_values, max_size=6) | json_values | st.binary(max_size=50))
def test_planner_never_crashes_and_accounts_for_every_record(value: Any) -> None:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()  # big ints, NaN too
    planner = ReplayPlanner(FIXED, valid_partitions=3)
    chosen = planner.message(5, 9, raw)
    s = planner.summary
    assert s.messages == 1
    accounted = (
        sum(s.unreadable.values())
        + s.filtered_out
        + s.still_invalid_events
        + s.republished
        + s.already_replayed
        + s.repeated
    )
    assert accounted == s.records
    assert len(chosen) == s.republished
    assert all(0 <= c.partition < 3 for c in chosen)


def test_raw_records_of_unreadable_input_are_skipped_with_reason() -> None:
    record = {"envelope": None, "violations": [{"code": "malformed_json"}], "raw": "{oops"}
    planner = ReplayPlanner(FIXED, valid_partitions=4)
    assert planner.message(0, 0, orjson.dumps([record])) == []
    assert dict(planner.summary.unreadable) == {NO_ENVELOPE: 1}
