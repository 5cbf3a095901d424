"""Micro-batching (`streams.collector.producer.BatchingProducer`): envelopes into Kafka messages.

The Kafka client is replaced by `FakeKafka` (these tests are about batching, flush triggers,
ordering and failure handling); tests/test_collector_integration.py runs it on the real broker.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError, NotLeaderForPartitionError

from streams.collector.producer import BatchingProducer, ProducerUnavailable
from streams.envelope import batch_key, decode_batch, encode_envelope_body, partition_for


class FakeKafka:
    """Records sends; `mode` decides the acknowledgement: ok, fail (error), hang (never)."""

    def __init__(self, mode: str = "ok", send_delay: float = 0.0) -> None:
        self.mode = mode
        self.send_delay = send_delay
        self.sent: list[tuple[int, bytes, bytes]] = []  # partition, key, value
        self.stopped = False

    async def send(self, topic: str, value: bytes, key: bytes, partition: int) -> asyncio.Future:
        if self.send_delay:
            await asyncio.sleep(self.send_delay)
        self.sent.append((partition, key, value))
        ack: asyncio.Future = asyncio.get_running_loop().create_future()
        if self.mode == "ok":
            ack.set_result(None)
        elif self.mode == "fail":
            ack.set_exception(NotLeaderForPartitionError())
        elif self.mode == "raise":
            raise KafkaTimeoutError()
        return ack

    async def stop(self) -> None:
        self.stopped = True

    def messages(self) -> list[list[dict[str, Any]]]:
        return [decode_batch(value) for _, _, value in self.sent]


def item(key: str, n: int, pad: int = 0) -> tuple[str, bytes]:
    body = orjson.dumps({"type": "track", "anonymousId": key, "n": n, "pad": "x" * pad})
    return key, encode_envelope_body("web", "2026-11-23T18:20:00.000Z", body)


def producer(kafka: FakeKafka, **options: Any) -> BatchingProducer:
    defaults: dict[str, Any] = {"flush_interval": 0.05, "max_envelopes": 500, "timeout": 5.0}
    return BatchingProducer(kafka, "events.raw", 4, **{**defaults, **options})


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_one_submit_is_split_by_count_in_order() -> None:
    kafka = FakeKafka()

    async def main() -> None:
        p = producer(kafka)
        await p.submit([item("same-user", n) for n in range(1200)])

    run(main())
    assert [len(m) for m in kafka.messages()] == [500, 500, 200]
    assert [e["body"]["n"] for m in kafka.messages() for e in m] == list(range(1200))
    partition = partition_for("same-user", 4)
    assert {(p, k) for p, k, _ in kafka.sent} == {(partition, batch_key(partition))}


def test_messages_stay_under_the_byte_limit() -> None:
    kafka = FakeKafka()

    async def main() -> None:
        p = producer(kafka, max_message_bytes=50_000)
        await p.submit([item("u", n, pad=10_000) for n in range(20)])

    run(main())
    assert all(len(value) <= 50_000 for _, _, value in kafka.sent)
    assert sum(len(m) for m in kafka.messages()) == 20
    assert len(kafka.sent) > 1


def test_concurrent_requests_share_batches_and_partitions_split() -> None:
    kafka = FakeKafka()
    keys = [f"user-{i}" for i in range(40)]

    async def main() -> None:
        p = producer(kafka)
        await asyncio.gather(*(p.submit([item(k, i)]) for i, k in enumerate(keys)))

    run(main())
    partitions = {partition_for(k, 4) for k in keys}
    assert len(kafka.sent) == len(partitions)  # one message per partition for 40 requests
    for partition, _, value in kafka.sent:
        assert {partition_for(e["body"]["anonymousId"], 4) for e in decode_batch(value)} == {
            partition
        }


def test_a_lone_event_is_flushed_by_the_timer() -> None:
    kafka = FakeKafka()

    async def main() -> None:
        await producer(kafka, flush_interval=0.01).submit([item("u", 1)])

    run(main())
    assert [len(m) for m in kafka.messages()] == [1]


@pytest.mark.parametrize("mode", ["fail", "raise"])
def test_kafka_errors_reach_every_waiting_request(mode: str) -> None:
    kafka = FakeKafka(mode)

    async def main() -> tuple[list[Any], BatchingProducer]:
        p = producer(kafka)
        results = await asyncio.gather(
            p.submit([item("u", 1)]), p.submit([item("u", 2)]), return_exceptions=True
        )
        return results, p

    results, p = run(main())
    assert all(isinstance(r, ProducerUnavailable) for r in results)
    assert p.last_error is not None and not p.healthy


def test_no_acknowledgement_in_time_is_unavailable_then_recovers() -> None:
    kafka = FakeKafka("hang")

    async def main() -> BatchingProducer:
        p = producer(kafka, timeout=0.1, flush_interval=0.01)
        with pytest.raises(ProducerUnavailable, match=r"did not acknowledge within 0\.1 s"):
            await p.submit([item("u", 1)])
        kafka.mode = "ok"
        await p.submit([item("u", 2)])
        return p

    p = run(main())
    assert p.healthy and [len(m) for m in kafka.messages()] == [1, 1]


def test_slow_sends_keep_partition_order() -> None:
    kafka = FakeKafka(send_delay=0.005)

    async def main() -> None:
        p = producer(kafka, max_envelopes=3)
        await asyncio.gather(*(p.submit([item("u", n)]) for n in range(30)))

    run(main())
    assert [e["body"]["n"] for m in kafka.messages() for e in m] == list(range(30))


def test_close_flushes_what_is_buffered_and_refuses_more() -> None:
    kafka = FakeKafka()

    async def main() -> None:
        p = producer(kafka, flush_interval=60)
        waiting = asyncio.ensure_future(p.submit([item("u", 1), item("v", 2)]))
        await asyncio.sleep(0)
        await p.close()
        await waiting
        with pytest.raises(ProducerUnavailable, match="shutting down"):
            await p.submit([item("u", 3)])

    run(main())
    assert kafka.stopped
    assert sorted(e["body"]["n"] for m in kafka.messages() for e in m) == [1, 2]


def test_empty_submit_returns_at_once() -> None:
    kafka = FakeKafka("hang")
    run(producer(kafka).submit([]))
    assert kafka.sent == []


def test_overload_is_refused_at_once() -> None:
    kafka = FakeKafka("hang")

    async def main() -> BatchingProducer:
        p = producer(kafka, timeout=0.05, flush_interval=0.001, max_pending_bytes=20_000)
        with pytest.raises(ProducerUnavailable, match="did not acknowledge"):
            await p.submit([item("u", n, pad=1_000) for n in range(15)])
        assert p.pending_bytes > 15_000
        with pytest.raises(ProducerUnavailable, match="overloaded"):
            await p.submit([item("u", 99, pad=6_000)])
        assert all(e["body"]["n"] != 99 for m in kafka.messages() for e in m)
        return p

    run(main())


@pytest.mark.parametrize("mode", ["ok", "fail"])
def test_pending_bytes_return_to_zero_after_acks_and_failures(mode: str) -> None:
    kafka = FakeKafka(mode)

    async def main() -> int:
        p = producer(kafka, flush_interval=0.001)
        submits = (p.submit([item(f"u{n}", n, pad=100)]) for n in range(50))
        await asyncio.gather(*submits, return_exceptions=True)
        return p.pending_bytes

    assert run(main()) == 0


def test_a_request_waits_for_every_batch_it_joined() -> None:
    """Envelopes spanning a half-full buffer and a new one: both batches must be acknowledged."""
    kafka = FakeKafka("fail")  # the first batch (envelopes 0-3) fails, later ones succeed

    async def main() -> list[Any]:
        p = producer(kafka, max_envelopes=4, flush_interval=60)
        first = asyncio.ensure_future(p.submit([item("u", 0), item("u", 1)]))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(p.submit([item("u", n) for n in range(2, 6)]))
        await asyncio.sleep(0.01)  # 0-3 flushed (full) and failed; 4-5 wait in a buffer
        kafka.mode = "ok"
        await p.close()  # flushes 4-5, acknowledged
        return await asyncio.gather(first, second, return_exceptions=True)

    results = run(main())
    assert [type(r) for r in results] == [ProducerUnavailable, ProducerUnavailable]
    assert [[e["body"]["n"] for e in m] for m in kafka.messages()] == [[0, 1, 2, 3], [4, 5]]
