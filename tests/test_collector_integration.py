"""The collector against the real embedded Kafka-protocol broker (Tansu) over TCP.

HTTP in → events.raw out: exact counts, sources, micro-batches, per-user order, partition keys;
broker stopped → 503 + Retry-After; broker back → accepted again, and no acknowledged event lost.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from test_collector import CollectorThread

from streams.broker import EmbeddedBroker, create_topics
from streams.collector.producer import BatchingProducer
from streams.envelope import batch_key, decode_batch, partition_for, partition_key
from streams.settings import Settings
from streams.topics import RAW

pytestmark = pytest.mark.integration


@dataclass
class RawMessage:
    partition: int
    offset: int
    key: bytes | None
    envelopes: list[dict[str, Any]]


def read_raw(bootstrap: str, timeout: float = 30.0) -> list[RawMessage]:
    """Every message of events.raw, read from the beginning up to the current end offsets."""

    async def read() -> list[RawMessage]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            partitions = [TopicPartition(RAW, p) for p in consumer.partitions_for_topic(RAW) or []]
            if not partitions:
                await consumer.force_metadata_update()
                partitions = [TopicPartition(RAW, p) for p in consumer.partitions_for_topic(RAW)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            messages: list[RawMessage] = []
            deadline = time.monotonic() + timeout

            async def behind() -> bool:
                return any([await consumer.position(tp) < ends[tp] for tp in partitions])

            while await behind():
                assert time.monotonic() < deadline, "events.raw not read to its end in time"
                batch = await consumer.getmany(timeout_ms=200)
                for tp, records in batch.items():
                    for r in records:
                        if r.offset < ends[tp]:
                            envs = decode_batch(r.value)
                            messages.append(RawMessage(tp.partition, r.offset, r.key, envs))
            return messages
        finally:
            await consumer.stop()

    return asyncio.run(read())


def envelopes_of(messages: list[RawMessage]) -> list[dict[str, Any]]:
    return [
        env for m in sorted(messages, key=lambda m: (m.partition, m.offset)) for env in m.envelopes
    ]


def start_collector(bootstrap: str, **overrides: Any) -> CollectorThread:
    settings = Settings(broker=bootstrap, **overrides)

    async def connect() -> BatchingProducer:
        return await BatchingProducer.connect(settings)

    return CollectorThread(settings, connect).start()


def test_http_events_reach_events_raw_exactly_once(fresh_broker: EmbeddedBroker) -> None:
    collector = start_collector(fresh_broker.bootstrap)
    run = uuid.uuid4().hex[:8]
    sent: dict[str, str] = {}  # messageId -> source
    try:

        def single(i: int) -> int:
            key, source = ("wk_web", "web") if i % 3 else ("wk_ios", "ios")
            mid = f"{run}-s{i}"
            sent[mid] = source
            call = {"event": "Product Viewed", "anonymousId": f"anon-{i % 17}", "messageId": mid}
            return collector.post("/v1/track", call, key=key)[0]

        def batch(b: int) -> int:
            user = f"user-{b}"
            calls = [
                {
                    "type": "track",
                    "event": "Step",
                    "userId": user,
                    "messageId": f"{run}-b{b}-{j}",
                    "properties": {"seq": j},
                }
                for j in range(50)
            ]
            for c in calls:
                sent[c["messageId"]] = "server"
            return collector.post("/v1/batch", {"batch": calls}, key="clé-ünï")[0]

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(single, range(300))) + list(pool.map(batch, range(12)))
        assert statuses == [200] * 312
        partition_count = collector.sink.partitions
    finally:
        collector.stop()

    messages = read_raw(fresh_broker.bootstrap)
    envs = envelopes_of(messages)
    ids = [e["body"]["messageId"] for e in envs]
    assert len(envs) == len(sent) == 300 + 12 * 50
    assert Counter(ids) == Counter(list(sent))  # every acknowledged event exactly once
    assert {e["body"]["messageId"]: e["source"] for e in envs} == sent
    assert len(messages) < len(envs)  # envelopes travel in micro-batches
    for m in messages:  # one partition per message, keyed by it, chosen by identity
        assert m.key == batch_key(m.partition)
        assert {partition_for(partition_key(e), partition_count) for e in m.envelopes} == {
            m.partition
        }
    assert len({m.partition for m in messages}) > 1
    for b in range(12):  # per-user order survives
        seqs = [
            e["body"]["properties"]["seq"] for e in envs if e["body"].get("userId") == f"user-{b}"
        ]
        assert seqs == list(range(50))


def test_broker_down_is_503_and_acknowledged_events_survive_a_restart(tmp_path: Path) -> None:
    """A client keeps posting while the broker is stopped and restarted (same port).

    Tansu is memory-only, so a restart wipes the topic: the check is that every event
    acknowledged before the pre-stop read and every event acknowledged after the restart are in
    events.raw, and that nothing is acknowledged while the broker is down.
    """
    broker = EmbeddedBroker(log_path=tmp_path / "broker-1.log").start()
    create_topics(broker.bootstrap)
    collector = start_collector(broker.bootstrap, produce_timeout=1.5, retry_after=3)
    acked: list[tuple[float, str]] = []  # (time the request was sent, messageId)
    refused: list[tuple[int, dict[str, str], Any]] = []
    stop = threading.Event()

    def client() -> None:
        n = 0
        while not stop.is_set():
            mid = f"m{n}"
            n += 1
            sent_at = time.monotonic()
            status, headers, body = collector.post("/v1/track", {"event": "E", "messageId": mid})
            if status == 200:
                acked.append((sent_at, mid))
            else:
                refused.append((status, headers, body))
                time.sleep(0.05)

    thread = threading.Thread(target=client, daemon=True)
    restarted: EmbeddedBroker | None = None
    try:
        thread.start()
        time.sleep(1.0)
        acked_so_far = [mid for _, mid in acked]
        before = {e["body"]["messageId"] for e in envelopes_of(read_raw(broker.bootstrap))}
        assert set(acked_so_far) <= before
        assert len(before) > 10

        broker.stop()
        stopped_at = time.monotonic()
        time.sleep(3.0)
        assert refused, "requests while the broker is down must be refused"
        status, headers, body = refused[-1]
        assert status == 503 and body["code"] == "unavailable"
        assert headers["Retry-After"] == "3"
        acked_while_down = [mid for t, mid in acked if t > stopped_at]
        assert acked_while_down == []  # sent after the broker died: none may be acknowledged
        status, _, health = collector.request("GET", "/healthz")
        assert status == 503 and health["status"] == "degraded" and health["kafka_error"]

        restarted = EmbeddedBroker(port=broker.port, log_path=tmp_path / "broker-2.log").start()
        create_topics(restarted.bootstrap)
        restart_at = time.monotonic()
        deadline = restart_at + 60
        while not [1 for t, _ in acked if t > restart_at] and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        stop.set()
        thread.join(30)
        after = [mid for t, mid in acked if t > restart_at]
        assert after, "the collector did not recover after the broker came back"
        assert collector.request("GET", "/healthz")[0] == 200
        stored = Counter(
            e["body"]["messageId"] for e in envelopes_of(read_raw(restarted.bootstrap))
        )
        assert set(after) <= set(stored)
    finally:
        stop.set()
        thread.join(30)
        collector.stop()
        broker.stop()
        if restarted is not None:
            restarted.stop()
