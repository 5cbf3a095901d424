"""Reading topic partitions outside any consumer group: a started consumer, the true end offsets,
and the one function that reads a range of offsets (`read_range`).

Used by the input-gap repair (`streams.gaps`: one partition, offsets s+1 .. o-1), the plan hot
reload (`streams.plan_sync`: the plans topic up to its end) and the quarantine commands
(`streams.quarantine`, `streams.quarantine_view`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition


class ReadStalled(RuntimeError):
    """No record arrived for `timeout` seconds while a partition was short of its end."""


async def start_consumer(bootstrap: str, **config: Any) -> AIOKafkaConsumer:
    """A started AIOKafkaConsumer (closed again if the broker cannot be reached)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **config)
    try:
        await consumer.start()
    except BaseException:
        await consumer.stop()
        raise
    return consumer


async def end_offsets(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], timeout: float = 10.0
) -> dict[TopicPartition, int]:
    """The offsets after the last record of the assigned `tps` (the consumer's positions move).

    The ListOffsets answer is checked against the high watermark of a fetch of the last record
    batch: the embedded broker (Tansu) answers ListOffsets with the last batch's base offset + 1,
    which hides every record of a multi-record batch but the first.
    """
    ends = await consumer.end_offsets(tps)
    starts = await consumer.beginning_offsets(tps)
    for tp in tps:
        consumer.seek(tp, max(starts[tp], ends[tp] - 1))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        await consumer.getmany(*tps, timeout_ms=100)
        if all(consumer.highwater(tp) is not None for tp in tps):
            break
    for tp in tps:
        high = consumer.highwater(tp)
        if high is not None:
            ends[tp] = max(ends[tp], high)
    return ends


async def read_range(
    consumer: AIOKafkaConsumer,
    ends: Mapping[TopicPartition, int],
    *,
    timeout: float = 30.0,
    wait_ms: int = 500,
    max_records: int = 2000,
) -> AsyncIterator[ConsumerRecord]:
    """The records of the assigned partitions of `ends`, from each one's current position (seek
    first) up to its end offset (exclusive), in offset order within a partition. Offsets the log
    no longer holds (retention, compaction) are simply absent. Errors of the fetch propagate;
    ReadStalled when no record arrives for `timeout` seconds while some partition is short of
    its end. `wait_ms` and `max_records` are one fetch's longest wait and largest batch.
    """
    position = {tp: await consumer.position(tp) for tp in ends}
    pending = {tp: end for tp, end in ends.items() if position[tp] < end}
    loop = asyncio.get_running_loop()
    last = loop.time()
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=wait_ms, max_records=max_records)
        for tp, records in batches.items():
            end = pending.get(tp, 0)
            for record in records:
                if position[tp] <= record.offset < end:
                    position[tp] = record.offset + 1
                    yield record
            if records:
                last = loop.time()
        for tp in list(pending):
            position[tp] = max(position[tp], await consumer.position(tp))
            if position[tp] >= pending[tp]:
                del pending[tp]
        if pending and loop.time() - last > timeout:
            missing = ", ".join(
                f"{tp.topic}/{tp.partition} {position[tp]}..{end - 1}"
                for tp, end in sorted(pending.items())
            )
            raise ReadStalled(f"no records of {missing} for {timeout:.0f}s")
