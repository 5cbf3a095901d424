"""Quarantine replay: re-validate quarantined events with a fixed plan and republish the valid ones.

`events.quarantine` messages are JSON arrays of records ``{"envelope", "violations",
"plan_version"}`` (see `streams.worker`). A replay reads the messages quarantined since a time,
keeps the records matching the filters, validates each envelope again and sends the events that
now pass to `events.valid`, in the worker's own message format and on the same partition the
worker would have used. The aggregate stage does not count them again (they were counted, as
quarantined, when they arrived): a replayed message carries no tallies and the origin offset
-1, which that stage skips. It carries a ``replay`` marker: ``{"run", "plan_version", "ids"}``.

No duplicates, even when a replay is run twice or crashes midway: every republished event is
recorded in the compacted topic `quarantine.replayed` (key ``id:<messageId>``), and a later replay
skips those ids. A run first writes ``run:<id>`` = started (with the events.valid end offsets),
and ``done`` at the end. If a run died between sending events and recording them, the next run
finds it unfinished, scans events.valid from those offsets for the dead run's marker and records
what it had sent.

One replay at a time: a run refreshes its `run:` record every few seconds, and a new run refuses
to start while an unfinished run's heartbeat is recent (`force` overrides, e.g. right after a
crash). Two runs started within the same instant are not excluded.

The classification (`ReplayPlanner`) is pure; `replay_quarantine` is the Kafka shell around it.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.broker import create_topics
from streams.envelope import check_envelope, message_id, parse_received_at
from streams.pipeline import add_duplicate_keys
from streams.plan_sync import ActivePlan, read_until
from streams.topic_reader import end_offsets, start_consumer
from streams.topics import QUARANTINE, VALID, TopicSpec
from tracking_plan.validator import Result, Validator
from tracking_plan.violations import Code, Violation

LEDGER = "quarantine.replayed"
MAX_ENVELOPE_BYTES = 1024 * 1024  # an envelope this large is not replayed (the collector's limit
# is far lower, so only a hostile or corrupted record gets here)
MAX_KEY_CHARS = 256
CHUNK = 500  # events republished per round trip (sent, then recorded in the ledger)
MAX_MESSAGE_BYTES = 900_000  # below Kafka's default message.max.bytes (1 MB)
HEARTBEAT_SECONDS = 10.0  # a running replay refreshes its `run:` record this often
STALE_AFTER_SECONDS = 60.0  # an unfinished run silent this long has died

# reasons a quarantine record cannot be replayed (stable: shown in summaries, used in tests)
NOT_JSON = "message is not JSON"
NOT_RECORDS = "message is not a JSON array of records"
NOT_A_RECORD = "item is not a quarantine record"
NO_ENVELOPE = "no envelope (the raw bytes were not an envelope)"
BAD_ENVELOPE = "envelope is malformed"
OVERSIZED = f"envelope larger than {MAX_ENVELOPE_BYTES} bytes"
EMPTY = "empty message"


def ledger_topic_spec() -> TopicSpec:
    """`quarantine.replayed`: one partition, compacted, kept forever (a record per event)."""
    return TopicSpec(LEDGER, 1, {"cleanup.policy": "compact", "retention.ms": "-1"})


class ReplayError(RuntimeError):
    """A replay could not run (missing topic, broker problem); the message says what to do."""


class SimulatedCrash(RuntimeError):
    """Raised by `replay_quarantine(crash_after_chunks=...)` (tests of crash recovery)."""


# ----------------------------------------------------------------------------------- --since

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE | re.ASCII)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2h``, ``30m``, ``7d``, ``90s``, ``1w`` (ago) or an ISO-8601 time (UTC when no zone).

    ValueError with an example of what is accepted.
    """
    now = now or datetime.now(UTC)
    match = _DURATION.match(text)
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
        if seconds > 3650 * 86400:
            raise ValueError(f"--since {text!r} is more than ten years")
        return now - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {text!r} is neither a duration (30m, 2h, 7d) nor an ISO-8601 time "
            "(2026-11-23T18:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when > now:
        raise ValueError(f"--since {text!r} is in the future")
    return when


# ----------------------------------------------------------------------------------- pure core


@dataclass(frozen=True)
class ReplayFilter:
    """Which quarantine records to replay (an empty set: any)."""

    events: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()

    def matches(self, event: str | None, source: str, codes: set[str]) -> bool:
        return (
            (not self.events or event in self.events)
            and (not self.sources or source in self.sources)
            and (not self.codes or bool(codes & self.codes))
        )


@dataclass
class ReplaySummary:
    """What a replay read and did."""

    plan_version: str = ""
    run: str = ""
    dry_run: bool = False
    messages: int = 0  # quarantine messages read in the time range
    before_since: int = 0  # messages read but quarantined before --since
    records: int = 0  # quarantine records in those messages
    filtered_out: int = 0
    unreadable: Counter[str] = field(default_factory=Counter)  # reason -> records
    still_invalid: Counter[str] = field(default_factory=Counter)  # code -> records
    still_invalid_events: int = 0
    republished: int = 0  # or would be, in a dry run
    flagged: int = 0  # republished with violations (plan mode flag/omit)
    already_replayed: int = 0
    repeated: int = 0  # a messageId quarantined twice in the range: replayed once
    recovered: int = 0  # ids of a crashed run found on events.valid and recorded
    by_event: Counter[str] = field(default_factory=Counter)  # republished, by event name

    def to_dict(self) -> dict[str, Any]:
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in self.__dict__.items()}


@dataclass(frozen=True, slots=True)
class Republish:
    """One event to send again: to events.valid `partition`, recorded under `key`."""

    key: str
    partition: int
    source: str
    event: dict[str, Any]
    where: tuple[int, int, int]  # quarantine partition, offset, index in the message


def ledger_key(envelope: dict[str, Any]) -> str:
    """The ledger key of an envelope: its dedupe id (hashed when absurdly long)."""
    mid = message_id(envelope)
    if len(mid) > MAX_KEY_CHARS:
        return message_id({"source": None, "body": {"id": mid}})
    return mid


def event_name(body: dict[str, Any]) -> str | None:
    """The name `--event` matches: a track call's event, a page/screen name, or the call type."""
    for field_name in ("event", "name"):
        value = body.get(field_name)
        if isinstance(value, str) and value:
            return value
    call = body.get("type")
    return call if isinstance(call, str) else None


class ReplayPlanner:
    """Sorts quarantine messages into republish / still invalid / skipped (pure, no Kafka)."""

    def __init__(
        self,
        validator: Validator,
        valid_partitions: int,
        replay_filter: ReplayFilter | None = None,
        replayed: set[str] | None = None,
        summary: ReplaySummary | None = None,
    ) -> None:
        self.validator = validator
        self.valid_partitions = valid_partitions
        self.filter = replay_filter or ReplayFilter()
        self.replayed = replayed if replayed is not None else set()  # ledger keys done
        self.summary = summary or ReplaySummary(plan_version=validator.plan_version)
        self._chosen: set[str] = set()  # keys republished by this run

    def message(self, partition: int, offset: int, value: bytes | None) -> list[Republish]:
        """Classify one events.quarantine message; the events to republish."""
        s = self.summary
        s.messages += 1
        if not value:
            s.records += 1
            s.unreadable[EMPTY] += 1
            return []
        try:
            items = orjson.loads(value)
        except orjson.JSONDecodeError:
            s.records += 1
            s.unreadable[NOT_JSON] += 1
            return []
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            s.records += 1
            s.unreadable[NOT_RECORDS] += 1
            return []
        out = []
        for index, item in enumerate(items):
            chosen = self.record(item, (partition, offset, index))
            if chosen is not None:
                out.append(chosen)
        return out

    def record(self, item: Any, where: tuple[int, int, int]) -> Republish | None:
        """Classify one quarantine record."""
        s = self.summary
        s.records += 1
        if not isinstance(item, dict) or not isinstance(item.get("violations"), list):
            s.unreadable[NOT_A_RECORD] += 1
            return None
        envelope = item.get("envelope")
        if envelope is None:
            s.unreadable[NO_ENVELOPE] += 1
            return None
        try:
            check_envelope(envelope)
            received_at = parse_received_at(envelope["received_at"]).timestamp()
        except (ValueError, OverflowError):
            s.unreadable[BAD_ENVELOPE] += 1
            return None
        if len(orjson.dumps(envelope)) > MAX_ENVELOPE_BYTES:
            s.unreadable[OVERSIZED] += 1
            return None
        body, source = envelope["body"], envelope["source"]
        codes = {v.get("code") for v in item["violations"] if isinstance(v, dict)}
        name = event_name(body)
        if not self.filter.matches(name, source, codes):
            s.filtered_out += 1
            return None
        key = ledger_key(envelope)
        if key in self._chosen:
            s.repeated += 1
            return None
        if key in self.replayed:
            s.already_replayed += 1
            return None
        result = self.validator.validate(body, source=source, received_at=received_at)
        if result.outcome != "quarantined":
            self._keep_duplicate_keys(result, item["violations"])
        if result.outcome == "quarantined":
            s.still_invalid_events += 1
            for code in sorted({v.code for v in result.violations}):
                s.still_invalid[str(code)] += 1
            return None
        assert result.event is not None
        self._chosen.add(key)
        s.republished += 1
        s.flagged += result.outcome == "flagged"
        s.by_event[name or "(unnamed)"] += 1
        return Republish(key, where[0] % self.valid_partitions, source, result.event, where)

    def _keep_duplicate_keys(self, result: Result, recorded: list[Any]) -> None:
        """A record quarantined as a repeated business key (`duplicate_key`, a key with mode
        block) stays quarantined while the plan still blocks that key; otherwise it is
        republished flagged with that violation (validating it alone cannot see repeats)."""
        problems = [
            Violation(Code.DUPLICATE_KEY.value, *(str(v.get(k, ""))[:200] for k in _FIELDS))
            for v in recorded
            if isinstance(v, dict) and v.get("code") == Code.DUPLICATE_KEY.value
        ]
        if not problems:
            return
        rules = self.validator.keys.rules.get(result.event_key, ())
        blocking = {rule.path for rule in rules if rule.block}
        add_duplicate_keys(result, problems, any(p.path in blocking for p in problems))


_FIELDS = ("path", "expected", "got")


def valid_messages(
    items: Iterable[Republish], run: str, plan_version: str, max_bytes: int = MAX_MESSAGE_BYTES
) -> list[tuple[int, bytes]]:
    """(partition, value) of the events.valid messages carrying `items`, in the worker's format,
    each at most about `max_bytes` (a single larger event gets a message of its own)."""
    groups: dict[int, list[list[Republish]]] = {}
    sizes: dict[int, int] = {}
    for item in items:
        size = len(orjson.dumps(item.event)) + len(item.key) + 64
        chunks = groups.setdefault(item.partition, [[]])
        if chunks[-1] and sizes[item.partition] + size > max_bytes:
            chunks.append([])
            sizes[item.partition] = 0
        chunks[-1].append(item)
        sizes[item.partition] = sizes.get(item.partition, 0) + size
    return [
        (
            p,
            orjson.dumps(
                {
                    "origin": [p, -1],  # the aggregate stage skips it: counted when quarantined
                    "plan_version": plan_version,  # as on the worker's own messages
                    "events": [{"source": i.source, "event": i.event} for i in chunk],
                    "tallies": [],
                    "replay": {
                        "run": run,
                        "plan_version": plan_version,
                        "ids": [i.key for i in chunk],
                    },
                }
            ),
        )
        for p, chunks in groups.items()
        for chunk in chunks
    ]


def replay_marker(value: bytes | None) -> dict[str, Any] | None:
    """The ``replay`` marker of an events.valid message, if it has one."""
    if not value or b'"replay"' not in value:
        return None
    try:
        marker = orjson.loads(value).get("replay")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return marker if isinstance(marker, dict) else None


# ----------------------------------------------------------------------------------- Kafka shell


@dataclass
class Ledger:
    """What `quarantine.replayed` says: replayed keys and runs that did not finish."""

    replayed: set[str] = field(default_factory=set)
    unfinished: dict[str, dict[str, Any]] = field(default_factory=dict)  # run -> start record


async def topic_partitions(
    consumer: AIOKafkaConsumer, topics: Iterable[str]
) -> dict[str, list[TopicPartition]]:
    """The partitions of each of `topics` ([] when missing). Call before assigning anything: an
    assigned consumer only keeps the metadata of its assigned topics."""
    existing = await consumer.topics()
    return {
        t: [TopicPartition(t, p) for p in sorted(consumer.partitions_for_topic(t) or ())]
        if t in existing
        else []
        for t in topics
    }


async def read_ledger(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> Ledger:
    """Read the ledger partitions `tps` from the beginning to their end."""
    ledger = Ledger()
    if not tps:
        return ledger
    consumer.assign(tps)
    ends = await end_offsets(consumer, tps)
    await consumer.seek_to_beginning(*tps)
    runs: dict[str, dict[str, Any]] = {}
    for record in await read_until(consumer, ends):
        key = (record.key or b"").decode("utf-8", "surrogatepass")
        if key.startswith("id:"):
            if record.value is None:
                ledger.replayed.discard(key[3:])
            else:
                ledger.replayed.add(key[3:])
        elif key.startswith("run:") and record.value:
            try:
                runs[key[4:]] = orjson.loads(record.value)
            except orjson.JSONDecodeError:
                continue
    ledger.unfinished = {
        run: rec
        for run, rec in runs.items()
        if isinstance(rec, dict) and rec.get("state") == "started"
    }
    return ledger


async def sent_by(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], run: str, start: dict[str, int]
) -> set[str]:
    """The ledger keys `run` sent to events.valid (`tps`), from its start offsets to the end."""
    if not tps:
        return set()
    consumer.assign(tps)
    ends = await end_offsets(consumer, tps)
    for tp in tps:
        consumer.seek(tp, min(int(start.get(str(tp.partition), 0)), ends[tp]))
    keys: set[str] = set()
    for record in await read_until(consumer, ends):
        marker = replay_marker(record.value)
        if marker and marker.get("run") == run and isinstance(marker.get("ids"), list):
            keys.update(k for k in marker["ids"] if isinstance(k, str))
    return keys


def _ledger_value(state: str, **extra: Any) -> bytes:
    return orjson.dumps({"state": state, "at": datetime.now(UTC).isoformat(), **extra})


class _Writer:
    """Sends republished events, then records them in the ledger (not in a dry run)."""

    def __init__(
        self,
        producer: AIOKafkaProducer | None,
        run: str,
        plan_version: str,
        crash_after_chunks: int | None = None,
        chunk: int = CHUNK,
    ) -> None:
        self.producer = producer
        self.chunk = chunk
        self.run = run
        self.plan_version = plan_version
        self.pending: list[Republish] = []
        self.chunks = 0
        self.crash_after_chunks = crash_after_chunks
        self.started: dict[str, Any] = {}  # the `run:` record, rewritten as a heartbeat
        self.last_beat = time.monotonic()

    async def begin(self, valid_from: dict[str, int]) -> None:
        """Record the run as started (with where it starts writing to events.valid)."""
        self.started = {"valid_from": valid_from, "plan_version": self.plan_version}
        await self.beat(wait=True)

    async def beat(self, wait: bool = False) -> None:
        if self.producer is None or not self.started:
            return
        value = _ledger_value("started", **self.started)
        future = await self.producer.send(
            LEDGER, value=value, key=f"run:{self.run}".encode(), partition=0
        )
        if wait:
            await future
        self.last_beat = time.monotonic()

    async def beat_if_due(self) -> None:
        if time.monotonic() - self.last_beat >= HEARTBEAT_SECONDS:
            await self.beat()

    async def add(self, items: list[Republish]) -> None:
        self.pending.extend(items)
        if len(self.pending) >= self.chunk:
            await self.flush()

    async def flush(self) -> None:
        items, self.pending = self.pending, []
        if not items or self.producer is None:
            return
        sends = [
            await self.producer.send(VALID, value=value, partition=p)
            for p, value in valid_messages(items, self.run, self.plan_version)
        ]
        await asyncio.gather(*sends)  # delivered before they are recorded as replayed
        self.chunks += 1
        if self.crash_after_chunks is not None and self.chunks >= self.crash_after_chunks:
            raise SimulatedCrash(f"crash after sending chunk {self.chunks}, before recording it")
        done = _ledger_value("replayed", run=self.run, plan_version=self.plan_version)
        records = []
        for item in items:
            key = ("id:" + item.key).encode("utf-8", "surrogatepass")
            records.append(await self.producer.send(LEDGER, value=done, key=key, partition=0))
        await asyncio.gather(*records)


async def replay_quarantine(
    bootstrap: str,
    plan: ActivePlan,
    *,
    since: datetime | None = None,
    replay_filter: ReplayFilter | None = None,
    dry_run: bool = False,
    force: bool = False,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    chunk: int = CHUNK,
    crash_after_chunks: int | None = None,
) -> ReplaySummary:
    """Replay what was quarantined since `since` (None: everything kept) with `plan`.

    Reads events.quarantine up to its end at the start of the call. `on_progress(done, total)`
    counts messages. Events are sent `chunk` at a time. Refuses to start while another run
    looks alive (its heartbeat is younger than `STALE_AFTER_SECONDS`) unless `force`.
    `crash_after_chunks` (tests only) raises after sending that many chunks to events.valid
    without recording them, as a crash would.
    """
    run = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    summary = ReplaySummary(plan_version=plan.version, run=run, dry_run=dry_run)
    consumer = await start_consumer(
        bootstrap,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
        fetch_max_wait_ms=50,  # a bounded read: do not let the broker wait for new records
    )
    producer: AIOKafkaProducer | None = None
    try:
        parts = await topic_partitions(consumer, (QUARANTINE, VALID, LEDGER))
        q_tps, valid_tps, ledger_tps = parts[QUARANTINE], parts[VALID], parts[LEDGER]
        if not q_tps or not valid_tps:
            raise ReplayError(
                f"topics {QUARANTINE} and {VALID} must exist on {bootstrap}; "
                "start the worker once (or `trackwatch broker`) to create them"
            )
        if not dry_run:
            if not ledger_tps:
                spec = ledger_topic_spec()
                await asyncio.to_thread(create_topics, bootstrap, [spec])
                ledger_tps = [TopicPartition(LEDGER, p) for p in range(spec.partitions)]
            producer = AIOKafkaProducer(
                bootstrap_servers=bootstrap, acks="all", max_request_size=8 * 1024 * 1024
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                producer = None
                raise
        ledger = await read_ledger(consumer, ledger_tps)
        if not dry_run and not force:
            _refuse_if_running(ledger)
        for dead, start in ledger.unfinished.items():
            keys = await sent_by(consumer, valid_tps, dead, start.get("valid_from") or {})
            summary.recovered += len(keys - ledger.replayed)
            ledger.replayed |= keys
            if producer is not None:
                await _record(producer, keys, dead)
                await producer.send_and_wait(
                    LEDGER,
                    value=_ledger_value("recovered"),
                    key=f"run:{dead}".encode(),
                    partition=0,
                )

        planner = ReplayPlanner(
            plan.validator, len(valid_tps), replay_filter, ledger.replayed, summary
        )
        writer = _Writer(producer, run, plan.version, crash_after_chunks, chunk)
        if producer is not None:
            consumer.assign(valid_tps)
            valid_ends = await end_offsets(consumer, valid_tps)
            await writer.begin({str(tp.partition): o for tp, o in valid_ends.items()})
        await _scan(consumer, q_tps, since, planner, writer, on_progress)
        await writer.flush()
        if producer is not None:
            await producer.send_and_wait(
                LEDGER, value=_ledger_value("done"), key=f"run:{run}".encode(), partition=0
            )
    finally:
        if producer is not None:
            await producer.stop()
        await consumer.stop()
    return summary


def _refuse_if_running(ledger: Ledger) -> None:
    """ReplayError if an unfinished run wrote its heartbeat recently (it may still be running)."""
    now = datetime.now(UTC)
    for run, record in ledger.unfinished.items():
        try:
            age = (now - datetime.fromisoformat(str(record.get("at")))).total_seconds()
        except (TypeError, ValueError):
            continue
        if age < STALE_AFTER_SECONDS:
            raise ReplayError(
                f"replay run {run} has not finished (last heartbeat {age:.0f}s ago): it is still "
                f"running, or it died. Wait for it, or pass --force if it died (what it sent is "
                f"found again, not sent twice); after {STALE_AFTER_SECONDS:.0f}s it counts as dead"
            )


async def _record(producer: AIOKafkaProducer, keys: set[str], run: str) -> None:
    value = _ledger_value("replayed", run=run)
    sends = [
        await producer.send(
            LEDGER, value=value, key=("id:" + k).encode("utf-8", "surrogatepass"), partition=0
        )
        for k in sorted(keys)
    ]
    await asyncio.gather(*sends)


async def _scan(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    since: datetime | None,
    planner: ReplayPlanner,
    writer: _Writer,
    on_progress: Callable[[int, int], None],
) -> None:
    """Read events.quarantine from `since` to its current end and feed the planner."""
    consumer.assign(tps)
    ends = await end_offsets(consumer, tps)
    starts = await consumer.beginning_offsets(tps)
    since_ms = int(since.timestamp() * 1000) if since else None
    if since_ms is not None:
        found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
        for tp, hit in found.items():
            # None: nothing that recent. A broker without time indexes may answer offset 0; the
            # timestamps are checked again below, so an early offset only costs reading time.
            starts[tp] = ends[tp] if hit is None else max(starts[tp], hit.offset)
    total = sum(max(0, ends[tp] - starts[tp]) for tp in tps)
    pending = {tp: ends[tp] for tp in tps if starts[tp] < ends[tp]}
    for tp in tps:
        consumer.seek(tp, starts[tp])
    done = 0
    last = time.monotonic()
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=500, max_records=1000)
        for tp, records in batches.items():
            for record in records:
                if record.offset >= pending.get(tp, 0):
                    continue
                done += 1
                if since_ms is not None and record.timestamp < since_ms:
                    planner.summary.before_since += 1
                    continue
                await writer.add(planner.message(tp.partition, record.offset, record.value))
        await writer.beat_if_due()
        if batches:
            last = time.monotonic()
            on_progress(done, total)
        for tp in list(pending):
            if await consumer.position(tp) >= pending[tp]:
                del pending[tp]
        if pending and time.monotonic() - last > 30:
            raise ReplayError(f"{QUARANTINE} stopped answering after {done} of {total} messages")
