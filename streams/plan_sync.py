"""Plan hot reload: the tracking plan shared by every worker through a compacted Kafka topic.

`trackwatch plan publish PLAN` writes the plan text to the `plans` topic (one partition, so every
reader sees the same order; key = the plan version, so compaction keeps one record per version).
Each worker runs a `PlanWatcher`: it reads the topic from the beginning, applies the last plan
that compiles, then follows the topic and swaps in each new valid plan. A plan that does not
parse or compile is logged with every problem and ignored: the worker keeps the one it has.
Because all workers read the same single-partition topic, they converge on the same version.

The swap is one assignment of an immutable `ActivePlan`; the worker reads `watcher.current` once
per batch, so a batch is validated with one plan only (see `swap_into`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from streams import metrics as m
from streams.broker import create_topics
from streams.topic_reader import ReadStalled, end_offsets, read_range, start_consumer
from streams.topics import TopicSpec
from tracking_plan.loader import MAX_PLAN_BYTES, PlanError, parse_plan
from tracking_plan.model import Plan
from tracking_plan.validator import Validator, compile_plan

log = logging.getLogger(__name__)

PLANS = "plans"
MAX_PLAN_MESSAGE_BYTES = 8 * 1024 * 1024  # a plan file may be 5 MiB; the record is gzipped


def plans_topic_spec() -> TopicSpec:
    """The `plans` topic: one partition (a total order), compacted, kept forever."""
    return TopicSpec(
        PLANS,
        1,
        {
            "cleanup.policy": "compact",
            "retention.ms": "-1",
            "max.message.bytes": str(MAX_PLAN_MESSAGE_BYTES),
        },
    )


class PlanSyncError(RuntimeError):
    """The plans topic could not be read or written (broker unreachable, bad record)."""


@dataclass(frozen=True, slots=True)
class ActivePlan:
    """A plan ready to validate with. `offset` is its record on the plans topic (-1: a file)."""

    plan: Plan
    validator: Validator
    offset: int = -1

    @property
    def version(self) -> str:
        return self.plan.version

    @classmethod
    def of(cls, plan: Plan, offset: int = -1) -> ActivePlan:
        return cls(plan, compile_plan(plan), offset)


@dataclass(frozen=True, slots=True)
class PlanRecord:
    """One record of the plans topic, decoded (not yet parsed as a plan)."""

    version: str
    text: str
    sha256: str
    published_at: str


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def encode_record(plan: Plan, text: str) -> tuple[bytes, bytes]:
    """The (key, value) of the plans-topic record publishing `text` (which parses to `plan`)."""
    value = {
        "version": plan.version,
        "sha256": text_digest(text),
        "published_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "text": text,
    }
    return plan.version.encode("utf-8", "surrogatepass"), orjson.dumps(value)


def decode_record(value: bytes | None) -> PlanRecord:
    """Decode a plans-topic value; ValueError saying what is wrong with it."""
    if not value:
        raise ValueError("empty record (a tombstone)")
    if len(value) > MAX_PLAN_MESSAGE_BYTES:
        raise ValueError(f"record of {len(value)} bytes is larger than {MAX_PLAN_MESSAGE_BYTES}")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"record is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"record is a JSON {type(data).__name__}, expected an object")
    text, version = data.get("text"), data.get("version")
    if not isinstance(text, str) or not isinstance(version, str):
        raise ValueError("record lacks the string fields `text` and `version`")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PLAN_BYTES:
        raise ValueError(f"plan text is larger than {MAX_PLAN_BYTES} bytes")
    return PlanRecord(
        version, text, str(data.get("sha256") or text_digest(text)), str(data.get("published_at"))
    )


def compile_record(value: bytes | None, offset: int) -> ActivePlan:
    """Parse and compile one plans-topic record; ValueError with every problem if it is bad."""
    record = decode_record(value)
    try:
        plan = parse_plan(record.text, f"{PLANS}@{offset}")
    except PlanError as exc:
        raise ValueError(str(exc)) from None
    if plan.version != record.version:
        raise ValueError(
            f"record says version {record.version!r} but its plan text says {plan.version!r}"
        )
    return ActivePlan.of(plan, offset)


async def ensure_plans_topic(bootstrap: str) -> None:
    """Create the plans topic if it is missing (idempotent)."""
    await asyncio.to_thread(create_topics, bootstrap, [plans_topic_spec()])


async def read_until(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int], timeout: float = 30.0
) -> list[ConsumerRecord]:
    """Every record of the assigned partitions from their position up to `ends` (exclusive).

    Raises PlanSyncError if the records do not arrive within `timeout` seconds of silence.
    """
    try:
        return [record async for record in read_range(consumer, ends, timeout=timeout)]
    except ReadStalled as exc:
        raise PlanSyncError(str(exc)) from exc


async def _plans_consumer(
    bootstrap: str, fetch_wait_ms: int = 100
) -> tuple[AIOKafkaConsumer, TopicPartition]:
    """A consumer assigned to the plans topic (created if missing), at its beginning."""
    consumer = await start_consumer(
        bootstrap,
        fetch_max_wait_ms=fetch_wait_ms,
        fetch_max_bytes=MAX_PLAN_MESSAGE_BYTES,
        max_partition_fetch_bytes=MAX_PLAN_MESSAGE_BYTES,
    )
    try:
        if PLANS not in await consumer.topics():
            await ensure_plans_topic(bootstrap)
        tp = TopicPartition(PLANS, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
    except BaseException:
        await consumer.stop()
        raise
    return consumer, tp


def last_valid(records: list[ConsumerRecord]) -> tuple[ActivePlan | None, list[tuple[int, str]]]:
    """The last record that compiles, and (offset, reason) of the bad ones after it."""
    rejected: list[tuple[int, str]] = []
    for record in reversed(records):
        try:
            return compile_record(record.value, record.offset), rejected[::-1]
        except ValueError as exc:
            rejected.append((record.offset, str(exc)))
    return None, rejected[::-1]


async def _read_all_plans(bootstrap: str, timeout: float) -> list[ConsumerRecord]:
    """Every record on the plans topic, oldest first."""
    consumer, tp = await _plans_consumer(bootstrap)
    try:
        ends = await end_offsets(consumer, [tp])
        await consumer.seek_to_beginning(tp)
        return await read_until(consumer, ends, timeout)
    finally:
        await consumer.stop()


async def fetch_current(bootstrap: str, timeout: float = 30.0) -> ActivePlan | None:
    """The plan workers validate with now: the last valid one on the plans topic (None: none)."""
    records = await _read_all_plans(bootstrap, timeout)
    return last_valid(records)[0]


def _compiles(record: ConsumerRecord) -> bool:
    try:
        compile_record(record.value, record.offset)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Published:
    version: str
    offset: int  # -1 when nothing was written (the same plan was already current)
    previous: str | None


async def publish(bootstrap: str, plan: Plan, text: str, timeout: float = 30.0) -> Published:
    """Publish `text` (already parsed as `plan`) unless it is already the current plan.

    Raises PlanSyncError when the version was published before with different content: workers
    and quarantine records name plans by version, so a changed plan needs a new version.
    """
    records = await _read_all_plans(bootstrap, timeout)
    digest = text_digest(text)
    current, _ = last_valid(records)
    for record in records:
        try:
            old = decode_record(record.value)
        except ValueError:
            continue
        if old.version == plan.version and old.sha256 != digest and _compiles(record):
            raise PlanSyncError(
                f"version {plan.version!r} was already published with different content "
                f"(offset {record.offset}); bump `version:` in the plan and publish again"
            )
    previous = current.version if current else None
    if current is not None and current.version == plan.version:
        return Published(plan.version, -1, previous)
    key, value = encode_record(plan, text)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        compression_type="gzip",
        max_request_size=MAX_PLAN_MESSAGE_BYTES,
    )
    await producer.start()
    try:
        meta = await producer.send_and_wait(PLANS, value=value, key=key, partition=0)
    finally:
        await producer.stop()
    return Published(plan.version, meta.offset, previous)


def export_version(version: str) -> None:
    """`trackwatch_plan_info{version}`: 1 for the plan in use, no other series."""
    m.PLAN_VERSION.clear()
    m.PLAN_VERSION.labels(version).set(1)


def swap_into(processor: Any, active: ActivePlan) -> bool:
    """Make a `streams.pipeline.BatchProcessor` validate with `active`; True if it changed.

    Call it between two batches (the agent owns the processor, so nothing runs concurrently).
    """
    if processor.plan_version == active.version and processor.plan is active.plan:
        return False
    processor.plan = active.plan
    processor.validator = active.validator
    processor.plan_version = active.version
    return True


class PlanWatcher:
    """Follows the plans topic and keeps `current` on the last valid plan.

    >>> watcher = PlanWatcher("127.0.0.1:9092", initial=load_plan("plan.yaml"))
    >>> await watcher.start()       # caught up with the topic when it returns
    >>> watcher.current.validator   # read once per batch
    >>> await watcher.stop()

    `initial` is used until the topic holds a valid plan (None: `current` stays None until then).
    """

    def __init__(
        self,
        bootstrap: str,
        initial: Plan | None = None,
        *,
        poll_seconds: float = 0.5,
        on_change: Callable[[ActivePlan], None] | None = None,
        export_metric: bool = True,
    ) -> None:
        self.bootstrap = bootstrap
        self.poll_seconds = poll_seconds
        self.on_change = on_change
        self.export_metric = export_metric
        self.rejected: list[tuple[int, str]] = []  # (offset, reason) of plans not applied
        self._current = ActivePlan.of(initial) if initial is not None else None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        if self._current is not None and export_metric:
            export_version(self._current.version)

    @property
    def current(self) -> ActivePlan | None:
        return self._current

    @property
    def current_version(self) -> str | None:
        return self._current.version if self._current else None

    async def start(self, timeout: float = 30.0) -> None:
        """Catch up with the topic (apply its last valid plan), then follow it in a task."""
        if self._consumer is not None:
            return
        self._consumer, tp = await _plans_consumer(self.bootstrap, int(self.poll_seconds * 1000))
        try:
            ends = await end_offsets(self._consumer, [tp])
            await self._consumer.seek_to_beginning(tp)
            records = await read_until(self._consumer, ends, timeout)
        except BaseException:
            await self.stop()
            raise
        if records:
            active, rejected = await asyncio.to_thread(last_valid, records)
            if active is not None:
                self._apply(active)
            for offset, reason in rejected:
                self._reject(offset, reason)
        self._task = asyncio.create_task(self._follow(), name="plan-watcher")

    async def run(self) -> None:
        """start() and follow until cancelled (for `@app.task`)."""
        await self.start()
        try:
            assert self._task is not None
            await asyncio.shield(self._task)
        finally:
            await self.stop()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=int(self.poll_seconds * 1000))
            except KafkaError as exc:  # the broker is away: keep the plan, try again
                log.warning(
                    "plans topic unreadable (%s); keeping plan %s", exc, self.current_version
                )
                await asyncio.sleep(self.poll_seconds)
                continue
            for records in batches.values():
                for record in records:
                    await self._consider(record)

    async def _consider(self, record: ConsumerRecord) -> None:
        try:
            active = await asyncio.to_thread(compile_record, record.value, record.offset)
        except ValueError as exc:
            self._reject(record.offset, str(exc))
            return
        self._apply(active)

    def _reject(self, offset: int, reason: str) -> None:
        self.rejected.append((offset, reason))
        keep = f"; keeping plan {self.current_version}" if self._current else ""
        log.error("plans topic offset %d: plan not applied%s: %s", offset, keep, reason)

    def _apply(self, active: ActivePlan) -> None:
        old = self.current_version
        self._current = active
        if self.export_metric:
            export_version(active.version)
        if old != active.version:
            log.warning("plan %s -> %s (plans topic offset %d)", old, active.version, active.offset)
        if self.on_change is not None:
            self.on_change(active)
