"""Input gaps: messages the Faust consumer never hands to an agent, read back from the broker.

Why (issue 5). After a rebalance faust-streaming's `Recovery.on_recovery_completed`
(faust/tables/recovery.py) resumes the stream partitions while the consumer's flow is still
active (it was resumed to read the changelogs), then awaits `Consumer.perform_seek()`, then calls
`app.flow_control.resume()`. Meanwhile the fetcher keeps delivering records of the resumed
partitions into the agents' channel queues, and `FlowControlEvent.resume()`
(mode/utils/queues.py) *clears* every such queue (`clear_on_resume=True`, faust/channels.py).
The records it discards were already counted as read (`Consumer._read_offset`, aiokafka's
position), so they are never fetched again: after a takeover the agent sees offsets jump
(a partition without a committed offset is not even re-sought). When the seek does apply,
records of the fetch still being drained arrive after it and `Consumer._drain_messages` books the
difference as a "gap" (`_add_gap`, treated as acknowledged: the committed offset may pass them),
while the records fetched again from the committed offset are dropped as older than the read
offset. faust-streaming issues #216/#221 describe the same family of races.

The offsets of events.raw and metrics.windows are contiguous (no compaction, no transactions), so
an agent knows exactly what it missed: everything between the last offset folded into its state
(`_Partition.offset`, which the snapshot carries) and the offset in hand. `RangeReader` reads
that range straight from the broker with a plain consumer outside the group, and the agent
processes it before the message in hand: the input is still folded in offset order, once.
The same check covers a committed offset that passed the snapshot (Faust's gap bookkeeping, or a
snapshot that was not restored): the snapshot, not the committed offset, says what was
processed, so the agent re-reads from the snapshot (from the log start if there is none).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.topic_reader import ReadStalled, read_range, start_consumer

log = logging.getLogger(__name__)


class InputGapError(RuntimeError):
    """Missing input could not be read from the broker (it is not acknowledged: retried later)."""


class RangeReader:
    """Reads offset ranges of topic partitions directly from the broker (no consumer group, no
    commits; `streams.topic_reader.read_range` does the reading). One reader serves one agent;
    calls are serialised."""

    def __init__(
        self,
        bootstrap: str,
        *,
        max_fetch_bytes: int = 8_000_000,
        timeout: float = 30.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.max_fetch_bytes = max_fetch_bytes
        self.timeout = timeout  # seconds without any record before giving up
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def _ensure(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            self._consumer = await start_consumer(
                self.bootstrap,
                group_id=None,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=100,
                fetch_max_bytes=max(self.max_fetch_bytes, 52_428_800),
                max_partition_fetch_bytes=self.max_fetch_bytes,
                request_timeout_ms=int(self.timeout * 1000),
            )
        return self._consumer

    async def log_start(self, topic: str, partition: int) -> int:
        """The first offset the broker still holds for the partition."""
        async with self._lock:
            consumer = await self._ensure()
            tp = TopicPartition(topic, partition)
            try:
                starts = await asyncio.wait_for(consumer.beginning_offsets([tp]), self.timeout)
            except Exception as exc:
                raise InputGapError(f"log start of {topic}/{partition} unknown: {exc!r}") from exc
            return int(starts[tp])

    async def read(self, topic: str, partition: int, start: int, end: int) -> AsyncIterator[Any]:
        """The records of `topic`/`partition` with `start` <= offset < `end`, in offset order
        (an aiokafka ConsumerRecord each, value as bytes). Offsets the log no longer holds are
        simply absent. Raises InputGapError when no record arrives for `timeout` seconds or the
        broker cannot be read."""
        async with self._lock:
            consumer = await self._ensure()
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            records = read_range(
                consumer, {tp: end}, timeout=self.timeout, wait_ms=200, max_records=200
            )
            try:
                async for record in records:
                    yield record
            except ReadStalled as exc:
                raise InputGapError(str(exc)) from exc
            except Exception as exc:
                raise InputGapError(
                    f"reading {topic}/{partition} {start}..{end - 1}: {exc!r}"
                ) from exc

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
