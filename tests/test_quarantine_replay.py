"""Quarantine replay against the real embedded broker: exactly the now-valid events come back,
once, even when the replay runs twice or dies midway; --since and the filters are honoured;
hostile quarantine messages are counted and skipped."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from test_quarantine_support import (
    V1,
    V2,
    plan,
    produce,
    quarantine_messages,
    read_all,
    replayed_events,
    replayed_ids,
    scenario,
)

from streams.broker import EmbeddedBroker
from streams.plan_sync import ActivePlan
from streams.quarantine import (
    BAD_ENVELOPE,
    LEDGER,
    NO_ENVELOPE,
    NOT_A_RECORD,
    NOT_JSON,
    NOT_RECORDS,
    OVERSIZED,
    ReplayError,
    ReplayFilter,
    ReplaySummary,
    SimulatedCrash,
    replay_quarantine,
)
from streams.topics import QUARANTINE

pytestmark = pytest.mark.integration

FIXED = ActivePlan.of(plan(V2, coupon=True))


def replay(bootstrap: str, active: ActivePlan = FIXED, **kwargs) -> ReplaySummary:
    return asyncio.run(replay_quarantine(bootstrap, active, **kwargs))


def quarantine_scenario(bootstrap: str, tag: str = "a", timestamp_ms: int | None = None) -> dict:
    envs = scenario(tag=tag)
    everything = envs["fixable"] + envs["broken"] + envs["unplanned"] + envs["valid"]
    messages = quarantine_messages(everything, plan(V1))
    assert sum(len(orjson.loads(v)) for _, v in messages) == 55  # the valid ones pass
    produce(bootstrap, QUARANTINE, messages, timestamp_ms)
    return envs


def ids(envelopes: list[dict]) -> set[str]:
    return {e["body"]["messageId"] for e in envelopes}


def test_replay_republishes_exactly_the_now_valid_events(fresh_broker: EmbeddedBroker) -> None:
    envs = quarantine_scenario(fresh_broker.bootstrap)
    summary = replay(fresh_broker.bootstrap)

    assert summary.republished == 40
    assert summary.still_invalid_events == 15
    assert dict(summary.still_invalid) == {"wrong_type": 10, "unplanned_event": 5}
    assert summary.records == 55 and not summary.unreadable and summary.already_replayed == 0
    assert dict(summary.by_event) == {"Product Viewed": 40}
    assert summary.plan_version == V2

    sent = replayed_ids(fresh_broker.bootstrap)
    assert sorted(sent) == sorted(ids(envs["fixable"]))  # each exactly once
    for partition, msg in replayed_events(fresh_broker.bootstrap):
        assert msg["origin"] == [partition, -1] and msg["tallies"] == []
        assert msg["replay"]["plan_version"] == V2
        assert msg["replay"]["ids"] == [e["event"]["messageId"] for e in msg["events"]]
        for item in msg["events"]:
            assert item["source"] == "ios"
            assert item["event"]["properties"]["coupon"] == "SALE10"


def test_second_replay_republishes_nothing(fresh_broker: EmbeddedBroker) -> None:
    quarantine_scenario(fresh_broker.bootstrap)
    first = replay(fresh_broker.bootstrap)
    second = replay(fresh_broker.bootstrap)
    assert first.republished == 40
    assert second.republished == 0 and second.already_replayed == 40
    assert second.still_invalid_events == 15  # still reported, never sent
    assert len(replayed_ids(fresh_broker.bootstrap)) == 40

    # new quarantined events after the fix are replayed; the old ones still are not
    quarantine_scenario(fresh_broker.bootstrap, tag="b")
    third = replay(fresh_broker.bootstrap)
    assert third.republished == 40 and third.already_replayed == 40
    sent = replayed_ids(fresh_broker.bootstrap)
    assert len(sent) == len(set(sent)) == 80


def test_crash_midway_then_rerun_sends_each_event_once(fresh_broker: EmbeddedBroker) -> None:
    envs = quarantine_scenario(fresh_broker.bootstrap)
    with pytest.raises(SimulatedCrash):
        replay(fresh_broker.bootstrap, chunk=7, crash_after_chunks=2)
    after_crash = set(replayed_ids(fresh_broker.bootstrap))
    recorded = {
        key.decode()[3:]
        for _, _, key, _ in read_all(fresh_broker.bootstrap, LEDGER)
        if key.startswith(b"id:")
    }
    assert recorded < after_crash  # the last chunk was sent but never recorded as replayed

    with pytest.raises(ReplayError, match="has not finished"):  # it might still be running
        replay(fresh_broker.bootstrap, chunk=7)
    rerun = replay(fresh_broker.bootstrap, chunk=7, force=True)  # we know it died
    assert rerun.recovered == len(after_crash - recorded)
    assert rerun.republished + rerun.already_replayed == 40
    assert rerun.republished == 40 - len(after_crash)
    sent = replayed_ids(fresh_broker.bootstrap)
    assert Counter(sent) == Counter(ids(envs["fixable"]))

    assert replay(fresh_broker.bootstrap).republished == 0


def test_dry_run_counts_but_sends_nothing(fresh_broker: EmbeddedBroker) -> None:
    quarantine_scenario(fresh_broker.bootstrap)
    dry = replay(fresh_broker.bootstrap, dry_run=True)
    assert dry.republished == 40 and dry.dry_run
    assert replayed_ids(fresh_broker.bootstrap) == []
    assert read_all(fresh_broker.bootstrap, LEDGER) == []
    assert replay(fresh_broker.bootstrap).republished == 40


def test_since_skips_older_quarantine(fresh_broker: EmbeddedBroker) -> None:
    now = datetime.now(UTC)
    old = quarantine_scenario(
        fresh_broker.bootstrap, "old", int((now - timedelta(hours=3)).timestamp() * 1000)
    )
    new = quarantine_scenario(
        fresh_broker.bootstrap, "new", int((now - timedelta(minutes=10)).timestamp() * 1000)
    )
    summary = replay(fresh_broker.bootstrap, since=now - timedelta(hours=1))
    assert summary.republished == 40 and summary.records == 55
    assert set(replayed_ids(fresh_broker.bootstrap)) == ids(new["fixable"])

    wider = replay(fresh_broker.bootstrap, since=now - timedelta(hours=4))
    assert wider.republished == 40 and wider.already_replayed == 40
    assert set(replayed_ids(fresh_broker.bootstrap)) == ids(new["fixable"]) | ids(old["fixable"])

    assert replay(fresh_broker.bootstrap, since=now - timedelta(seconds=1)).records == 0


def test_filters_select_what_is_replayed(fresh_broker: EmbeddedBroker) -> None:
    quarantine_scenario(fresh_broker.bootstrap)
    other = replay(fresh_broker.bootstrap, replay_filter=ReplayFilter(events=frozenset({"Nope"})))
    assert other.republished == 0 and other.filtered_out == 55
    web = replay(fresh_broker.bootstrap, replay_filter=ReplayFilter(sources=frozenset({"web"})))
    assert web.republished == 0 and web.filtered_out == 55
    by_code = replay(
        fresh_broker.bootstrap, replay_filter=ReplayFilter(codes=frozenset({"unplanned_event"}))
    )
    assert by_code.republished == 0 and by_code.still_invalid_events == 5
    assert by_code.filtered_out == 50
    viewed = replay(
        fresh_broker.bootstrap,
        replay_filter=ReplayFilter(
            events=frozenset({"Product Viewed"}), sources=frozenset({"ios"})
        ),
    )
    assert viewed.republished == 40 and viewed.filtered_out == 5


def test_hostile_quarantine_messages_are_counted_and_skipped(
    fresh_broker: EmbeddedBroker,
) -> None:
    good = quarantine_messages(scenario(fixable=3, broken=0, unplanned=0)["fixable"], plan(V1))
    p, value = good[0]
    huge = orjson.loads(value)[0]
    huge["envelope"]["body"]["properties"]["blob"] = "x" * 1_200_000
    huge["envelope"]["body"]["messageId"] = "huge-1"
    deep = b"[" * 5000 + b"]" * 5000
    hostile = [
        b"not json at all",
        b'"a string"',
        b"[1, null, []]",  # three records that are not records
        orjson.dumps([{"envelope": None, "violations": [], "raw": "\xff"}]),
        orjson.dumps([{"violations": [{"code": "x"}]}]),  # no envelope key
        orjson.dumps([{"envelope": {"source": "ios"}, "violations": []}]),
        orjson.dumps(
            [{"envelope": {"source": "", "received_at": "x", "body": {}}, "violations": []}]
        ),
        orjson.dumps([huge]),
        deep,
        b'[{"envelope": {"source": "ios", "received_at": "\\ud800", "body": {}}, '
        b'"violations": []}]',
        orjson.dumps(
            [
                {
                    "envelope": {
                        "source": "\u202eios",
                        "received_at": "2026-01-01T00:00:00Z",
                        "body": {"event": "\x00", "messageId": "z"},
                    },
                    "violations": [],
                }
            ]
        ),
    ]
    produce(fresh_broker.bootstrap, QUARANTINE, [(p, v) for v in hostile] + good)
    summary = replay(fresh_broker.bootstrap)

    assert summary.republished == 3
    assert summary.unreadable[NOT_JSON] == 3  # text, deep nesting, lone surrogate
    assert summary.unreadable[NOT_RECORDS] == 1
    assert summary.unreadable[NOT_A_RECORD] == 3
    assert summary.unreadable[NO_ENVELOPE] == 2
    assert summary.unreadable[BAD_ENVELOPE] == 2
    assert summary.unreadable[OVERSIZED] == 1
    assert summary.still_invalid_events == 1  # the odd but well-formed envelope
    assert summary.records == 3 + 1 + 3 + 2 + 2 + 1 + 1 + 3
    assert len(replayed_ids(fresh_broker.bootstrap)) == 3


def test_missing_topics_is_a_clear_error(tmp_path) -> None:
    with (
        EmbeddedBroker(log_path=tmp_path / "broker.log") as bare,
        pytest.raises(ReplayError, match="must exist"),
    ):
        replay(bare.bootstrap)
