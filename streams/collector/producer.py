"""Micro-batching of envelopes into events.raw messages (the collector's Kafka side).

One Kafka message per partition per `flush_interval` (or `max_envelopes`, or before it outgrows
`max_message_bytes`), a JSON array of envelopes (see `streams.envelope`); every request awaits
the acknowledgement of the batches holding its events, so the collector answers 200 only for
what Kafka has.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from streams.envelope import batch_key, join_encoded, partition_for
from streams.metrics import PRODUCE_BATCH
from streams.settings import Settings

log = logging.getLogger("trackwatch.collector")


class ProducerUnavailable(Exception):
    """Kafka did not acknowledge the events in time; nothing may be reported as accepted."""


@dataclass(slots=True)
class _Buffer:
    """Envelopes waiting to become one Kafka message of one partition."""

    future: asyncio.Future[None]
    parts: list[bytes] = field(default_factory=list)
    data_bytes: int = 0  # sum of the encoded envelopes
    timer: asyncio.TimerHandle | None = None


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a batch future's exception as seen (requests that timed out no longer await it)."""
    if not future.cancelled():
        future.exception()


class BatchingProducer:
    """Turns envelopes into micro-batch messages of `topic`, one buffer per partition.

    A buffer is flushed `flush_interval` seconds after its first envelope, or at once when it
    holds `max_envelopes` or would exceed `max_message_bytes`. `submit` waits (at most
    `timeout` seconds) for the Kafka acknowledgement of every batch holding its envelopes.
    Messages of one partition are handed to the Kafka client in flush order. When more than
    `max_pending_bytes` await Kafka, new submissions are refused at once (503) instead of
    piling up in memory.
    """

    def __init__(
        self,
        producer: Any,
        topic: str,
        partitions: int,
        *,
        flush_interval: float = 0.05,
        max_envelopes: int = 500,
        max_message_bytes: int = 900_000,
        timeout: float = 5.0,
        max_pending_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.producer = producer  # an AIOKafkaProducer (started)
        self.topic = topic
        self.partitions = partitions
        self.flush_interval = flush_interval
        self.max_envelopes = max_envelopes
        self.max_message_bytes = max_message_bytes
        self.timeout = timeout
        self.max_pending_bytes = max_pending_bytes
        self.pending_bytes = 0  # buffered or sent but not yet acknowledged (or failed)
        self.last_error: str | None = None
        self.last_ack: float | None = None  # wall clock of the last acknowledgement
        self._acked_at = time.monotonic()  # monotonic: last acknowledgement (or start)
        self._refused: tuple[float, str] | None = None  # monotonic time, why: last 503
        self._in_flight: dict[int, float] = {}  # id(buffer) -> monotonic time it was flushed
        self._probe: tuple[float, str | None] | None = None  # when, error of the last probe
        self._buffers: dict[int, _Buffer] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    async def connect(cls, settings: Settings) -> BatchingProducer:
        """Start an AIOKafkaProducer on `settings.broker` and learn the partitions of the topic.

        acks=all, idempotent where the broker supports it (Apache Kafka). The embedded Tansu
        broker rejects InitProducerId, so there the producer runs without idempotence: a client
        retry may then duplicate a batch, which the worker removes (dedupe on messageId).
        """
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaConnectionError, KafkaError

        def make(idempotent: bool) -> AIOKafkaProducer:
            return AIOKafkaProducer(
                bootstrap_servers=settings.broker,
                acks="all",
                enable_idempotence=idempotent,
                linger_ms=0,  # we batch ourselves
                max_request_size=max(1_048_576, settings.max_message_bytes + 65_536),
                request_timeout_ms=int(max(settings.produce_timeout, 1.0) * 1000),
                retry_backoff_ms=100,
            )

        producer = make(idempotent=True)
        sender_log = logging.getLogger("aiokafka.producer.sender")
        was_disabled, sender_log.disabled = sender_log.disabled, True  # its refusal is expected
        try:
            await producer.start()
        except KafkaConnectionError:
            await producer.stop()
            raise
        except KafkaError as exc:  # no idempotent producers on this broker
            await producer.stop()
            log.info("broker refused an idempotent producer (%s); using acks=all only", exc)
            producer = make(idempotent=False)
            await producer.start()
        else:
            log.info("idempotent producer on %s", settings.broker)
        finally:
            sender_log.disabled = was_disabled
        try:
            partitions = await producer.partitions_for(settings.topic)
        except Exception:
            await producer.stop()
            raise
        if not partitions:
            await producer.stop()
            raise ProducerUnavailable(f"topic {settings.topic} does not exist on {settings.broker}")
        return cls(
            producer,
            settings.topic,
            len(partitions),
            flush_interval=settings.flush_interval,
            max_envelopes=settings.max_batch_envelopes,
            max_message_bytes=settings.max_message_bytes,
            timeout=settings.produce_timeout,
            max_pending_bytes=settings.max_pending_bytes,
        )

    @property
    def healthy(self) -> bool:
        return self.last_error is None

    PROBE_AFTER = 10.0  # seconds without an acknowledgement before /healthz asks Kafka itself
    PROBE_EVERY = 2.0  # seconds a probe's answer is reused

    async def health(self) -> dict[str, Any]:
        """Can Kafka take events now? ``{"ok": bool, "reason": str | None, ...figures}``.

        Not ok when: the collector is shutting down; the last write failed; a batch has waited
        longer than `timeout` for its acknowledgement; the last request was refused (503) and
        nothing was acknowledged since; or, after `PROBE_AFTER` seconds without traffic, the
        brokers do not answer a metadata request within `timeout`.
        """
        now = time.monotonic()
        oldest = min(self._in_flight.values(), default=None)
        waiting = now - oldest if oldest is not None else 0.0
        figures: dict[str, Any] = {
            "kafka_error": self.last_error,
            "unacknowledged_batches": len(self._in_flight),
            "oldest_unacknowledged_seconds": round(waiting, 3),
            "seconds_since_ack": round(now - self._acked_at, 3),
        }
        reason: str | None = None
        if self._closed:
            reason = "the collector is shutting down"
        elif self.last_error is not None:
            reason = f"the last write to Kafka failed: {self.last_error}"
        elif waiting > self.timeout:
            reason = f"Kafka has not acknowledged a batch for {waiting:.1f} s"
        elif self._refused is not None and self._refused[0] > self._acked_at:
            reason = f"events are refused: {self._refused[1]}"
        elif now - self._acked_at > self.PROBE_AFTER and not self._in_flight:
            reason = await self._probe_kafka(now)
        return {"ok": reason is None, "reason": reason, **figures}

    async def _probe_kafka(self, now: float) -> str | None:
        """Ask the brokers for their metadata (no traffic to judge by); cached briefly."""
        if self._probe is not None and now - self._probe[0] < self.PROBE_EVERY:
            return self._probe[1]
        client = getattr(self.producer, "client", None)
        if client is None:
            return None
        error: str | None = None
        try:
            await asyncio.wait_for(client.fetch_all_metadata(), self.timeout)
        except Exception as exc:  # KafkaError, TimeoutError, OSError: all mean unreachable
            detail = str(exc) or "no answer"
            error = f"Kafka does not answer ({type(exc).__name__}: {detail})"
        self._probe = (time.monotonic(), error)
        return error

    def _refuse(self, reason: str) -> ProducerUnavailable:
        self._refused = (time.monotonic(), reason)
        return ProducerUnavailable(reason)

    async def submit(self, items: list[tuple[str, bytes]]) -> None:
        if self._closed:
            raise self._refuse("the collector is shutting down")
        size = sum(len(data) for _, data in items)
        if self.pending_bytes + size > self.max_pending_bytes:  # Kafka is slower than traffic
            raise self._refuse(f"overloaded: {self.pending_bytes / 1e6:.0f} MB already await Kafka")
        self.pending_bytes += size
        by_partition: dict[int, list[bytes]] = {}
        for key, data in items:
            by_partition.setdefault(partition_for(key, self.partitions), []).append(data)
        futures: set[asyncio.Future[None]] = set()
        for partition, datas in by_partition.items():
            futures.update(self._add(partition, datas))
        if not futures:
            return
        done, pending = await asyncio.wait(futures, timeout=self.timeout)
        if pending:
            raise self._refuse(f"Kafka did not acknowledge within {self.timeout:g} s")
        for future in done:
            if future.exception() is not None:
                raise self._refuse(str(future.exception()))

    def _add(self, partition: int, datas: list[bytes]) -> list[asyncio.Future[None]]:
        """Append envelopes to the partition's buffer; the futures of the batches they joined."""
        futures = []
        buffer = self._buffers.get(partition)
        for data in datas:
            if buffer is not None and (
                buffer.data_bytes + len(data) + len(buffer.parts) + 2 > self.max_message_bytes
            ):  # the JSON array (brackets, commas) would outgrow one Kafka message
                self._flush(partition)
                buffer = None
            if buffer is None:
                loop = asyncio.get_running_loop()
                buffer = _Buffer(future=loop.create_future())
                buffer.future.add_done_callback(_retrieve)
                buffer.timer = loop.call_later(self.flush_interval, self._flush, partition)
                self._buffers[partition] = buffer
            if not futures or futures[-1] is not buffer.future:
                futures.append(buffer.future)
            buffer.parts.append(data)
            buffer.data_bytes += len(data)
            if len(buffer.parts) >= self.max_envelopes:
                self._flush(partition)
                buffer = None
        return futures

    def _flush(self, partition: int) -> None:
        buffer = self._buffers.pop(partition, None)
        if buffer is None:
            return
        if buffer.timer is not None:
            buffer.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._send(partition, buffer))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, partition: int, buffer: _Buffer) -> None:
        lock = self._locks.setdefault(partition, asyncio.Lock())
        self._in_flight[id(buffer)] = time.monotonic()
        try:
            await self._send_and_ack(partition, buffer, lock)
        finally:
            self.pending_bytes -= buffer.data_bytes
            self._in_flight.pop(id(buffer), None)

    async def _send_and_ack(self, partition: int, buffer: _Buffer, lock: asyncio.Lock) -> None:
        try:
            async with lock:  # FIFO: keeps the flush order of one partition
                ack = await self.producer.send(
                    self.topic,
                    join_encoded(buffer.parts),
                    key=batch_key(partition),
                    partition=partition,
                )
            await ack
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("produce to %s[%d] failed: %s", self.topic, partition, self.last_error)
            buffer.future.set_exception(ProducerUnavailable(self.last_error))
        else:
            self.last_error = None
            self.last_ack = time.time()
            self._acked_at = time.monotonic()
            PRODUCE_BATCH.observe(len(buffer.parts))
            buffer.future.set_result(None)

    async def close(self, timeout: float = 10.0) -> None:
        """Flush what is buffered, wait for it (bounded) and stop the Kafka client."""
        self._closed = True
        for partition in list(self._buffers):
            self._flush(partition)
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=timeout)
        await self.producer.stop()
