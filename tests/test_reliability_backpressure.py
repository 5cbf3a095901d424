"""Integration: slow consumers and a slow broker, with `trackwatch collector` and `trackwatch
worker` as child processes on the real embedded broker, and this process as the HTTP client.

- A worker frozen with SIGSTOP (longer than its 8 s group session) while the collector keeps
  accepting: Kafka buffers; after SIGCONT the worker catches up and every acknowledged event is
  forwarded or quarantined exactly once.
- A broker frozen with SIGSTOP: the collector's own backpressure. Once `max_pending_bytes`
  (the documented limit, here TRACKWATCH_MAX_PENDING_BYTES) await Kafka, requests are refused at
  once with 503 "overloaded" instead of buffering more; the rest get 503 after
  `produce_timeout`; nothing is acknowledged while the broker is frozen; after SIGCONT requests
  are accepted again and land in events.raw.

(Broker stopped and restarted → 503, no acknowledged event lost:
tests/test_collector_integration.py.)
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from streams.broker import EmbeddedBroker, create_topics, free_port
from streams.envelope import decode_batch
from streams.topics import QUARANTINE, RAW, VALID
from tests.streaming_support import read_topic
from tests.test_restart import dedupe_valid
from tests.worker_process import start_worker, stop_worker
from tracking_plan.normalise import format_timestamp

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4
WEB_KEY = "wk_web_demo_5f3a9c"  # examples/write_keys.yaml


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as b:
        create_topics(b.bootstrap, partitions=PARTITIONS)
        yield b


class CollectorProcess:
    """`trackwatch collector` as a child process; `post` is an HTTP client call from here."""

    def __init__(self, bootstrap: str, log: Path, **settings: Any) -> None:
        self.port = free_port()
        env = {**os.environ, **{f"TRACKWATCH_{k.upper()}": str(v) for k, v in settings.items()}}
        cmd = [sys.executable, "-c", "from streams.cli import main; main()", "collector",
               "--broker", bootstrap, "--port", str(self.port)]  # fmt: skip
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.log = log
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()[-2000:]
            with contextlib.suppress(OSError):
                if self.request("GET", "/healthz")[0] == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"collector not ready: {log.read_text()[-2000:]}")

    def request(
        self, method: str, path: str, payload: Any = None, timeout: float = 30.0
    ) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        auth = base64.b64encode(f"{WEB_KEY}:".encode()).decode()
        headers = {"Authorization": f"Basic {auth}", "Content-Type": "application/json"}
        try:
            body = None if payload is None else orjson.dumps(payload)
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            return response.status, dict(response.headers), orjson.loads(data) if data else None
        finally:
            conn.close()

    def post_batch(self, ids: list[str], pad: int = 0) -> tuple[int, dict[str, str], Any]:
        now = format_timestamp(time.time())
        props = {"product_id": "p_ab12", "price": 9.5, **({"pad": "x" * pad} if pad else {})}
        calls = [
            {"type": "track", "event": "Product Viewed", "anonymousId": f"anon-{i[-2:]}",
             "messageId": i, "timestamp": now,
             "properties": props,
             "context": {"library": {"name": "analytics.js"}, "app": {"version": "1.2"}}}
            for i in ids
        ]  # fmt: skip
        return self.request("POST", "/v1/batch", {"batch": calls})

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def end_offsets(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


def outcomes(bootstrap: str, wanted: set[str], timeout: float) -> tuple[Counter, set[str]]:
    """(forwarded messageIds after the origin rule, quarantined ones), waiting for `wanted`."""

    def seen(values: list[dict]) -> bool:
        return wanted <= {i["event"]["messageId"] for v in values for i in v["events"]}

    valid = read_topic(bootstrap, VALID, until=seen, timeout=timeout)
    quarantine = read_topic(bootstrap, QUARANTINE, idle=1, timeout=10)
    forwarded = Counter(i["event"]["messageId"] for m in dedupe_valid(valid) for i in m["events"])
    quarantined = {
        r["envelope"]["body"].get("messageId")
        for batch in quarantine
        for r in batch
        if isinstance(r.get("envelope"), dict)
    }
    return forwarded, quarantined


def test_a_frozen_worker_catches_up_and_loses_nothing(kafka, tmp_path: Path) -> None:
    bootstrap = kafka.bootstrap
    collector = CollectorProcess(bootstrap, tmp_path / "collector.log")
    worker = start_worker(
        bootstrap, f"tw-frozen-{uuid.uuid4().hex[:6]}", tmp_path / "worker.log", tmp_path
    )
    run = uuid.uuid4().hex[:6]
    acked: list[str] = []

    def send(batches: range) -> None:
        for b in batches:
            ids = [f"{run}-{b}-{j:02d}" for j in range(50)]
            status, _, body = collector.post_batch(ids)
            assert status == 200, body
            acked.extend(ids)

    resumed = False
    try:
        send(range(0, 10))
        forwarded, _ = outcomes(bootstrap, set(acked), timeout=90)
        assert set(acked) <= set(forwarded)  # the worker is live before the freeze

        os.killpg(worker.pid, signal.SIGSTOP)
        frozen_valid = end_offsets(bootstrap, VALID)
        raw_before = end_offsets(bootstrap, RAW)
        send(range(10, 50))  # 2000 events accepted while nobody consumes them
        time.sleep(10)  # past the 8 s session timeout: the group evicts the frozen member
        assert end_offsets(bootstrap, RAW) > raw_before  # Kafka buffered them...
        assert end_offsets(bootstrap, VALID) == frozen_valid  # ...and the worker really froze

        os.killpg(worker.pid, signal.SIGCONT)
        resumed, woke = True, time.monotonic()
        forwarded, quarantined = outcomes(bootstrap, set(acked), timeout=90)
        print(f"frozen worker caught up {time.monotonic() - woke:.1f} s after SIGCONT")
        assert worker.poll() is None
    finally:
        if not resumed:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGCONT)
        collector.stop()
        code = stop_worker(worker)
    assert code == 0, (tmp_path / "worker.log").read_text()[-3000:]
    assert len(acked) == 2500
    assert max(forwarded.values()) == 1  # once each after the documented origin rule
    assert set(forwarded) | quarantined == set(acked)
    assert not quarantined & set(forwarded)


def raw_ids(bootstrap: str) -> Counter:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=2000
    )
    try:
        tps = [TopicPartition(RAW, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        ids: Counter = Counter()
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    ids.update(e["body"]["messageId"] for e in decode_batch(r.value))
        return ids
    finally:
        consumer.close()


def test_collector_refuses_with_503_once_its_pending_limit_is_reached(
    kafka, tmp_path: Path
) -> None:
    limit = 150_000  # bytes awaiting Kafka; each request below carries ~20 kB
    collector = CollectorProcess(
        kafka.bootstrap, tmp_path / "collector.log",
        max_pending_bytes=limit, produce_timeout=4, retry_after=1,
    )  # fmt: skip
    broker_pid = kafka._proc.pid  # the Tansu process (EmbeddedBroker exposes no pid)
    run = uuid.uuid4().hex[:6]
    frozen = False
    try:
        assert collector.post_batch([f"{run}-warm-{j}" for j in range(5)])[0] == 200

        os.kill(broker_pid, signal.SIGSTOP)
        frozen = True

        def one(i: int) -> tuple[int, dict[str, str], Any]:
            return collector.post_batch([f"{run}-frozen-{i}-{j}" for j in range(10)], pad=2000)

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(one, range(48)))
        os.kill(broker_pid, signal.SIGCONT)
        frozen = False

        statuses = Counter(status for status, _, _ in answers)
        assert statuses == Counter({503: 48}), statuses  # nothing acknowledged while frozen
        errors = [body["error"] for _, _, body in answers]
        assert all(body["code"] == "unavailable" for _, _, body in answers)
        assert all(headers["Retry-After"] == "1" for _, headers, _ in answers)
        overloaded = [e for e in errors if "overloaded" in e]
        timed_out = [e for e in errors if "did not acknowledge" in e]
        # the limit bounds what waits for Kafka: beyond it, refusals come without buffering
        print(f"frozen broker: {len(overloaded)} refused at once (overloaded), "
              f"{len(timed_out)} after the produce timeout")  # fmt: skip
        assert overloaded and timed_out, errors
        assert len(timed_out) * 10 * 2000 <= limit + 10 * 2300, len(timed_out)

        after: list[str] = []
        deadline = time.monotonic() + 60
        while len(after) < 200 and time.monotonic() < deadline:
            ids = [f"{run}-after-{len(after)}-{j}" for j in range(20)]
            if collector.post_batch(ids)[0] == 200:
                after.extend(ids)
            else:
                time.sleep(0.5)
        assert len(after) >= 200, "the collector did not accept again after the broker woke up"
        assert collector.request("GET", "/healthz")[0] == 200
        stored = raw_ids(kafka.bootstrap)
        assert set(after) <= set(stored)
        assert max(stored[i] for i in after) == 1
    finally:
        if frozen:
            os.kill(broker_pid, signal.SIGCONT)
        collector.stop()
