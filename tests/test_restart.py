"""Integration: SIGKILL the worker mid-stream, restart it: no event lost or counted twice.

The contract under test (see streams/worker.py): state is exactly-once per input partition
(snapshots + offsets), outputs are at-least-once and carry the ids their consumers deduplicate on
(`origin` on events.valid, `flush` on metrics.windows).
"""

from __future__ import annotations

import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from detectors.records import WindowRecord
from streams.broker import EmbeddedBroker, create_topics
from streams.merge import merge_records
from streams.replay import replay
from streams.topics import QUARANTINE, VALID, WINDOWS
from tests.streaming_support import T0, make_envelopes, produce, read_topic
from tests.test_worker import canon, closers, dedupe_flushes
from tests.worker_process import PLAN, start_worker, stop_worker
from tracking_plan.loader import load_plan

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PARTITIONS = 4


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as b:
        create_topics(b.bootstrap, partitions=PARTITIONS)
        yield b


def end_offsets(bootstrap: str, topic: str, combine=sum) -> int:
    """Messages written to `topic` so far (sum over partitions, or `combine`)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return combine(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


def dedupe_valid(messages: list[dict]) -> list[dict]:
    """The documented consumer rule of events.valid: skip a raw offset already seen."""
    seen: dict[int, int] = {}
    kept = []
    for msg in messages:
        raw_p, raw_offset = msg["origin"]
        if raw_offset <= seen.get(raw_p, -1):
            continue
        seen[raw_p] = raw_offset
        kept.append(msg)
    return kept


def test_sigkill_mid_stream_loses_and_double_counts_nothing(kafka, tmp_path: Path) -> None:
    bootstrap = kafka.bootstrap
    envelopes = make_envelopes(24_000, seed=11, seconds=1800, users=300)
    tail = closers(4 * 3600)
    # the input arrives while the worker runs (a live stream, in event-time order), so that the
    # kill below falls mid-stream however fast the worker is
    produced: list[int] = []

    def feed(chunks: int = 24, pause: float = 0.3) -> None:
        size = len(envelopes) // chunks
        for i in range(chunks):
            produced.append(
                produce(bootstrap, envelopes[i * size : (i + 1) * size], PARTITIONS, 40)
            )
            time.sleep(pause)
        produced.append(produce(bootstrap, envelopes[chunks * size :], PARTITIONS, 40))
        produce(bootstrap, tail, PARTITIONS, batch=100)

    app_id = f"tw-restart-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "worker.log"

    first = start_worker(bootstrap, app_id, log, tmp_path, "--snapshot-interval", "0.3")
    # feed only once the worker has joined its group: a slow join would otherwise leave the
    # whole input as a backlog it reads in a second, before the kill below can fall mid-stream
    ready = time.monotonic() + 90
    while time.monotonic() < ready and "Worker]: Ready" not in log.read_text(errors="replace"):
        time.sleep(0.1)
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    deadline = time.monotonic() + 90
    # kill once every partition wrote snapshots (chunks + manifest: >= 2 changelog messages
    # each) and window flushes went out, before the input is all read
    while time.monotonic() < deadline and not (
        end_offsets(bootstrap, f"{app_id}-process-state-changelog", min) >= 4
        and end_offsets(bootstrap, WINDOWS) >= 8
    ):
        time.sleep(0.02)
    stop_worker(first, signal.SIGKILL)
    at_kill = end_offsets(bootstrap, VALID)
    feeder.join(60)
    assert not feeder.is_alive()
    messages = sum(produced)
    assert 0 < at_kill < messages, f"not killed mid-stream ({at_kill} of {messages})"

    log2 = tmp_path / "worker2.log"
    second = start_worker(bootstrap, app_id, log2, tmp_path, "--snapshot-interval", "0.3")
    try:
        target = T0 + 4 * 3600 - 120 - 60  # the closers close every earlier window

        def all_closed(flushes: list[dict]) -> bool:
            closed = {f["partition"]: f["closed_until"] or 0 for f in flushes}
            return len(closed) == PARTITIONS and min(closed.values()) >= target

        flushes = read_topic(bootstrap, WINDOWS, until=all_closed, timeout=150)
        valid = read_topic(bootstrap, VALID, idle=2, timeout=60)
        quarantine = read_topic(bootstrap, QUARANTINE, idle=2, timeout=30)
    finally:
        assert stop_worker(second) == 0, log2.read_text()[-3000:]
    # the second worker resumed from snapshots the first one wrote (not from scratch)
    resumed = re.findall(r"process: partition \d+ resumes after offset (-?\d+)", log2.read_text())
    assert any(int(offset) >= 0 for offset in resumed), resumed

    kept = dedupe_valid(valid)
    print(f"killed at {at_kill} of ~{messages} events.valid messages; "
          f"{len(valid) - len(kept)} re-sent after restart")  # fmt: skip
    forwarded = Counter(i["event"]["messageId"] for m in kept for i in m["events"])
    quarantined = {r["envelope"]["body"]["messageId"] for batch in quarantine for r in batch}
    unique = {e["body"]["messageId"] for e in [*envelopes, *tail]}
    # after the documented origin rule, every event is forwarded once or quarantined
    assert max(forwarded.values()) == 1
    assert set(forwarded) | quarantined == unique
    assert not set(forwarded) & quarantined

    records = merge_records(
        WindowRecord.from_dict(r) for f in dedupe_flushes(flushes) for r in f["records"]
    )
    offline: list[WindowRecord] = []
    stats = replay(
        load_plan(PLAN), [orjson.dumps(e) for e in [*envelopes, *tail]], on_window=offline.append
    )
    assert stats.late == 0
    horizon = max(r.window_end for r in records)
    offline = [r for r in offline if r.window_end <= horizon]
    volume = sum(r.count for r in records if r.kind == "volume")
    assert volume == sum(r.count for r in offline if r.kind == "volume") > 20_000
    assert canon(records) == canon(offline)
