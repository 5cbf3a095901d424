"""Reading the quarantine: what `trackwatch quarantine list|show|tail` and its HTTP API show.

Each record of `events.quarantine` (``{"envelope", "violations", "plan_version"}``, see
`streams.pipeline.quarantine_record`) becomes a `QuarantinedEvent` with an id
``<partition>:<offset>:<index>`` (its place in the topic, stable for as long as Kafka keeps it),
the time it was quarantined (the Kafka message time), its source, event, codes and plan version.
Personal values were masked before the event reached Kafka (`tracking_plan.pii`), so what is
shown is what is stored.

`parse_filter` and `parse_id` check user input (CLI options, query strings) and raise ValueError
with a one-line message; `QuarantinedEvent.of_message` is pure; the readers below are the thin
Kafka shell.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.quarantine import ReplayError, event_name, parse_since, topic_partitions
from streams.topic_reader import end_offsets, start_consumer
from streams.topics import QUARANTINE

MAX_LIMIT = 1000  # records one list returns at most
MAX_VALUES = 20  # values of one filter
MAX_VALUE_CHARS = 200  # characters of one filter value
_ID = re.compile(r"([0-9]{1,9}):([0-9]{1,19}):([0-9]{1,9})")  # ASCII digits only


@dataclass(frozen=True)
class QuarantineFilter:
    """Which records to show (an empty set: any)."""

    since: datetime | None = None
    sources: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()
    versions: frozenset[str] = frozenset()

    def matches(self, item: QuarantinedEvent) -> bool:
        return (
            (self.since is None or item.quarantined_at >= self.since)
            and (not self.sources or item.source in self.sources)
            and (not self.events or item.event in self.events)
            and (not self.codes or not self.codes.isdisjoint(item.codes))
            and (not self.versions or item.plan_version in self.versions)
        )


def _values(what: str, values: Iterable[str] | None) -> frozenset[str]:
    """Comma-separated or repeated values, checked for size."""
    out: set[str] = set()
    for item in values or ():
        if not isinstance(item, str):
            raise ValueError(f"--{what} takes text")
        for value in item.split(","):
            value = value.strip()
            if len(value) > MAX_VALUE_CHARS:
                raise ValueError(f"--{what} value is longer than {MAX_VALUE_CHARS} characters")
            if value:
                out.add(value)
    if len(out) > MAX_VALUES:
        raise ValueError(f"--{what} takes at most {MAX_VALUES} values")
    return frozenset(out)


def parse_filter(
    since: str | None = None,
    sources: Iterable[str] | None = None,
    events: Iterable[str] | None = None,
    codes: Iterable[str] | None = None,
    versions: Iterable[str] | None = None,
) -> QuarantineFilter:
    """A filter from user input (`--since 2h`, `--source web,ios`...); ValueError if bad."""
    if since is not None and len(since) > 64:
        raise ValueError("--since is longer than 64 characters: use 30m, 2h, 7d or an ISO time")
    return QuarantineFilter(
        since=parse_since(since) if since else None,
        sources=_values("source", sources),
        events=_values("event", events),
        codes=_values("code", codes),
        versions=_values("version", versions),
    )


def parse_limit(value: Any, default: int = 50) -> int:
    """A number of records between 1 and `MAX_LIMIT`; ValueError otherwise."""
    if value is None or value == "":
        return default
    try:
        limit = int(str(value).strip())
    except ValueError:
        raise ValueError(f"limit must be a whole number, got {str(value)[:40]!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit


def parse_id(text: str) -> tuple[int, int, int]:
    """``partition:offset:index`` (as `list` prints it) -> ints; ValueError if malformed."""
    match = _ID.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        shown = text[:40] if isinstance(text, str) else type(text).__name__
        raise ValueError(
            f"{shown!r} is not a quarantine id: write partition:offset:index as "
            "`trackwatch quarantine list` prints it (e.g. 2:1534:0)"
        )
    partition, offset, index = (int(g) for g in match.groups())
    if offset >= 2**63:
        raise ValueError(f"offset {offset} is beyond any Kafka offset")
    return partition, offset, index


@dataclass(frozen=True)
class QuarantinedEvent:
    """One quarantine record, as shown."""

    partition: int
    offset: int
    index: int
    quarantined_at: datetime
    source: str | None
    event: str | None
    call: str | None
    message_id: str | None
    received_at: str | None
    plan_version: str | None
    codes: tuple[str, ...]
    violations: tuple[dict[str, Any], ...]
    record: Any  # the record as stored (envelope, violations, plan_version)

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}:{self.index}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "quarantined_at": self.quarantined_at.isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"
            ),
            "source": self.source,
            "event": self.event,
            "type": self.call,
            "message_id": self.message_id,
            "received_at": self.received_at,
            "plan_version": self.plan_version,
            "codes": list(self.codes),
            "violations": list(self.violations),
            "record": self.record,
        }

    @classmethod
    def of_message(
        cls, partition: int, offset: int, timestamp_ms: int, value: bytes | None
    ) -> list[QuarantinedEvent]:
        """The records of one events.quarantine message (anything unreadable is shown as a
        record with code ``unreadable``, never dropped)."""
        at = datetime.fromtimestamp(max(timestamp_ms, 0) / 1000, UTC)
        try:
            items = orjson.loads(value) if value else None
        except orjson.JSONDecodeError:
            items = None
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            raw = (value or b"")[:200].decode("utf-8", "replace")
            return [cls._unreadable(partition, offset, 0, at, raw)]
        return [cls._of_record(partition, offset, i, at, item) for i, item in enumerate(items)]

    @classmethod
    def _unreadable(
        cls, partition: int, offset: int, index: int, at: datetime, record: Any
    ) -> QuarantinedEvent:
        problem = {"code": "unreadable", "path": "$", "expected": "a quarantine record"}
        return cls(partition, offset, index, at, None, None, None, None, None, None,
                   ("unreadable",), (problem,), record)  # fmt: skip

    @classmethod
    def _of_record(
        cls, partition: int, offset: int, index: int, at: datetime, item: Any
    ) -> QuarantinedEvent:
        if not isinstance(item, dict) or not isinstance(item.get("violations"), list):
            return cls._unreadable(partition, offset, index, at, item)
        violations = tuple(v for v in item["violations"] if isinstance(v, dict))
        codes = tuple(sorted({str(v.get("code")) for v in violations}))
        envelope = item.get("envelope")
        body = envelope.get("body") if isinstance(envelope, dict) else None
        body = body if isinstance(body, dict) else {}
        source = envelope.get("source") if isinstance(envelope, dict) else None
        received = envelope.get("received_at") if isinstance(envelope, dict) else None
        call, mid = body.get("type"), body.get("messageId")
        version = item.get("plan_version")
        return cls(
            partition,
            offset,
            index,
            at,
            source if isinstance(source, str) else None,
            event_name(body) if body else None,
            call if isinstance(call, str) else None,
            mid if isinstance(mid, str) else None,
            received if isinstance(received, str) else None,
            version if isinstance(version, str) else None,
            codes,
            violations,
            item,
        )


# ----------------------------------------------------------------------------------- Kafka shell


async def _open(bootstrap: str) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    consumer = await start_consumer(
        bootstrap,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_wait_ms=50,
    )
    try:
        tps = (await topic_partitions(consumer, (QUARANTINE,)))[QUARANTINE]
    except BaseException:
        await consumer.stop()
        raise
    if not tps:
        await consumer.stop()
        raise ReplayError(
            f"topic {QUARANTINE} does not exist on {bootstrap}; start the worker once "
            "(or `trackwatch broker`) to create it"
        )
    consumer.assign(tps)
    return consumer, tps


async def _starts(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], since: datetime | None
) -> dict[TopicPartition, int]:
    starts = await consumer.beginning_offsets(tps)
    if since is not None:
        ends = await end_offsets(consumer, tps)
        found = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps})
        for tp, hit in found.items():
            starts[tp] = ends[tp] if hit is None else max(starts[tp], hit.offset)
    return starts


async def read_quarantine(
    bootstrap: str, where: QuarantineFilter, limit: int = 50, timeout: float = 60.0
) -> list[QuarantinedEvent]:
    """The newest `limit` records matching `where`, oldest first, read up to the end the topic
    had when the call started."""
    consumer, tps = await _open(bootstrap)
    # the newest `limit` overall are among the newest `limit` of each partition
    kept: dict[int, deque[QuarantinedEvent]] = {tp.partition: deque(maxlen=limit) for tp in tps}
    try:
        ends = await end_offsets(consumer, tps)
        starts = await _starts(consumer, tps, where.since)
        pending = {tp: ends[tp] for tp in tps if starts[tp] < ends[tp]}
        for tp in tps:
            consumer.seek(tp, starts[tp])
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise ReplayError(f"{QUARANTINE} was not read to its end within {timeout:g} s")
            batches = await consumer.getmany(*pending, timeout_ms=500, max_records=2000)
            for tp, records in batches.items():
                for r in records:
                    if r.offset < pending.get(tp, 0):
                        kept[tp.partition].extend(
                            item
                            for item in QuarantinedEvent.of_message(
                                tp.partition, r.offset, r.timestamp, r.value
                            )
                            if where.matches(item)
                        )
            for tp in list(pending):
                if await consumer.position(tp) >= pending[tp]:
                    del pending[tp]
    finally:
        await consumer.stop()
    found = sorted(
        (item for items in kept.values() for item in items),
        key=lambda e: (e.quarantined_at, e.partition, e.offset, e.index),
    )
    return found[-limit:]


async def find_quarantined(
    bootstrap: str, partition: int, offset: int, index: int, timeout: float = 30.0
) -> QuarantinedEvent | None:
    """The record with that id, None if Kafka does not have it (any more)."""
    consumer, tps = await _open(bootstrap)
    try:
        tp = TopicPartition(QUARANTINE, partition)
        if tp not in tps:
            return None
        begin = (await consumer.beginning_offsets([tp]))[tp]
        end = (await end_offsets(consumer, [tp]))[tp]
        if not begin <= offset < end:
            return None
        consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=1)
            for r in batch.get(tp, ()):
                if r.offset != offset:  # compacted or transaction marker: not there
                    return None
                items = QuarantinedEvent.of_message(partition, offset, r.timestamp, r.value)
                return items[index] if index < len(items) else None
        raise ReplayError(f"{QUARANTINE}[{partition}] did not answer within {timeout:g} s")
    finally:
        await consumer.stop()


async def tail_quarantine(
    bootstrap: str,
    where: QuarantineFilter,
    show: Callable[[QuarantinedEvent], Awaitable[None] | None],
    stop: asyncio.Event,
) -> int:
    """Show the records quarantined from now on (or from `where.since`) until `stop` is set;
    the number shown."""
    consumer, tps = await _open(bootstrap)
    shown = 0
    try:
        if where.since is None:
            for tp, end in (await end_offsets(consumer, tps)).items():
                consumer.seek(tp, end)
        else:
            for tp, start in (await _starts(consumer, tps, where.since)).items():
                consumer.seek(tp, start)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=300, max_records=500)
            items = [
                item
                for tp, records in batches.items()
                for r in records
                for item in QuarantinedEvent.of_message(
                    tp.partition, r.offset, r.timestamp, r.value
                )
                if where.matches(item)
            ]
            for item in sorted(items, key=lambda e: (e.quarantined_at, e.id)):
                result = show(item)
                if asyncio.iscoroutine(result):
                    await result
                shown += 1
    finally:
        await consumer.stop()
    return shown


__all__ = [
    "MAX_LIMIT",
    "QuarantineFilter",
    "QuarantinedEvent",
    "find_quarantined",
    "parse_filter",
    "parse_id",
    "parse_limit",
    "read_quarantine",
    "tail_quarantine",
]
