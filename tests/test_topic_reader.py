"""Reading offset ranges of topic partitions against the real embedded broker: the one range
reader (`streams.topic_reader.read_range`) and its two users, the input-gap repair
(`streams.gaps.RangeReader`) and the plan sync's `read_until`."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from streams.broker import EmbeddedBroker, create_topics
from streams.gaps import InputGapError, RangeReader
from streams.plan_sync import PlanSyncError, read_until
from streams.topic_reader import ReadStalled, end_offsets, read_range, start_consumer
from streams.topics import TopicSpec

PER_PARTITION = 40


def make_topic(bootstrap: str) -> str:
    """A topic of two partitions holding PER_PARTITION records each, sent in multi-record
    batches (a range may start or end inside a batch); value = b"<partition>:<offset>"."""
    topic = f"range-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [TopicSpec(topic, 2)])

    async def fill() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
        await producer.start()
        try:
            for partition in (0, 1):
                sent = [
                    await producer.send(topic, f"{partition}:{i}".encode(), partition=partition)
                    for i in range(PER_PARTITION)
                ]
                await producer.flush()
                offsets = [(await s).offset for s in sent]
                assert offsets == list(range(PER_PARTITION))
        finally:
            await producer.stop()

    asyncio.run(fill())
    return topic


@pytest.fixture(scope="module")
def topic(broker: EmbeddedBroker) -> str:
    return make_topic(broker.bootstrap)


async def collect(bootstrap: str, starts: dict[TopicPartition, int], ends, **kw) -> list:
    consumer = await start_consumer(bootstrap, auto_offset_reset="earliest")
    # aiokafka 0.14: a consumer stopped before its no-group task first ran raises
    # CancelledError from stop(); an empty range never yields to the loop
    await asyncio.sleep(0)
    try:
        consumer.assign(list(starts))
        for tp, start in starts.items():
            consumer.seek(tp, start)
        return [(r.partition, r.offset, r.value) async for r in read_range(consumer, ends, **kw)]
    finally:
        await consumer.stop()


def test_a_range_inside_a_partition_is_read_exactly(broker: EmbeddedBroker, topic: str) -> None:
    tp = TopicPartition(topic, 1)
    got = asyncio.run(collect(broker.bootstrap, {tp: 7}, {tp: 23}))
    assert got == [(1, i, f"1:{i}".encode()) for i in range(7, 23)]


def test_several_partitions_are_read_to_their_ends(broker: EmbeddedBroker, topic: str) -> None:
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]

    async def read_all() -> tuple[dict[TopicPartition, int], list]:
        consumer = await start_consumer(broker.bootstrap, auto_offset_reset="earliest")
        try:
            consumer.assign(tps)
            ends = await end_offsets(consumer, tps)
            await consumer.seek_to_beginning(*tps)
            return ends, [(r.partition, r.offset) async for r in read_range(consumer, ends)]
        finally:
            await consumer.stop()

    ends, got = asyncio.run(read_all())
    assert ends == {tp: PER_PARTITION for tp in tps}
    for partition in (0, 1):  # every record once, in offset order within its partition
        assert [o for p, o in got if p == partition] == list(range(PER_PARTITION))


def test_an_empty_range_reads_nothing(broker: EmbeddedBroker, topic: str) -> None:
    tp = TopicPartition(topic, 0)
    assert asyncio.run(collect(broker.bootstrap, {tp: 12}, {tp: 12}, timeout=0.5)) == []


def test_a_range_past_the_log_end_stalls_after_yielding_what_exists(
    broker: EmbeddedBroker, topic: str
) -> None:
    tp = TopicPartition(topic, 0)
    seen: list[int] = []

    async def read() -> None:
        consumer = await start_consumer(broker.bootstrap, auto_offset_reset="earliest")
        try:
            consumer.assign([tp])
            consumer.seek(tp, PER_PARTITION - 3)
            async for record in read_range(consumer, {tp: PER_PARTITION + 5}, timeout=1.0):
                seen.append(record.offset)
        finally:
            await consumer.stop()

    with pytest.raises(ReadStalled, match=rf"{topic}/0 {PER_PARTITION}\.\.{PER_PARTITION + 4}"):
        asyncio.run(read())
    assert seen == [PER_PARTITION - 3, PER_PARTITION - 2, PER_PARTITION - 1]


def test_the_gap_reader_reads_ranges_and_reports_a_stall_as_an_input_gap(
    broker: EmbeddedBroker, topic: str
) -> None:
    async def scenario() -> tuple[list[int], int]:
        reader = RangeReader(broker.bootstrap, timeout=1.0)
        try:
            first = [r.offset async for r in reader.read(topic, 0, 30, 35)]
            again = [r.offset async for r in reader.read(topic, 0, 2, 5)]  # backwards: re-seeks
            with pytest.raises(InputGapError, match="no records of"):
                async for _ in reader.read(topic, 0, PER_PARTITION - 1, PER_PARTITION + 2):
                    pass
            return first + again, await reader.log_start(topic, 0)
        finally:
            await reader.stop()

    offsets, start = asyncio.run(scenario())
    assert offsets == [30, 31, 32, 33, 34, 2, 3, 4]
    assert start == 0


def test_the_plan_sync_reader_reports_a_stall_as_a_plan_sync_error(
    broker: EmbeddedBroker, topic: str
) -> None:
    tp = TopicPartition(topic, 1)

    async def read() -> list:
        consumer = await start_consumer(broker.bootstrap, auto_offset_reset="earliest")
        try:
            consumer.assign([tp])
            consumer.seek(tp, 0)
            return await read_until(consumer, {tp: PER_PARTITION + 1}, timeout=1.0)
        finally:
            await consumer.stop()

    with pytest.raises(PlanSyncError, match=f"no records of {topic}/1"):
        asyncio.run(read())
