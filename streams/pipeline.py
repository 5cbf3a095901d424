"""The processing shared by the Faust agents and the offline replay (pure: no Kafka, no Faust).

`BatchProcessor.process(raw_bytes)` turns one events.raw message (a JSON array of envelopes)
into what the validate stage writes: forwarded events, quarantine records and, for the aggregate
stage, one compact `Tally` per event, which `WindowAggregator.add_tallies` counts.

Nothing is lost: a message that is not JSON becomes one quarantine record (`malformed_json`)
holding the raw text; a JSON array with some malformed items quarantines those items alone
(`bad_envelope`), the others are processed. Duplicates (same messageId, see
`streams.envelope.message_id`) are dropped and counted: they are retries of an event already kept.

Business keys (plan `unique`, see `tracking_plan.business_keys`) are checked after that dedupe
and after validation, so a retry is never a repeat: only another messageId with a key value seen
within the key's horizon (by reception time) is. A repeated declared key adds a `duplicate_key`
violation: the key's mode `flag` (the default) forwards the event flagged, whatever the event's
own mode (an otherwise valid event becomes flagged; one already quarantined stays quarantined
with the violation added); mode `block` quarantines it. A planned event that declares no key
carries the automatic "same payload" key, whose repeats are only counted. Either repeat sets
the event's `Tally.repeated`, which the aggregator sums into `WindowRecord.repeats`.
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
from tracking_plan.business_keys import PAYLOAD_HORIZON, duplicate_violation, rule_values
from tracking_plan.dedupe import Deduper
from tracking_plan.fastpath import received_epoch_parser
from tracking_plan.keystore import KeyStore
from tracking_plan.model import Plan
from tracking_plan.pii import PiiMasker
from tracking_plan.validator import Result, Validator, compile_plan
from tracking_plan.violations import Code, Violation

DEFAULT_DEDUPE_MAX_AGE = 24 * 3600.0
DEFAULT_DEDUPE_MAX_ENTRIES = 100_000
DEFAULT_KEYS_MAX_ENTRIES = 100_000  # declared business keys remembered per partition (~10 MB)
DEFAULT_PAYLOADS_MAX_ENTRIES = 50_000  # automatic payload keys per partition (~5 MB)


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
    duplicate_keys: Counter[tuple[str, str]] = field(default_factory=Counter)  # (source, event)
    repeated_payloads: Counter[tuple[str, str]] = field(default_factory=Counter)  # likewise
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
    repeated: bool = False,
) -> Tally:
    """What the aggregator needs to count one validated event: its outcome, its string ids,
    the labels at `paths` (`streams.windows.tally_paths`) of the forwarded event (else of
    `body`, when quarantined) and whether it repeats a business key."""
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
    key = result.event_key or "(broken)"
    return event_tally(source, key, result.planned, ts, codes, quarantined, event, paths, repeated)


def add_duplicate_keys(result: Result, problems: list[Violation], block: bool) -> None:
    """Add the `duplicate_key` violations `problems` to `result`: a blocking key quarantines
    the event, a flagging one forwards it flagged (see the module docstring)."""
    result.violations.extend(problems)
    if result.outcome == "quarantined":
        return
    if block:
        result.outcome, result.event, result.mode = "quarantined", None, "block"
        return
    event = result.event
    assert event is not None  # forwarded events have one
    added = [v.to_dict() for v in problems]
    if result.outcome == "flagged":
        event["violations"] = [*event.get("violations", ()), *added]
    else:
        event["violations"] = added
        result.outcome, result.mode = "flagged", "flag"


class BatchProcessor:
    """Dedupe, validate and route the envelopes of events.raw messages."""

    def __init__(
        self,
        plan: Plan,
        deduper: Deduper | None = None,
        dimensions: tuple[str, ...] = (),
        validator: Validator | None = None,
        key_store: KeyStore | None = None,
        payload_store: KeyStore | None = None,
        *,
        business_keys: bool = True,
    ) -> None:
        """`dimensions`: the aggregator's; the tallies carry the labels of those read from the
        event (``channel``, ``context.locale``; `tally_paths`). `validator`: `plan` already
        compiled (else it is compiled here). `key_store` / `payload_store`: what declared and
        automatic business keys were seen (new ones if None); `business_keys=False` checks
        none (the benchmarks compare)."""
        self.plan = plan
        self.paths = tally_paths(dimensions)  # what the tallies carry labels of
        self.plan_version = plan.version
        self.validator = validator or compile_plan(plan)
        self.deduper = deduper or Deduper(DEFAULT_DEDUPE_MAX_AGE, DEFAULT_DEDUPE_MAX_ENTRIES)
        self._masker = PiiMasker(self.validator.plan)  # redacts quarantined calls' PII
        self._masker_of = self.validator
        self.key_store = key_store or KeyStore(DEFAULT_KEYS_MAX_ENTRIES)
        self.payload_store = payload_store or KeyStore(DEFAULT_PAYLOADS_MAX_ENTRIES)
        self.business_keys = business_keys
        self._last_stamp: str | None = None  # the last received_at parsed, and its value
        self._last_received_at = 0.0
        self._stamp_epoch = received_epoch_parser()  # compiled, canonical stamps only (or None)

    def keys_state(self) -> dict[str, Any]:
        """The business keys seen, for a snapshot (`load_keys_state` reads it back)."""
        return {"declared": self.key_store.to_state(), "payloads": self.payload_store.to_state()}

    def load_keys_state(self, state: dict[str, Any]) -> None:
        """Restore the business keys seen from `keys_state()` output (ValueError if bad)."""
        if not isinstance(state, dict):
            raise ValueError("not a business keys state (expected a dict)")
        self.key_store = KeyStore.from_state(state["declared"])
        self.payload_store = KeyStore.from_state(state["payloads"])

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
                parse = self._stamp_epoch
                received_at = None if parse is None else parse(stamp)
                if received_at is None:  # not canonical (or not compiled): in Python
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
        result = self.validator.validate(body, source, received_at)
        repeated = (
            result.planned
            and self.business_keys
            and self._repeated(result, body, source, received_at, out)
        )
        if result.outcome == "quarantined":
            out.quarantine.append(quarantine_record(envelope, result.violations, self.plan_version))
        else:
            out.valid.append({"source": source, "event": result.event})
        out.tallies.append(tally(source, result, received_at, body, self.paths, repeated))
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

    def _repeated(
        self,
        result: Result,
        body: dict[str, Any],
        source: str,
        received_at: float,
        out: BatchOutput,
    ) -> bool:
        """Look the business keys of a planned event up (and record them); True if one was
        seen within its horizon. Adds the `duplicate_key` violations of declared keys."""
        keys = self.validator.keys
        event_key = result.event_key
        rules = keys.rules.get(event_key)
        if rules is None:  # no declared key: the automatic "same payload" key
            found = keys.payload(event_key, body)
            if found is None or not self.payload_store.seen(found, received_at, PAYLOAD_HORIZON):
                return False
            out.repeated_payloads[(source, event_key)] += 1
            return True
        props = body.get(keys.container(event_key))
        problems: list[Violation] = []
        block = False
        for rule in rules:
            carried = rule_values(rule, props)
            if carried is not None and self.key_store.seen(carried[0], received_at, rule.horizon):
                problems.append(duplicate_violation(rule, carried[1]))
                block = block or rule.block
        if not problems:
            return False
        add_duplicate_keys(result, problems, block)
        out.duplicate_keys[(source, event_key)] += 1
        return True
