"""End to end with the real worker process: it quarantines events its plan does not know, the
replay with the fixed plan republishes them to events.valid once, and the worker's aggregate
stage does not count them a second time (they were counted, as quarantined, on arrival)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import pytest
from test_quarantine_support import PARTITIONS, T0, V2, plan, scenario

from streams.broker import EmbeddedBroker
from streams.plan_sync import ActivePlan
from streams.quarantine import replay_quarantine
from streams.topics import QUARANTINE, VALID, WINDOWS
from tests.streaming_support import produce, read_topic
from tests.test_worker import closers
from tests.worker_process import start_worker, stop_worker

pytestmark = pytest.mark.integration


def ios_viewed(flushes: list[dict]) -> tuple[int, int]:
    """(count, violations) of the ios Product Viewed volume windows in `flushes`."""
    records = [
        r
        for f in flushes
        for r in f["records"]
        if r["kind"] == "volume"
        and r["series"].get("event") == "Product Viewed"
        and r["series"].get("source") == "ios"
    ]
    return sum(r["count"] for r in records), sum(r["violations"] for r in records)


def all_closed(flushes: list[dict], until: float) -> bool:
    """Every aggregate partition has closed its windows up to `until`."""
    closed = {f["partition"]: f["closed_until"] or 0 for f in flushes}
    return len(closed) == PARTITIONS and min(closed.values()) >= until


def test_worker_quarantine_replay_roundtrip(fresh_broker: EmbeddedBroker, tmp_path: Path) -> None:
    bootstrap = fresh_broker.bootstrap
    envs = scenario(fixable=40, broken=10, unplanned=5)
    produce(
        bootstrap, envs["fixable"] + envs["broken"] + envs["unplanned"] + envs["valid"], PARTITIONS
    )
    log = tmp_path / "worker.log"
    proc = start_worker(bootstrap, f"tw-{uuid.uuid4().hex[:6]}", log, tmp_path)
    try:
        quarantine = read_topic(
            bootstrap, QUARANTINE, until=lambda ms: sum(map(len, ms)) >= 55, timeout=120
        )
        assert sum(map(len, quarantine)) == 55

        summary = asyncio.run(replay_quarantine(bootstrap, ActivePlan.of(plan(V2, coupon=True))))
        assert summary.republished == 40
        assert dict(summary.still_invalid) == {"wrong_type": 10, "unplanned_event": 5}

        produce(bootstrap, closers(3600), PARTITIONS)  # closes the windows of the scenario
        flushes = read_topic(
            bootstrap, WINDOWS, until=lambda fs: all_closed(fs, T0 + 600), timeout=120
        )
        valid = read_topic(bootstrap, VALID, idle=3, timeout=60)
    finally:
        assert stop_worker(proc) == 0, log.read_text()[-3000:]

    # 40 valid arrived, 50 broke the plan (40 fixable, 10 broken): counted once each, and the
    # 40 replayed events are not counted again
    assert ios_viewed(flushes) == (40, 50)
    forwarded = Counter(
        item["event"]["messageId"]
        for msg in valid
        for item in msg["events"]
        if item["source"] == "ios"
    )
    expected = {e["body"]["messageId"] for e in envs["valid"] + envs["fixable"]}
    assert set(forwarded) == expected and max(forwarded.values()) == 1
    assert "unreadable events.valid" not in log.read_text()
