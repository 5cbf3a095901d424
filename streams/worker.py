"""The Faust agents. All real work is in the pure modules (`streams.pipeline`,
`streams.windows`, `streams.merge`, `detectors.engine`); this module moves batches between Kafka
topics, keeps per-partition state in a table and exports metrics.

Agents
- process (events.raw): dedupe, validate, route to events.valid / events.quarantine, and count
  every outcome (quarantined ones too) into the raw partition's event-time windows, flushed to
  metrics.windows when windows close. Validation and aggregation are fused in one agent: both
  are keyed by the raw partition (the collector puts one user's events on one partition), so
  this saves re-parsing every event from events.valid, and the dedupe window and the window
  counts live in the same snapshot.
- detect (metrics.windows): merges the flushes of all partitions per window and runs the
  `DetectionEngine`; alerts go to the anomalies topic, the Prometheus gauges and /api/anomalies.

Liveness: `trackwatch_last_processed_timestamp_seconds{stage}` per stage of `STAGES` (validate and
aggregate: each batch of the process agent; detect: each batch of the detect agent), set to the
worker's start until the stage first processes a batch (the stale-stage alert then still sees it).

Message formats (orjson; every Kafka message carries a batch: Faust costs ~230 µs per message):
- events.valid, partition = the events.raw partition: ``{"origin": [raw_partition, raw_offset],
  "plan_version", "events": [{"source", "event"}...]}``, `event` the normalised event (with
  `violations` when flagged), `plan_version` the plan that validated the whole message.
- events.quarantine, same partition: a JSON array of ``{"envelope", "violations",
  "plan_version"}`` (plus ``raw`` / ``raw_base64`` when the message was not a JSON array).
- metrics.windows, partition 0: a *flush* ``{"partition", "flush": raw_offset, "closed_until",
  "records": [WindowRecord...]}``; ``closed_until`` = no record of an earlier window follows.
- anomalies: one Anomaly per message, key = its id.

Plan hot reload: the `--plan` file validates until a plan is published to the `plans` topic
(`trackwatch plans publish`, `streams.plan_sync`). Every worker follows that single-partition
topic with a `PlanWatcher` and reads `watcher.current` once per batch, so one message is always
validated by one plan version and all workers converge on the last valid plan published. The
process agent starts only once the watcher has caught up with the topic. Funnels are taken
from the plan a partition's windows were created with (a funnel change applies to new state).

Exactly-once state, at-least-once output: each agent snapshots its state per input partition
(`streams.snapshots`: not one changelog write per event) and acknowledges input only once a
snapshot covers it, so the committed offset never passes the snapshot: the outputs' and the
snapshot's records are all acknowledged by the broker first (`producer.flush()` alone does not
guarantee it). After a crash or a takeover the worker restores the snapshot, skips input the
snapshot covers and re-runs the rest deterministically: no event is lost or counted twice in the
windows. Outputs of the re-run are sent again; they carry ids for their consumers to skip what
they have seen: `origin` on events.valid (highest raw offset per raw partition), `flush` on
metrics.windows (highest per partition, which the detect agent applies). Quarantine records are
re-sent the same way (dedupe them by messageId).

Input gaps (issue 5). The snapshot's offset, not the consumer's committed offset, says what the
state holds, and the input topics have contiguous offsets. So when an agent is handed offset `o`
of a partition whose state ends at `s` < o - 1, the messages between were skipped on the way:
Faust discards records fetched while it finishes a rebalance (see `streams.gaps` for the race),
or its committed offset passed the snapshot (no snapshot restored: `s` = -1, the input is re-read
from the log start). The agent then reads offsets s+1 .. o-1 directly from the broker
(`streams.gaps.RangeReader`) and folds them in, in order, before `o`; they are acknowledged with
the next snapshot like any input. Windows stay exactly-once (every offset is folded once, in
order: offsets at or below the state's are skipped); outputs stay at-least-once (a repaired
message's outputs may duplicate ones sent by a previous owner, with the same ids). Each repair is
logged (WARNING) and counted in `trackwatch_input_gaps_total{stage,outcome}` and
`trackwatch_input_gap_messages_total{stage}`; offsets the broker no longer holds (retention) are
logged as an ERROR and counted with outcome="lost". Missing input that cannot be read (broker
away) raises: the agent restarts and the next message of the partition triggers the repair again.
A gap at the very end of a partition is repaired when the partition's next message arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from math import inf
from typing import Any

import faust
import orjson
from faust.types import ConsumerMessage

from detectors.annotations import Annotation
from detectors.records import Anomaly, WindowRecord
from streams import metrics as m
from streams import snapshots
from streams.companions import COMPANION_MINUTES
from streams.gaps import RangeReader
from streams.history import open_history, record_history
from streams.merge import WindowMerger, record_dict
from streams.model_status import ModelStatus, model_status
from streams.pipeline import BatchOutput, BatchProcessor, encode_outputs
from streams.plan_sync import ActivePlan, PlanWatcher, swap_into
from streams.topics import ANOMALIES, QUARANTINE, RAW, VALID, WINDOWS
from streams.windows import (
    DEFAULT_DIMENSIONS,
    EARLY_MINUTES,
    LATE_HORIZON_SECONDS,
    WindowAggregator,
)
from tracking_plan.dedupe import Deduper
from tracking_plan.model import Plan

log = logging.getLogger(__name__)
TAIL_CHECK_SECONDS = 5.0  # see `Pipeline._watch_tails`
# stages reported in trackwatch_last_processed_timestamp_seconds{stage}: the process agent does
# the first two for every message, the detect agent the third
STAGES = ("validate", "aggregate", "detect")

try:  # imported now, not in the detect agent: importing scipy would stall the event loop ~1 s
    from detectors.engine import DetectionEngine
except ImportError:  # pragma: no cover - the detectors are optional: windows flow without them
    DetectionEngine = None  # type: ignore[assignment,misc]
else:
    DetectionEngine()  # loads its model classes (river, ...) now, for the same reason


@dataclass
class WorkerConfig:
    """Tuning of the agents (defaults suit one worker on a laptop)."""

    dimensions: tuple[str, ...] = DEFAULT_DIMENSIONS
    window_seconds: int = 60
    allowed_lateness_seconds: int = 120
    early_minutes: int = EARLY_MINUTES  # early conversion records (0: none)
    companion_minutes: int = COMPANION_MINUTES  # horizon of the learnt companion pairs (0: none)
    late_horizon_seconds: int = LATE_HORIZON_SECONDS  # late events revise windows this recent
    batch_messages: int = 200  # events.raw messages per take() (each holds many envelopes)
    batch_within: float = 0.05  # seconds take() waits for a fuller batch
    snapshot_interval: float = 5.0  # seconds between two state snapshots of a partition
    dedupe_max_age: float = 24 * 3600.0
    dedupe_max_entries: int = 100_000  # per partition; a full snapshot of 100k ids ~4.6 MB
    idle_grace_seconds: float = 120.0  # wall time after which a silent partition is skipped
    annotations: list[Annotation] = field(default_factory=list)
    engine: Any = None  # detectors.engine.EngineConfig (a tuning file); None: the defaults
    history_db: str | None = None  # SQLite history file the detect agent fills (None: none)


@dataclass
class _Partition:
    """One input partition's state in an agent: what it covers and what awaits its snapshot."""

    offset: int = -1  # last input offset folded into the state
    unacked: list[Any] = field(default_factory=list)
    ack_from: int = 0  # the offsets before were acknowledged, or covered by the restored snapshot
    sent: list[Any] = field(default_factory=list)  # futures of outputs not yet confirmed
    saved_at: float = field(default_factory=time.monotonic)
    last_event: Any = None
    state: Any = None


def _export_late(agg: WindowAggregator, state: dict[str, Any]) -> None:
    """Add the aggregator's late events since the last call to the Prometheus counters."""
    seen = state["late_seen"]  # (kind, source) -> exported; empty after a restart
    for kind, metric, counts in (
        ("late", m.LATE_EVENTS, agg.late_events),
        ("revised", m.LATE_REVISED, agg.revised_events),
        ("too late", m.TOO_LATE, agg.too_late_events),
    ):
        for source, n in counts.items():
            done = seen.get((kind, source), 0)
            if n > done:
                metric.labels(source).inc(n - done)
                seen[(kind, source)] = n


def _label(planned: bool, key: str) -> str:
    return key if planned else m.UNPLANNED_EVENT_LABEL


class Pipeline:
    """Installs the three agents on a Faust app and holds what the web view shows."""

    def __init__(
        self,
        app: faust.App,
        plan: Plan,
        config: WorkerConfig,
        partitions: int,
        bootstrap: str | None = None,
    ) -> None:
        """`plan` validates until a plan is published on the plans topic of `bootstrap` (None:
        `plan` only, no hot reload)."""
        self.app = app
        self.config = config
        self.partitions = partitions
        self.bootstrap = bootstrap or ",".join(
            f"{url.host}:{url.port or 9092}" for url in app.conf.broker
        )
        self.readers: dict[str, RangeReader] = {}  # per agent: reads input gaps back
        started = time.time()
        for stage in STAGES:  # a stage that never processes anything goes stale from the start
            m.LAST_PROCESSED.labels(stage).set(started)
        for stage in ("process", "detect"):  # exported at 0, so that rules see the first one
            m.INPUT_GAP_MESSAGES.labels(stage)
            for outcome in ("repaired", "lost", "resought"):
                m.INPUT_GAPS.labels(stage, outcome)
        self.anomalies: dict[str, Anomaly] = {}  # current (not resolved) anomalies by id
        self.history = open_history(config.history_db)  # see `streams.history`
        self._unplanned_firing: set[tuple[str, ...]] = set()  # see `unplanned_firing`
        # per agent: input partition -> its state in memory (see `_current`)
        self.parts: dict[str, dict[int, _Partition]] = {
            "process": {},
            "detect": {},
        }
        self.raw = app.topic(RAW, value_type=bytes, value_serializer="raw")
        self.valid = app.topic(VALID, value_type=bytes, value_serializer="raw")
        self.quarantine = app.topic(QUARANTINE, value_type=bytes, value_serializer="raw")
        self.windows = app.topic(WINDOWS, value_type=bytes, value_serializer="raw")
        self.alerts = app.topic(ANOMALIES, value_type=bytes, value_serializer="raw")
        self.state_table = snapshots.state_table(app, "process-state", partitions)
        self.detect_state = snapshots.state_table(app, "detect-state", partitions)
        # the plan in use: `plan` until the plans topic holds one (exports trackwatch_plan_info)
        self.plans = PlanWatcher(bootstrap or "", initial=plan)
        self.plans_ready = asyncio.Event()  # set once caught up with the plans topic
        if bootstrap is None:
            self.plans_ready.set()
        else:
            app.task(self._follow_plans)
        app.agent(self.raw, name="process")(self._process_agent)
        app.agent(self.windows, name="detect")(self._detect_agent)
        app.on_before_shutdown.connect(self._stop_readers)
        self._stalled: dict[Any, tuple[int, int]] = {}  # see `_watch_tails`
        self._status_at = -inf  # see `_export_model_status`
        self._status_phase: tuple[bool, bool] | None = None
        app.task(self._watch_tails)

    @property
    def plan(self) -> Plan:
        """The plan validating now."""
        return self.active.plan

    @property
    def active(self) -> ActivePlan:
        current = self.plans.current
        assert current is not None  # the watcher starts with the --plan file
        return current

    async def _follow_plans(self) -> None:
        """Catch up with the plans topic (the agents wait for it), then follow it until the
        worker stops. If the topic cannot be read, the agents go on with the plan they have."""
        while True:
            try:
                await self.plans.start()
                break
            except Exception as exc:  # broker away, topic unreadable: retry
                log.error(
                    "plans topic unreadable (%s); validating with plan %s meanwhile",
                    exc, self.plans.current_version,
                )  # fmt: skip
                self.plans_ready.set()
                await asyncio.sleep(5.0)
        self.plans_ready.set()
        log.info("plan %s in use (following the plans topic)", self.plans.current_version)
        try:
            await asyncio.Event().wait()  # the watcher follows in its own task
        finally:
            await self.plans.stop()

    @staticmethod
    def _current(parts: dict[int, _Partition], table: Any, p: int) -> _Partition | None:
        """The in-memory state of partition `p` unless the table holds a newer snapshot (another
        worker owned `p` meanwhile): then None, and the caller reloads. In-memory state is
        never dropped on a rebalance: messages already buffered may still arrive for it, and
        state rebuilt from an older snapshot would count them on top of a gap."""
        part = parts.get(p)
        if part is not None and snapshots.covered(table, p) > part.offset:
            return None
        return part

    # ------------------------------------------------------------------ shared plumbing

    async def _checkpoint(self, stream: Any, table: Any, part: _Partition, state: dict) -> None:
        """Outputs delivered, then the snapshot, then acknowledge the input it covers. Every
        step waits for the broker's acknowledgement (a failed send raises: nothing is acked)."""
        if part.last_event is None:
            return
        await self.app.producer.flush()
        if part.sent:
            await asyncio.gather(*part.sent)
            part.sent.clear()
        await snapshots.save(table, part.last_event, state, part.offset)  # acked by the broker
        for event in part.unacked:
            await stream.ack(event)
        self._ack_covered(part)
        part.unacked.clear()
        part.saved_at = time.monotonic()

    def _ack_covered(self, part: _Partition) -> None:
        """Acknowledge the input offsets the snapshot covers that came without a stream event
        to acknowledge: read back by `_fill_gap`, or handed to nobody although the state already
        held them (Faust discards records after a rebalance, `streams.gaps`). Faust commits only
        up to its first unacknowledged offset: without this, such a hole would hold the
        committed offset of the partition back for good."""
        assert part.last_event is not None
        tp = part.last_event.message.tp
        seen = {event.message.offset for event in part.unacked}
        # Faust's own committed offset (a private attribute: if it goes, holes at the head of a
        # re-delivery stay unacknowledged and only the commit of that partition lags)
        committed = getattr(self.app.consumer, "_committed_offset", {}).get(tp)
        starts = [part.ack_from, *([min(seen)] if seen else [])]
        if isinstance(committed, int):
            starts.append(committed)
        consumer = self.app.consumer
        for offset in range(max(0, min(starts)), part.offset + 1):
            if offset not in seen:
                _covered_message(tp, offset).ack(consumer)
        part.ack_from = part.offset + 1

    def _due(self, part: _Partition) -> bool:
        return time.monotonic() - part.saved_at >= self.config.snapshot_interval

    def _reader(self, stage: str) -> RangeReader:
        reader = self.readers.get(stage)
        if reader is None:
            reader = self.readers[stage] = RangeReader(
                self.bootstrap, max_fetch_bytes=int(self.app.conf.consumer_max_fetch_size)
            )
        return reader

    async def _stop_readers(self, *args: Any, **kwargs: Any) -> None:
        for reader in list(self.readers.values()):
            with contextlib.suppress(Exception):
                await reader.stop()
        self.readers.clear()

    async def _fill_gap(
        self,
        stage: str,
        topic: str,
        p: int,
        part: _Partition,
        upto: int,
        fold: Callable[[int, bytes | None], Awaitable[None]],
    ) -> None:
        """Fold in the input offsets part.offset + 1 .. `upto` - 1 that the consumer never handed
        to the agent, read directly from the broker (`streams.gaps`); `fold(offset, value)`
        processes one message like the agent's loop does and advances `part.offset`."""
        reader = self._reader(stage)
        start = part.offset + 1
        log_start = await reader.log_start(topic, p)
        if start < log_start:
            if part.offset >= 0:
                log.error(
                    "%s: offsets %d..%d of %s/%d were deleted before they were processed",
                    stage, start, log_start - 1, topic, p,
                )  # fmt: skip
                m.INPUT_GAPS.labels(stage, "lost").inc()
            start = log_start
        if start >= upto:
            return
        if part.offset < 0:
            log.warning(
                "%s: %s/%d has no snapshot but was handed offset %d: reading it from offset %d",
                stage, topic, p, upto, start,
            )  # fmt: skip
        else:
            log.warning(
                "%s: %s/%d jumps from offset %d to %d: reading offsets %d..%d from the broker",
                stage, topic, p, part.offset, upto, start, upto - 1,
            )  # fmt: skip
        n = 0
        async with contextlib.aclosing(reader.read(topic, p, start, upto)) as records:
            async for record in records:
                if record.offset <= part.offset:
                    continue
                await fold(record.offset, record.value)  # acknowledged by `_ack_covered`
                n += 1
        m.INPUT_GAP_MESSAGES.labels(stage).inc(n)
        if part.offset < upto - 1 or n < upto - start:
            log.error(
                "%s: %s/%d: only %d of offsets %d..%d could be read back",
                stage, topic, p, n, start, upto - 1,
            )  # fmt: skip
            m.INPUT_GAPS.labels(stage, "lost").inc()
        else:
            log.warning("%s: %s/%d: offsets %d..%d repaired", stage, topic, p, start, upto - 1)
            m.INPUT_GAPS.labels(stage, "repaired").inc()

    async def _watch_tails(self) -> None:
        """Re-seek input partitions whose state stopped short of the log end.

        `_fill_gap` repairs a gap once a later message of the partition arrives; when the
        messages Faust dropped after a rebalance were the last ones of a partition, none comes.
        So every `TAIL_CHECK_SECONDS` each assigned input partition is compared with its state:
        if the consumer's position is at the end of the log but the state (or, for a partition
        not seen yet, its snapshot) is behind it on two checks in a row, the consumer is sought
        back to the first offset the state lacks; the agent then gets those messages the normal
        way (offsets the state already holds are skipped)."""
        stages = {
            RAW: ("process", self.parts["process"], self.state_table),
            WINDOWS: ("detect", self.parts["detect"], self.detect_state),
        }
        while True:
            await asyncio.sleep(TAIL_CHECK_SECONDS)
            if getattr(self.app, "rebalancing", False):
                self._stalled.clear()
                continue
            try:
                await self._check_tails(stages)
            except Exception as exc:  # e.g. a consumer between assignments: next time
                log.debug("tail check skipped: %r", exc)

    async def _check_tails(self, stages: dict[str, tuple[str, dict[int, Any], Any]]) -> None:
        consumer = self.app.consumer
        for tp in consumer.assignment():
            if tp.topic not in stages:
                continue
            stage, parts, table = stages[tp.topic]
            end = consumer.highwater(tp)
            position = await consumer.position(tp)
            part = parts.get(tp.partition)
            covered = snapshots.covered(table, tp.partition)  # newer if another worker owned p
            done = covered if part is None else max(part.offset, covered)
            if end is None or position is None or done + 1 >= end or position < end:
                self._stalled.pop(tp, None)
                continue
            if self._stalled.get(tp) != (done, end):
                self._stalled[tp] = (done, end)  # maybe still in a queue: look again next time
                continue
            del self._stalled[tp]
            log.warning(
                "%s: %s/%d stopped at offset %d of %d: seeking back to offset %d",
                stage, tp.topic, tp.partition, done, end - 1, done + 1,
            )  # fmt: skip
            m.INPUT_GAPS.labels(stage, "resought").inc()
            await consumer.seek(tp, done + 1)

    # ------------------------------------------------------------------ validate + aggregate

    def _new_aggregator(self, plan: Plan) -> WindowAggregator:
        c = self.config
        return WindowAggregator(
            window_seconds=c.window_seconds,
            allowed_lateness_seconds=c.allowed_lateness_seconds,
            early_minutes=c.early_minutes,
            companion_minutes=c.companion_minutes,
            late_horizon_seconds=c.late_horizon_seconds,
            dimensions=c.dimensions,
            funnels=plan.funnels,
            plan=plan,
        )

    def _restore(self, p: int, active: ActivePlan) -> _Partition:
        """The state of raw partition `p` from its last snapshot (empty if none)."""
        state, covered = snapshots.load(self.state_table, p)
        log.info("process: partition %d resumes after offset %d", p, covered)
        agg = self._new_aggregator(active.plan)
        closed = None
        if state is not None:
            deduper = Deduper.from_state(state["dedupe"])
            agg.load_state(state["agg"])
            closed = state["closed"]
        else:
            deduper = Deduper(self.config.dedupe_max_age, self.config.dedupe_max_entries)
        processor = BatchProcessor(active.plan, deduper, self.config.dimensions, active.validator)
        if state is not None and "keys" in state:  # (older snapshots have none: new stores)
            processor.load_keys_state(state["keys"])
        return _Partition(
            offset=covered,
            ack_from=covered + 1,
            state={"proc": processor, "agg": agg, "closed": closed, "late_seen": Counter()},
        )

    async def _process_agent(self, stream: Any) -> None:
        """events.raw -> dedupe, validate -> events.valid / events.quarantine, and count the
        outcome into the partition's windows -> metrics.windows. Validation and aggregation are
        fused: both are keyed by the raw partition (one user per partition), so this saves a
        second parse of every event and makes dedupe state and window counts one snapshot."""
        parts = self.parts["process"]
        await self.plans_ready.wait()  # validate with the published plan from the first batch
        t_end = time.perf_counter()
        async for events in stream.noack_take(self.config.batch_messages, self.config.batch_within):
            active = self.active  # one plan version for the whole batch
            t0 = time.perf_counter()
            n_events = 0
            newest: float | None = None
            for event in events:
                p, offset = event.message.partition, event.message.offset
                part = self._current(parts, self.state_table, p)
                if part is None:
                    part = parts[p] = self._restore(p, active)
                part.last_event = event  # (also the changelog partition of a snapshot)
                if offset > part.offset + 1:  # input skipped on the way: read it back first

                    async def fold(
                        o: int, value: bytes | None, p: int = p, part=part, active=active
                    ) -> None:
                        nonlocal n_events, newest
                        out = await self._process_one(stream, p, part, o, value, active)
                        n_events += out.received
                        if out.max_received_at is not None:
                            newest = max(newest or 0.0, out.max_received_at)

                    await self._fill_gap("process", event.message.topic, p, part, offset, fold)
                part.unacked.append(event)
                if offset <= part.offset:  # already in the restored state
                    continue
                out = await self._process_one(stream, p, part, offset, event.value, active)
                n_events += out.received
                if out.max_received_at is not None:
                    newest = max(newest or 0.0, out.max_received_at)
            for part in list(parts.values()):
                # once per snapshot interval, also for a partition this batch did not touch: a
                # snapshot holds the whole state (dedupe ids, open windows), and writing one
                # for every partition that paused for a batch cost more than the batches under
                # steady traffic. The input of a partition that went quiet is acknowledged with
                # the first batch after its interval; a restart before re-runs it from the
                # snapshot (its outputs carry their ids)
                if part.unacked and self._due(part):
                    await self._checkpoint(stream, self.state_table, part, _process_state(part))
            t2 = time.perf_counter()
            log.debug(
                "process: %d messages, %d events in %.1f ms (waited %.1f ms)",
                len(events), n_events, 1e3 * (t2 - t0), 1e3 * (t0 - t_end),
            )  # fmt: skip
            t_end = t2
            m.BATCH_SIZE.labels("validate").observe(n_events)
            now = time.time()
            for stage in ("validate", "aggregate"):  # both done for every message of the batch
                m.LAST_PROCESSED.labels(stage).set(now)
                if newest is not None:
                    m.PROCESSING_LAG.labels(stage).set(max(0.0, now - newest))

    async def _process_one(
        self,
        stream: Any,
        p: int,
        part: _Partition,
        offset: int,
        value: bytes | None,
        active: ActivePlan,
    ) -> BatchOutput:
        """Validate, route and count one events.raw message (offset > part.offset): a stream
        event (the caller put it in `part.unacked`) or a message `_fill_gap` read back."""
        proc: BatchProcessor = part.state["proc"]
        if swap_into(proc, active):
            part.state["agg"].platforms = _platforms(active.plan)
        out = proc.process(value or b"")
        part.sent += await self._route(p, offset, out, proc.plan_version)
        agg: WindowAggregator = part.state["agg"]
        agg.add_tallies(out.tallies, proc.paths)
        part.offset = offset
        # windows are closed after every message, never per batch: the flushes are then a
        # function of the input alone, so a re-run after a crash re-sends the very same flushes
        # (same `flush` id), which the detect agent skips
        await self._flush_windows(p, part)
        if self._due(part):  # also inside a long batch: acks keep up with the input
            await self._checkpoint(stream, self.state_table, part, _process_state(part))
        return out

    async def _route(self, p: int, offset: int, out: BatchOutput, plan_version: str) -> list[Any]:
        """Send the outputs of one message; the futures of their delivery."""
        valid, quarantine = encode_outputs(out, [p, offset], plan_version)
        sent = []
        if valid is not None:
            sent.append(await self.valid.send(value=valid, partition=p % self.partitions))
        if quarantine is not None:
            sent.append(await self.quarantine.send(value=quarantine, partition=p % self.partitions))
        _export_validate_metrics(out)
        return sent

    async def _flush_windows(self, q: int, part: _Partition) -> bool:
        agg: WindowAggregator = part.state["agg"]
        records = agg.advance()
        closed = agg.watermark - agg.lateness
        boundary = (closed // agg.window) * agg.window if closed > float("-inf") else None
        _export_late(agg, part.state)
        if not records and boundary == part.state["closed"]:
            return False
        part.state["closed"] = boundary
        flush = {
            "partition": str(q),
            "flush": part.offset,
            "closed_until": boundary,
            "records": [record_dict(r) for r in records],
        }
        part.sent.append(await self.windows.send(value=orjson.dumps(flush), partition=0))
        for rec in records:
            m.WINDOWS_EMITTED.labels(rec.kind).inc()
        return True

    # ------------------------------------------------------------------ detect

    def _new_engine(self, state: dict | None) -> Any:
        if DetectionEngine is None:  # the detectors are optional: windows still flow without
            return None
        c = self.config
        if state is not None:
            return DetectionEngine.from_state(
                state, plan=self.plan, config=c.engine, annotations=c.annotations
            )
        return DetectionEngine(plan=self.plan, config=c.engine, annotations=c.annotations)

    async def _detect_agent(self, stream: Any) -> None:
        parts = self.parts["detect"]
        async for events in stream.noack_take(self.config.batch_messages, self.config.batch_within):
            for event in events:
                p, offset = event.message.partition, event.message.offset
                part = self._current(parts, self.detect_state, p)
                if part is None:
                    part = parts[p] = self._restore_detect(p)
                part.last_event = event
                if offset > part.offset + 1:  # input skipped on the way: read it back first

                    async def fold(o: int, value: bytes | None, p: int = p, part=part) -> None:
                        await self._detect_one(p, part, o, value)

                    await self._fill_gap("detect", event.message.topic, p, part, offset, fold)
                part.unacked.append(event)
                if offset <= part.offset:
                    continue
                await self._detect_one(p, part, offset, event.value)
            for part in list(parts.values()):
                # once per snapshot interval: during a catch-up, flushes come in many small
                # batches; in steady traffic (a flush a minute per partition) every batch is due.
                # The last batch of a burst is acknowledged with the next flush; a restart
                # before that re-runs it from the snapshot (and skips its re-sent flushes)
                if part.unacked and self._due(part):
                    await self._checkpoint(stream, self.detect_state, part, _detect_state(part))
            m.LAST_PROCESSED.labels("detect").set(time.time())

    async def _detect_one(self, p: int, part: _Partition, offset: int, value: bytes | None) -> None:
        """Merge one flush of metrics.windows (offset > part.offset) and run the detectors on
        the windows it releases."""
        part.offset = offset
        try:
            flush = orjson.loads(value or b"")
            records = [WindowRecord.from_dict(r) for r in flush["records"]]
            source, seq = str(flush["partition"]), int(flush["flush"])
            closed = flush["closed_until"]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.error("detect: unreadable metrics.windows message at %s/%s", p, offset)
            return
        seen = part.state["flushes"]
        if seq <= seen.get(source, -1):
            return  # re-sent by a restarted aggregate stage
        seen[source] = seq
        merger: WindowMerger = part.state["merger"]
        before = merger.released_until
        released = merger.add(source, -inf if closed is None else closed, records, time.monotonic())
        if released and self.history is not None:
            record_history(self.history, released, [])
        engine = part.state["engine"]
        if engine is not None and engine.plan is not self.plan:
            _set_engine_plan(engine, self.plan)
        if engine is not None and (released or merger.released_until > before):
            # `until`: windows closed everywhere but without records count as empty
            until = merger.released_until
            changes = engine.process(released, until=until if until > -inf else None)
            await self._publish(changes, engine)
            self._export_model_status()

    def _restore_detect(self, p: int) -> _Partition:
        state, covered = snapshots.load(self.detect_state, p)
        merger = WindowMerger(self.config.idle_grace_seconds)
        flushes: dict[str, int] = {}
        engine_state = None
        if state is not None:
            merger.load_state(state["merger"])
            flushes = state["flushes"]
            engine_state = state["engine"]
        engine = self._new_engine(engine_state)
        if engine is not None:
            for anomaly in engine.active():
                self.anomalies[anomaly.id] = anomaly
        return _Partition(
            offset=covered,
            ack_from=covered + 1,
            state={"merger": merger, "flushes": flushes, "engine": engine},
        )

    def model_status(self) -> ModelStatus:
        """Whether the detectors still learn, over every detect partition this worker holds."""
        statuses = [model_status(part.state["engine"]) for part in self.parts["detect"].values()]
        if not statuses:
            return ModelStatus()
        untils = [s.learning_until for s in statuses if s.learning_until is not None]
        times = [s.event_time for s in statuses if s.event_time is not None]
        return ModelStatus(
            series=sum(s.series for s in statuses),
            learning=sum(s.learning for s in statuses),
            learning_until=max(untils) if untils else None,
            event_time=max(times) if times else None,
        )

    def _export_model_status(self) -> None:
        """The models' gauges and a log line when their state changes (at most once a second)."""
        now = time.monotonic()
        if now - self._status_at < 1.0:
            return
        self._status_at = now
        status = self.model_status()
        m.MODELS.labels("learning").set(status.learning)
        m.MODELS.labels("ready").set(status.ready)
        m.MODELS_LEARNING_UNTIL.set(status.learning_until or 0.0)
        phase = (status.series > 0, status.learning * 2 >= status.series)
        if phase != self._status_phase:
            self._status_phase = phase
            log.warning("models: %s", status.summary())

    async def _publish(self, anomalies: list[Anomaly], engine: Any) -> None:
        if anomalies and self.history is not None:
            record_history(self.history, [], [a.to_dict() for a in anomalies])
        for anomaly in anomalies:
            await self.alerts.send(key=anomaly.id.encode(), value=orjson.dumps(anomaly.to_dict()))
            if anomaly.state == "resolved":
                self.anomalies.pop(anomaly.id, None)
            else:
                self.anomalies[anomaly.id] = anomaly
            if anomaly.state == "firing":
                m.ANOMALIES.labels(anomaly.kind).inc()
        for labels, obs, exp, lo, up, score, firing in engine.gauges():
            m.SERIES_OBSERVED.labels(**labels).set(obs)
            m.SERIES_EXPECTED.labels(**labels).set(exp)
            m.SERIES_LOWER.labels(**labels).set(lo)
            m.SERIES_UPPER.labels(**labels).set(up)
            m.SERIES_SCORE.labels(**labels).set(score)
            m.ANOMALY_FIRING.labels(**labels).set(1 if firing else 0)
        # the engine exports no series of events the plan does not know (unbounded names): their
        # anomalies (a new unplanned event) fire under event="(unplanned)"
        now = unplanned_firing(self.anomalies.values(), self.plan)
        for labels in self._unplanned_firing | now:
            m.ANOMALY_FIRING.labels(*labels).set(1 if labels in now else 0)
        self._unplanned_firing = now


def unplanned_firing(anomalies: Any, plan: Plan) -> set[tuple[str, ...]]:
    """The `trackwatch_anomaly_firing` labels (event, source, platform, kind) of the firing
    anomalies about events the plan does not know, all under event="(unplanned)"."""
    out: set[tuple[str, ...]] = set()
    for anomaly in anomalies:
        event = anomaly.series.get("event")
        if anomaly.state != "firing" or event is None or event in plan.events:
            continue
        source, platform = anomaly.series.get("source", ""), anomaly.series.get("platform", "")
        out.add((m.UNPLANNED_EVENT_LABEL, source, platform, "volume"))
    return out


def _covered_message(tp: Any, offset: int) -> ConsumerMessage:
    """A message to acknowledge an input offset that has no stream event (`_ack_covered`)."""
    return ConsumerMessage(tp.topic, tp.partition, offset, 0.0, 0, None, None, None, None, tp=tp)


def _set_engine_plan(engine: Any, plan: Plan) -> None:
    """Let a `DetectionEngine` judge series (planned? block mode?) by a hot-reloaded plan."""
    engine.plan = plan
    cache = getattr(engine, "_forwarded", None)  # per-(event, source) modes of the old plan
    if isinstance(cache, dict):
        cache.clear()


def _platforms(plan: Plan) -> dict[str, str | None]:
    """The source -> platform map a `WindowAggregator` takes from its plan."""
    return {name: spec.platform for name, spec in plan.sources.items()}


def _process_state(part: _Partition) -> dict[str, Any]:
    s = part.state
    return {
        "dedupe": s["proc"].deduper.to_state(),
        "keys": s["proc"].keys_state(),
        "agg": s["agg"].to_state(),
        "closed": s["closed"],
    }


def _detect_state(part: _Partition) -> dict[str, Any]:
    s = part.state
    engine = s["engine"]
    return {
        "merger": s["merger"].to_state(),
        "flushes": s["flushes"],
        "engine": engine.to_state() if engine is not None else None,
    }


_METRIC_FIELDS = operator.itemgetter(0, 1, 2, 4, 5)  # source, key, planned, codes, quarantined


def _export_validate_metrics(out: BatchOutput) -> None:
    received: Counter[tuple[str, str]] = Counter()
    valid: Counter[tuple[str, str]] = Counter()
    flagged: Counter[tuple[str, str, str]] = Counter()
    quarantined: Counter[tuple[str, str, str]] = Counter()
    # the tallies grouped by what their metrics depend on: a few groups per message
    for (source, key, planned, codes, q), n in Counter(map(_METRIC_FIELDS, out.tallies)).items():
        labels = (source, _label(planned, key))
        received[labels] += n
        if q:
            for code in codes:
                quarantined[(*labels, code)] += n
        else:
            valid[labels] += n
            for code in codes:
                flagged[(*labels, code)] += n
    for code, n in out.unread.items():  # envelopes or messages that could not even be read
        received[("(unknown)", m.UNPLANNED_EVENT_LABEL)] += n
        quarantined[("(unknown)", m.UNPLANNED_EVENT_LABEL, code)] += n
    for (source, event), n in received.items():
        m.RECEIVED.labels(source, event).inc(n)
    for (source, event), n in valid.items():
        m.VALID.labels(source, event).inc(n)
    for labels, n in flagged.items():
        m.FLAGGED.labels(*labels).inc(n)
    for labels, n in quarantined.items():
        m.QUARANTINED.labels(*labels).inc(n)
    for source, n in out.duplicates.items():
        m.DUPLICATES.labels(source).inc(n)
    for (source, event), n in out.duplicate_keys.items():
        m.DUPLICATE_KEYS.labels(source, event).inc(n)
    for (source, event), n in out.repeated_payloads.items():
        m.REPEATED_PAYLOADS.labels(source, event).inc(n)
