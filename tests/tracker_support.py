"""Shared by the real-tracker tests (Python SDKs, analytics-node, analytics.js in Chromium): the
collector + embedded broker + worker stack, reading the topics back, and checking that every
call landed where it should."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
from kafka import KafkaConsumer, TopicPartition
from test_collector import CollectorThread

from streams.broker import EmbeddedBroker, create_topics
from streams.collector.producer import BatchingProducer
from streams.settings import Settings
from streams.topics import QUARANTINE, VALID
from tests.worker_process import start_worker, stop_worker


@contextmanager
def tracker_stack(
    tmp: Path, keys: dict[str, str], pii_key: str | None = None
) -> Iterator[tuple[str, CollectorThread]]:
    """Embedded broker, collector (`keys`: write key -> source), worker: (bootstrap, collector)."""
    with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
        create_topics(broker.bootstrap)
        settings = Settings(broker=broker.bootstrap, pii_key=pii_key)

        async def connect() -> BatchingProducer:
            return await BatchingProducer.connect(settings)

        collector = CollectorThread(settings, connect, keys).start()
        log = tmp / "worker.log"
        worker = start_worker(broker.bootstrap, f"tw-{uuid.uuid4().hex[:6]}", log, tmp)
        try:
            yield broker.bootstrap, collector
        finally:
            collector.stop()
            assert stop_worker(worker) == 0, log.read_text()[-3000:]


def raw_values(bootstrap: str, topic: str) -> list[bytes]:
    """Every message value of `topic`, from the start to its current end."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        values: list[bytes] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            assert time.monotonic() < deadline, f"{topic} not read to its end"
            for records in consumer.poll(timeout_ms=300).values():
                values += [r.value for r in records if r.value is not None]
        return values
    finally:
        consumer.close()


def landed(bootstrap: str) -> tuple[dict[str, dict], dict[str, dict]]:
    """messageId -> forwarded event (events.valid) and -> quarantine record."""
    valid = {
        item["event"]["messageId"]: item["event"]
        for value in raw_values(bootstrap, VALID)
        for item in orjson.loads(value)["events"]
    }
    quarantined = {
        record["envelope"]["body"]["messageId"]: record
        for value in raw_values(bootstrap, QUARANTINE)
        for record in orjson.loads(value)
        if record.get("envelope")
    }
    return valid, quarantined


def wait_landed(
    bootstrap: str, ids: set[str], timeout: float = 120
) -> tuple[dict[str, dict], dict[str, dict]]:
    """`landed` once every id in `ids` is in events.valid or events.quarantine (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        valid, quarantined = landed(bootstrap)
        if ids <= set(valid) | set(quarantined) or time.monotonic() > deadline:
            return valid, quarantined
        time.sleep(1)


def codes(record: dict) -> set[tuple[str, str]]:
    return {(v["code"], v["path"]) for v in record["violations"]}


def check_landing(
    sent: dict[str, str], valid: dict[str, dict], quarantined: dict[str, dict]
) -> None:
    """Every messageId of `sent` landed as expected: "valid" (events.valid, no violation),
    "flag:CODE:PATH" (events.valid with that violation), "bad:CODE:PATH" (quarantine only)."""
    arrived = set(valid) | set(quarantined)
    assert set(sent) - arrived == set(), "events lost on the way"
    for mid, expect in sent.items():
        kind, _, detail = expect.partition(":")
        code, _, path = detail.partition(":")
        if kind == "valid":
            assert mid in valid and "violations" not in valid[mid], (
                mid,
                valid.get(mid) or quarantined.get(mid),
            )
        elif kind == "flag":
            assert mid in valid and (code, path) in codes(valid[mid]), (mid, valid.get(mid))
        else:
            assert mid in quarantined and mid not in valid, (mid, valid.get(mid))
            assert (code, path) in codes(quarantined[mid]), (mid, quarantined[mid])
