"""Offline deterministic replay: the streaming pipeline's pure code over a JSONL file of envelopes.

Same code as the Faust agents (`BatchProcessor.process_envelope`, `WindowAggregator`,
`DetectionEngine`), event time, no Kafka and no wall clock: the same file gives the same
windows and alerts every time, and the same as the streaming path fed the same envelopes in the
same order on one partition. At the end of the file every open window is closed.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from detectors.annotations import Annotation
from detectors.records import Anomaly, WindowRecord
from streams.companions import COMPANION_MINUTES
from streams.pipeline import BatchOutput, BatchProcessor, quarantine_record
from streams.windows import (
    DEFAULT_DIMENSIONS,
    EARLY_MINUTES,
    LATE_HORIZON_SECONDS,
    WindowAggregator,
)
from tracking_plan.dedupe import Deduper
from tracking_plan.model import Plan
from tracking_plan.violations import Code, Violation

ADVANCE_EVERY = 500  # envelopes between two advance() calls (results do not depend on it)


@dataclass
class ReplayStats:
    envelopes: int = 0
    valid: int = 0
    quarantined: int = 0
    duplicates: int = 0  # same messageId: retries, dropped
    duplicate_keys: int = 0  # events repeating a plan business key (duplicate_key)
    repeated_payloads: int = 0  # events repeating the automatic "same payload" key
    late: int = 0  # events of closed windows: late_revised + too_late
    late_revised: int = 0  # late, counted in revision records
    too_late: int = 0  # later than the late horizon: in no record
    windows: int = 0
    alerts: int = 0
    detectors: bool = False
    late_by_source: dict[str, int] = field(default_factory=dict)


def open_events(path: str | Path) -> IO[bytes]:
    """Open EVENTS.jsonl or EVENTS.jsonl.gz for binary reading."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def _envelopes(lines: Iterable[bytes], out: BatchOutput, plan_version: str) -> Iterator[Any]:
    """Parse the JSON lines; a line that is not JSON is quarantined (malformed_json)."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            problem = Violation(
                Code.MALFORMED_JSON, f"line {number}", "a JSON envelope", str(exc)[:80]
            )
            record = quarantine_record(None, [problem], plan_version)
            record["raw"] = line.decode("utf-8", "replace").rstrip("\n")
            out.quarantine.append(record)
            out.received += 1


def make_engine(plan: Plan, annotations: list[Annotation], config: Any = None) -> Any:
    """The detection engine (None when the detectors are not installed); `config`: an
    `EngineConfig` (e.g. from a tuning file), None for the defaults."""
    try:
        from detectors.engine import DetectionEngine
    except ImportError:
        return None
    return DetectionEngine(plan=plan, annotations=annotations, config=config)


def replay(
    plan: Plan,
    lines: Iterable[bytes],
    *,
    annotations: list[Annotation] | None = None,
    dimensions: tuple[str, ...] = DEFAULT_DIMENSIONS,
    window_seconds: int = 60,
    allowed_lateness_seconds: int = 120,
    early_minutes: int = EARLY_MINUTES,
    companion_minutes: int = COMPANION_MINUTES,
    late_horizon_seconds: int = LATE_HORIZON_SECONDS,
    engine_config: Any = None,
    engine: Any = None,
    dedupe_max_age: float = 24 * 3600.0,
    dedupe_max_entries: int = 100_000,
    on_quarantine: Callable[[dict[str, Any]], None] = lambda record: None,
    on_window: Callable[[WindowRecord], None] = lambda record: None,
    on_alert: Callable[[Anomaly], None] = lambda anomaly: None,
    on_progress: Callable[[int], None] = lambda n: None,
) -> ReplayStats:
    """Run the envelopes of `lines` through the pipeline; callbacks receive the outputs.
    `engine`: a detection engine to run (one the caller watches, e.g. through its observers),
    instead of a new one made with `engine_config`."""
    processor = BatchProcessor(plan, Deduper(dedupe_max_age, dedupe_max_entries), dimensions)
    aggregator = WindowAggregator(
        window_seconds=window_seconds,
        allowed_lateness_seconds=allowed_lateness_seconds,
        early_minutes=early_minutes,
        companion_minutes=companion_minutes,
        late_horizon_seconds=late_horizon_seconds,
        dimensions=dimensions,
        funnels=plan.funnels,
        plan=plan,
    )
    if engine is None:
        engine = make_engine(plan, annotations or [], engine_config)
    stats = ReplayStats(detectors=engine is not None)
    out = BatchOutput()
    # revision records go to the detectors one call after their own, never with them: as the
    # detect agent's merger passes them (`streams.merge`)
    held: list[WindowRecord] = []

    def drain(records: list[WindowRecord], final: bool = False) -> None:
        for record in out.quarantine:
            on_quarantine(record)
        stats.quarantined += len(out.quarantine)
        stats.valid += len(out.valid)
        stats.duplicates += sum(out.duplicates.values())
        stats.duplicate_keys += sum(out.duplicate_keys.values())
        stats.repeated_payloads += sum(out.repeated_payloads.values())
        stats.envelopes += out.received
        aggregator.add_tallies(out.tallies, processor.paths)
        out.__init__()  # type: ignore[misc]
        records += aggregator.advance()
        for record in records:
            on_window(record)
        stats.windows += len(records)
        # like the detect agent: windows closed without records count as empty (`until`),
        # except after the end of the file, where nothing is known
        closed = aggregator.watermark - aggregator.lateness
        until = None if final or closed == -math.inf else closed // window_seconds * window_seconds
        if engine is None:
            return
        ready = held + [r for r in records if not r.revision]
        held[:] = [r for r in records if r.revision]
        calls = [(ready, until)] if ready or until is not None else []
        if final and held:
            calls.append((held[:], None))
        for batch, up_to in calls:
            for anomaly in engine.process(batch, until=up_to):
                on_alert(anomaly)
                stats.alerts += 1

    pending = 0
    for index, item in enumerate(_envelopes(lines, out, plan.version)):
        processor.process_envelope(item, out, index)
        pending += 1
        if pending >= ADVANCE_EVERY:
            drain([])
            on_progress(pending)
            pending = 0
    drain([])
    drain(aggregator.flush_all(), final=True)
    on_progress(pending)
    stats.late = sum(aggregator.late_events.values())
    stats.late_by_source = dict(aggregator.late_events)
    stats.late_revised = sum(aggregator.revised_events.values())
    stats.too_late = sum(aggregator.too_late_events.values())
    return stats
