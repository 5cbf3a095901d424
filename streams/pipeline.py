"""The processing shared by the Faust agents and the offline replay (pure: no Kafka, no Faust).

`BatchProcessor.process(raw_bytes)` turns one events.raw message (a JSON array of envelopes)
into what the validate stage writes: forwarded events, quarantine records and, for the aggregate
stage, one compact `Tally` per event, which `WindowAggregator.add_tallies` counts.

Nothing is lost: a message that is not JSON becomes one quarantine record (`malformed_json`)
holding the raw text; a JSON array with some malformed items quarantines those items alone
(`bad_envelope`), the others are processed. Duplicates (same messageId, see
`streams.envelope.message_id`) are dropped and counted: they are retries of an event already kept.
"""

from __future__ import annotations

import base64
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.envelope import BadBatch, check_envelope, message_id, received_at_epoch
from streams.windows import Tally, event_tally, tally_paths
from tracking_plan.dedupe import Deduper
from tracking_plan.model import Plan
from tracking_plan.pii import PiiMasker
from tracking_plan.validator import Result, Validator, compile_plan
from tracking_plan.violations import Code, Violation

DEFAULT_DEDUPE_MAX_AGE = 24 * 3600.0
DEFAULT_DEDUPE_MAX_ENTRIES = 100_000


@dataclass(slots=True)
class BatchOutput:
    """What one events.raw message produced."""

    valid: list[dict[str, Any]] = field(default_factory=list)  # {"source", "event"}
    quarantine: list[dict[str, Any]] = field(default_factory=list)  # Q records
    tallies: list[Tally] = field(default_factory=list)  # for the aggregator
    duplicates: Counter[str] = field(default_factory=Counter)  # by source
    # quarantine records of envelopes or messages that could not even be read, by code: they
    # have no tally (no source, no event) and are the only records metrics count on their own
    unread: Counter[str] = field(default_factory=Counter)
    received: int = 0
    max_received_at: float | None = None  # newest reception time in the batch


def quarantine_record(envelope: Any, violations: list[Violation], plan_version: str) -> dict:
    """A line of events.quarantine / Q.jsonl: the original envelope and every violation."""
    return {
        "envelope": envelope,
        "violations": [v.to_dict() for v in violations],
        "plan_version": plan_version,
    }


def _raw_record(raw: bytes, problem: Violation, plan_version: str) -> dict:
    """Quarantine record for a message that is not a JSON array: keep its bytes."""
    record = quarantine_record(None, [problem], plan_version)
    try:
        record["raw"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        record["raw_base64"] = base64.b64encode(raw).decode("ascii")
    return record


TOO_DEEP = Violation(
    Code.BAD_ENVELOPE,
    "$",
    "JSON nested at most 254 levels (kept as text in envelope_json)",
    "deeper nesting",
)


def _as_text_record(record: dict[str, Any], key: str, plan_version: str) -> dict[str, Any]:
    """A quarantine record for `record[key]`, which orjson cannot write (nested deeper than its
    254-level limit, though it reads up to 1024): kept as JSON text, so nothing is lost."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 5000))
    try:
        text = json.dumps(record.get(key), ensure_ascii=False)
    finally:
        sys.setrecursionlimit(limit)
    violations = (
        [*record.get("violations", ()), TOO_DEEP.to_dict()]
        if key == "envelope"
        else [TOO_DEEP.to_dict()]
    )
    return {
        "envelope": None,
        "envelope_json": text,
        "violations": violations,
        "plan_version": plan_version,
    }


def writable_quarantine_record(record: dict[str, Any]) -> dict[str, Any]:
    """`record`, or its JSON-text form when orjson cannot write it (see `_as_text_record`)."""
    try:
        orjson.dumps(record)
    except TypeError:
        return _as_text_record(record, "envelope", str(record.get("plan_version", "")))
    return record


def encode_outputs(
    out: BatchOutput, origin: list[int], plan_version: str
) -> tuple[bytes | None, bytes | None]:
    """The events.valid and events.quarantine values of one raw message (None: nothing to send).

    Records orjson cannot write go to quarantine as JSON text instead of stopping the worker.
    """
    too_deep: list[dict[str, Any]] = []
    valid = out.valid
    events = None  # the JSON of `valid`
    if valid:
        try:
            events = orjson.dumps(valid)
        except TypeError:  # orjson.JSONEncodeError: nested too deep
            kept = []
            for item in valid:
                try:
                    orjson.dumps([item])  # at the depth it has in the list
                    kept.append(item)
                except TypeError:
                    too_deep.append(_as_text_record({"event": item}, "event", plan_version))
            valid = kept
            events = orjson.dumps(valid) if valid else None
    quarantine = out.quarantine
    try:
        q_value = orjson.dumps(quarantine) if quarantine or too_deep else None
    except TypeError:
        q_value = None
        fixed = []
        for record in quarantine:
            try:
                orjson.dumps([record])  # at the depth it has in the list
                fixed.append(record)
            except TypeError:
                fixed.append(_as_text_record(record, "envelope", plan_version))
        quarantine = fixed
    if too_deep:
        quarantine = [*quarantine, *too_deep]
        q_value = None
    if q_value is None and quarantine:
        q_value = orjson.dumps(quarantine)
    v_value = None if events is None else _valid_message(origin, plan_version, events)
    return v_value, q_value


def _valid_message(origin: list[int], plan_version: str, events: bytes) -> bytes:
    """``orjson.dumps({"origin": origin, "plan_version": plan_version, "events": [...]})``
    around `events`, the events' JSON already written (not twice)."""
    return b"".join(
        (
            b'{"origin":',
            orjson.dumps(origin),
            b',"plan_version":',
            orjson.dumps(plan_version),
            b',"events":',
            events,
            b"}",
        )
    )


_isfinite = math.isfinite


def tally(
    source: str,
    result: Result,
    received_at: float,
    body: dict[str, Any],
    paths: tuple[tuple[str, ...], ...],
) -> Tally:
    """What the aggregator needs to count one validated event: its outcome, its string ids and
    the labels at `paths` (`streams.windows.tally_paths`) of the forwarded event (else of
    `body`, when quarantined)."""
    ts = result.event_time
    if ts is None or not _isfinite(ts):
        ts = received_at
    violations = result.violations
    if not violations:
        codes: tuple[str, ...] = ()
    elif len(violations) == 1:
        codes = (violations[0].code,)
    else:
        codes = tuple(sorted({v.code for v in violations}))
    quarantined = result.outcome == "quarantined"
    event = body if quarantined else result.event
    return event_tally(
        source, result.event_key or "(broken)", result.planned, ts, codes, quarantined, event, paths
    )


class BatchProcessor:
    """Dedupe, validate and route the envelopes of events.raw messages."""

    def __init__(
        self,
        plan: Plan,
        deduper: Deduper | None = None,
        dimensions: tuple[str, ...] = (),
        validator: Validator | None = None,
    ) -> None:
        """`dimensions`: the aggregator's; the tallies carry the labels of those read from the
        event (``channel``, ``context.locale``; `tally_paths`). `validator`: `plan` already
        compiled (else it is compiled here)."""
        self.plan = plan
        self.paths = tally_paths(dimensions)  # what the tallies carry labels of
        self.plan_version = plan.version
        self.validator = validator or compile_plan(plan)
        self.deduper = deduper or Deduper(DEFAULT_DEDUPE_MAX_AGE, DEFAULT_DEDUPE_MAX_ENTRIES)
        self._masker = PiiMasker(self.validator.plan)  # redacts quarantined calls' PII
        self._masker_of = self.validator
        self._last_stamp: str | None = None  # the last received_at parsed, and its value
        self._last_received_at = 0.0

    def process(self, raw: bytes) -> BatchOutput:
        """Process one events.raw message value."""
        out = BatchOutput()
        try:
            items = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            problem = Violation(
                Code.MALFORMED_JSON, "$", "a JSON array of envelopes", str(exc)[:80]
            )
            out.quarantine.append(_raw_record(raw, problem, self.plan_version))
            out.unread[problem.code] += 1
            out.received = 1
            return out
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            problem = Violation(
                Code.BAD_ENVELOPE, "$", "a JSON array of envelopes", type(items).__name__
            )
            out.quarantine.append(_raw_record(raw, problem, self.plan_version))
            out.unread[problem.code] += 1
            out.received = 1
            return out
        for index, item in enumerate(items):
            self.process_envelope(item, out, index)
        return out

    def process_envelope(self, item: Any, out: BatchOutput, index: int = 0) -> None:
        """Process one envelope into `out` (the unit shared by the agents and the replay)."""
        out.received += 1
        try:
            if (  # the shape `check_envelope` checks, inline for the common case
                type(item) is dict
                and type(source := item.get("source")) is str
                and source
                and type(stamp := item.get("received_at")) is str
                and type(body := item.get("body")) is dict
            ):
                envelope = item
            else:
                envelope = check_envelope(item, index)
                source, stamp, body = envelope["source"], envelope["received_at"], envelope["body"]
            if stamp == self._last_stamp:  # envelopes of one collector batch share it
                received_at = self._last_received_at
            else:
                received_at = received_at_epoch(stamp)
                self._last_stamp, self._last_received_at = stamp, received_at
        except (BadBatch, ValueError, OverflowError) as exc:
            problem = Violation(Code.BAD_ENVELOPE, f"$[{index}]", "an envelope", str(exc)[:80])
            out.quarantine.append(quarantine_record(item, [problem], self.plan_version))
            out.unread[problem.code] += 1
            return
        if out.max_received_at is None or received_at > out.max_received_at:
            out.max_received_at = received_at
        mid = body.get("messageId")
        if type(mid) is not str or not mid:  # `message_id`, inline for the common case
            mid = message_id(envelope)
        if self.deduper.seen(mid, received_at):
            out.duplicates[source] += 1
            return
        result = self.validator.validate(body, source=source, received_at=received_at)
        if result.outcome == "quarantined":
            out.quarantine.append(quarantine_record(envelope, result.violations, self.plan_version))
        else:
            out.valid.append({"source": source, "event": result.event})
        out.tallies.append(tally(source, result, received_at, body, self.paths))
        if result.outcome == "quarantined":
            self._mask(body)

    def _mask(self, body: dict[str, Any]) -> None:
        """Redact the plan's personal values in a quarantined call (in place). The collector
        already did (values are "<redacted>" or keyed-hash tokens, left as they are); this
        covers calls written to events.raw by other producers."""
        if self._masker_of is not self.validator:  # the plan was hot-reloaded
            self._masker = PiiMasker(self.validator.plan)
            self._masker_of = self.validator
        if self._masker.active:
            self._masker.mask(body)
