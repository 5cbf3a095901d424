"""The compiled validator: checks one Segment call against the plan, normalises it and decides
whether it is forwarded (`valid`, `flagged`) or quarantined.

    validator = compile_plan(plan)
    result = validator.validate(body, source="web", received_at=time.time())

`validate` accepts any value and never raises. It reports every violation it finds, not only the
first. What it checks, in the order violations are listed:

- the envelope: a JSON object whose `type` is track/page/screen/identify (a call without `type`
  but with `event` is a track call), with a string `event` for track calls and a string or no
  `name` for page/screen calls -> `bad_envelope`, `missing_required`, `wrong_type` (these
  always quarantine: there is nothing to check or forward);
- the event: `unplanned_event` (no such event in the plan), `deprecated_event`, `wrong_source`
  (the plan restricts the event to other sources; not checked when `source` is None);
- identity (`plan.identity`): `missing_identity`; a non-string `userId`/`anonymousId` is
  `wrong_type` and does not count as an identity;
- context: `wrong_type` when not an object, `missing_context` for each required dotted path
  that is absent or null;
- timestamps `timestamp`, `originalTimestamp`, `sentAt`: `bad_timestamp` when they do not parse,
  or when the event time (after clock-skew correction, see `tracking_plan.normalise`) is before
  2000 or more than one day after reception (`received_at`, epoch seconds; now when None);
- properties (traits for identify calls), by the code generated in `validator_codegen`:
  `missing_required`, `wrong_type`, `not_nullable`, `not_in_enum`, `pattern_mismatch`
  (`re.search`), `out_of_range`, `too_long`, `bad_currency`, `bad_timestamp`,
  `unplanned_property`, nested objects and array items included, with paths like
  `$.properties.products[2].price`;
- `pii_detected` for a key named like one of `plan.pii` at any depth of properties, traits or
  context, also inside values of the wrong type (`got` is always `<redacted>`). Names match
  ignoring case and everything but letters and digits: `email`, `E-Mail`, `e_mail`, `eMail`.

Then the mode (`Plan.mode_for`) decides: `block` quarantines an event with any violation; `flag`
forwards it with its violations; `omit` forwards it without its unplanned properties when those
are its only violations and quarantines it otherwise. A forwarded event never carries PII keys:
they are removed. Forwarded events are normalised (timestamps in UTC with `Z`, `receivedAt` added
when known, currency codes upper-cased, plan defaults filled) and carry `planVersion`, plus
`violations` when flagged. `Result.event_time` is the event time in epoch seconds (what the
aggregator windows on) and `Result.mode` the mode that decided.

Limits: property values are walked only as deep as the plan describes them; PII search walks any
depth without recursion. Keys longer than 200 characters are never taken for PII names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from tracking_plan.model import CallType, EventSpec, Identity, Mode, Plan, Status, event_key
from tracking_plan.normalise import (
    MAX_FUTURE_SECONDS,
    MIN_EPOCH,
    format_timestamp,
    now,
    parse_canonical,
    parse_timestamp,
)
from tracking_plan.validator_codegen import CheckFn, compile_properties, writes_properties
from tracking_plan.validator_support import (
    PiiDetector,
    describe,
    key_path,
    strip_locations,
    violation,
)
from tracking_plan.violations import Code, Violation

Outcome = Literal["valid", "flagged", "quarantined"]
_CALL_TYPES = frozenset(c.value for c in CallType)
_TS_EXPECTED = "ISO-8601 date-time or epoch seconds/milliseconds"
_TS_RANGE = "an event time after 2000 and at most 1 day after reception"
_YEAR_10000 = 253_402_300_800.0


@dataclass(slots=True)
class Result:
    """What `Validator.validate` decided about one call."""

    outcome: Outcome
    event: dict[str, Any] | None  # the normalised event to forward (None when quarantined)
    violations: list[Violation]  # every violation found, also when forwarded
    event_key: str  # key in Plan.events (see model.event_key); "" when the envelope is broken
    event_name: str | None  # the track event / page / screen name as sent
    planned: bool
    event_time: float | None = None  # epoch seconds after skew correction (else receivedAt)
    mode: str = field(default="block")  # the mode that decided the outcome


@dataclass(slots=True)
class _CompiledEvent:
    spec: EventSpec
    check: CheckFn
    container: str  # "properties" or "traits"
    sources: frozenset[str]  # empty: every source
    deprecated: bool
    modes: dict[str | None, str]  # source -> mode value, filled on first use
    source_code: str
    writes: bool  # does `check` write normalised values into the properties dict?


_IDENTITY_RULES = {Identity.ANY: 0, Identity.USER_ID: 1, Identity.ANONYMOUS_ID: 2}
_FLAG = Mode.FLAG.value
_OMIT = Mode.OMIT.value
_BLOCK = Mode.BLOCK.value
_UNPLANNED_PROPERTY = Code.UNPLANNED_PROPERTY.value
_fast_epoch = parse_canonical


class Validator:
    """A plan compiled for fast checking. Build with `compile_plan`. Safe to share between
    threads (the only shared mutable state are caches of harmless keys and of dates)."""

    __slots__ = (
        "_check_context",
        "_events",
        "_identity",
        "_last_received",
        "_pii",
        "_scan",
        "_unplanned_expected",
        "_unplanned_modes",
        "plan",
        "plan_version",
    )

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.plan_version = plan.version
        self._pii = PiiDetector(plan.pii)
        self._events: dict[str, _CompiledEvent] = {}
        for key, spec in plan.events.items():
            container = "traits" if spec.call is CallType.IDENTIFY else "properties"
            check, source = compile_properties(spec, container, self._pii)
            self._events[key] = _CompiledEvent(
                spec=spec,
                check=check,
                container=container,
                sources=frozenset(spec.sources),
                deprecated=spec.status is Status.DEPRECATED,
                modes={},
                source_code=source,
                writes=writes_properties(spec),
            )
        self._identity = _IDENTITY_RULES[Identity(plan.identity)]
        self._check_context = _compile_context_rule(plan.required_context)
        self._scan = self._pii.scan
        self._unplanned_expected = _clip(f"an event of plan {plan.name!r}")
        self._unplanned_modes: dict[str | None, str] = {}
        self._last_received: tuple[float, str] = (math.nan, "")

    # -- public --------------------------------------------------------------------------------

    def validate(
        self, body: object, source: str | None = None, received_at: float | None = None
    ) -> Result:
        """Check, normalise and judge one Segment call (see the module docstring)."""
        try:
            return self._validate(body, source, received_at)
        except Exception as exc:  # a bug must not lose the event: quarantine it with the reason
            got = f"validator error: {type(exc).__name__}"
            return _envelope_result(
                violation(Code.BAD_ENVELOPE.value, "$", "a checkable call", got), "", None
            )

    def generated_source(self, key: str) -> str:
        """The Python source generated for one event (for debugging and curiosity)."""
        return self._events[key].source_code

    # -- internals (one long function: this is the hot path) -----------------------------------

    def _validate(self, body: object, source: str | None, received_at: float | None) -> Result:
        if type(body) is not dict:
            return _envelope_result(_bad_envelope("$", _BODY_EXPECTED, describe(body)), "", None)
        get = body.get
        call = get("type")
        if call == "track" or (call is None and "event" in body):
            call = "track"
            name = get("event")
            if type(name) is not str or not name:
                code = Code.MISSING_REQUIRED if name is None or name == "" else Code.WRONG_TYPE
                got = "absent" if name is None else describe(name)
                problem = violation(code.value, "$.event", "the event name (a string)", got)
                return _envelope_result(problem, "", None)
            key = name
        elif call == "identify":
            name = None
            key = "identify"
        elif call == "page" or call == "screen":
            name = get("name")
            if name is None or name == "":
                name = None
                key = call
            elif type(name) is str:
                key = f"{call}:{name}"
            else:
                problem = violation(
                    Code.WRONG_TYPE.value, "$.name", f"the {call} name (a string)", describe(name)
                )
                return _envelope_result(problem, event_key(call, None), None)
        else:
            got = "absent" if call is None else describe(call)
            return _envelope_result(_bad_envelope("$.type", _TYPE_EXPECTED, got), "", None)

        kind = type(received_at)
        if kind is not float or not -1e13 < received_at < 1e13:  # type: ignore[operator]
            received_at = float(received_at) if kind is int and -1e13 < received_at < 1e13 else None  # type: ignore[operator,arg-type]
        latest = (now() if received_at is None else received_at) + MAX_FUTURE_SECONDS

        viol: list[Violation] = []
        strip: list[tuple[str, tuple[Any, ...]]] = []
        compiled = self._events.get(key)

        # The event itself.
        if compiled is None:
            got = _clip(f"{call} {key!r}")
            viol.append(violation(Code.UNPLANNED_EVENT.value, "$", self._unplanned_expected, got))
            container = "traits" if call == "identify" else "properties"
        else:
            container = compiled.container
            if compiled.deprecated:
                viol.append(_DEPRECATED)
            if compiled.sources and source is not None and source not in compiled.sources:
                expected = _clip("sent by " + ", ".join(sorted(compiled.sources)))
                got = _clip(f"source {source!r}")
                viol.append(violation(Code.WRONG_SOURCE.value, "$", expected, got))

        # Identity.
        user = get("userId")
        if user is not None and type(user) is not str:
            viol.append(violation(Code.WRONG_TYPE.value, "$.userId", "string", describe(user)))
            user = None
        anonymous = get("anonymousId")
        if anonymous is not None and type(anonymous) is not str:
            got = describe(anonymous)
            viol.append(violation(Code.WRONG_TYPE.value, "$.anonymousId", "string", got))
            anonymous = None
        rule = self._identity
        if rule == 0:
            if not user and not anonymous:
                viol.append(_MISSING_ANY_ID)
        elif rule == 1:
            if not user:
                viol.append(_MISSING_USER_ID)
        elif not anonymous:
            viol.append(_MISSING_ANON_ID)

        # Context.
        context = get("context")
        if context is not None and type(context) is not dict:
            viol.append(violation(Code.WRONG_TYPE.value, "$.context", "object", describe(context)))
            context = None
        self._check_context(context, viol)
        if context:
            self._scan(context, "$.context", _CONTEXT_LOC, viol, strip)

        # Timestamps: parse, correct the clock skew, check the event time is plausible.
        moment, moment_text, client_text, sent_text = received_at, None, None, None
        raw_original = get("originalTimestamp")
        raw_stamp = get("timestamp")
        raw_sent = get("sentAt")
        if raw_original is not None or raw_stamp is not None or raw_sent is not None:
            # The fast path (canonical text, already normalised) inline; the rest in _time_field.
            sent = sent_text = original = original_text = stamp = stamp_text = None
            if raw_sent is not None:
                sent = _fast_epoch(raw_sent)
                if sent is None:
                    sent, sent_text = _time_field(raw_sent, "$.sentAt", viol)
                else:
                    sent_text = raw_sent
            if raw_original is not None:
                original = _fast_epoch(raw_original)
                if original is None:
                    original, original_text = _time_field(raw_original, "$.originalTimestamp", viol)
                else:
                    original_text = raw_original
            if raw_stamp is not None:
                stamp = _fast_epoch(raw_stamp)
                if stamp is None:
                    stamp, stamp_text = _time_field(raw_stamp, "$.timestamp", viol)
                else:
                    stamp_text = raw_stamp
            if original is not None:
                client, client_text, client_path, client_raw = (
                    original,
                    original_text,
                    "$.originalTimestamp",
                    raw_original,
                )
            else:
                client, client_text, client_path, client_raw = (
                    stamp,
                    stamp_text,
                    "$.timestamp",
                    raw_stamp,
                )
            if client is not None:
                if sent is not None and received_at is not None:
                    moment = received_at - (sent - client)
                else:
                    moment, moment_text = client, client_text
                if not MIN_EPOCH <= moment <= latest:
                    got = describe(client_raw)
                    viol.append(violation(Code.BAD_TIMESTAMP.value, client_path, _TS_RANGE, got))
                    moment, moment_text = received_at, None

        # Properties / traits.
        raw = get(container)
        props: dict[str, Any] | None
        if raw is None:
            props = {}
        elif type(raw) is dict:
            # Copied only when the check writes into it (defaults, currency, timestamps); a
            # forwarded event shares the rest with the input, which is never modified.
            props = dict(raw) if compiled is None or compiled.writes else raw
        else:
            viol.append(violation(Code.WRONG_TYPE.value, f"$.{container}", "object", describe(raw)))
            props = None
        if props is not None:
            if compiled is not None:
                compiled.check(props, viol, strip, latest)
            elif props:
                self._pii.scan(props, f"$.{container}", (container,), viol, strip)

        # Judge.
        if compiled is None:
            mode = self._unplanned_modes.get(source)
            if mode is None:
                mode = _remember(self._unplanned_modes, source, self.plan.mode_for(None, source))
        else:
            mode = compiled.modes.get(source)
            if mode is None:
                mode = _remember(compiled.modes, source, self.plan.mode_for(compiled.spec, source))
        if not viol:
            outcome: Outcome = "valid"
        elif mode == _FLAG or (mode == _OMIT and _only_unplanned(viol)):
            outcome = "flagged"
        else:
            return Result("quarantined", None, viol, key, name, compiled is not None, moment, mode)

        # The forwarded event.
        event = dict(body)
        event["type"] = call
        if props is not None and (raw is not None or props):
            event[container] = props
        if moment is not None and 0.0 <= moment < _YEAR_10000:
            event["timestamp"] = moment_text or format_timestamp(moment)
        if client_text is not None:
            event["originalTimestamp"] = client_text
        if sent_text is not None:
            event["sentAt"] = sent_text
        if received_at is not None and 0.0 <= received_at < _YEAR_10000:
            last = self._last_received  # the calls of one batch share their reception time
            if last[0] != received_at:
                last = self._last_received = (received_at, format_timestamp(received_at))
            event["receivedAt"] = last[1]
        event["planVersion"] = self.plan_version
        if viol:
            if strip:
                drop_unplanned = mode == _OMIT
                strip_locations(event, [loc for k, loc in strip if k == "pii" or drop_unplanned])
            event["violations"] = [  # Violation.to_dict, inlined
                {"code": v.code, "path": v.path, "expected": v.expected, "got": v.got} for v in viol
            ]
        return Result(outcome, event, viol, key, name, compiled is not None, moment, mode)


_BODY_EXPECTED = "a JSON object (one Segment call)"
_CONTEXT_LOC = ("context",)


def _compile_context_rule(paths: tuple[str, ...]) -> Callable[[Any, list[Violation]], None]:
    """A specialised function reporting `missing_context` for each required dotted path that is
    absent or null in `context` (generated like the property checks: no loops at run time)."""
    namespace: dict[str, Any] = {}
    lines = ["def check_context(context, viol):"]
    for number, path in enumerate(paths):
        keys = path.split(".")
        namespace[f"missing{number}"] = violation(
            Code.MISSING_CONTEXT.value,
            _dotted_path("$.context", tuple(keys)),
            "present (plan context rule)",
            "absent",
        )
        lines.append("    node = context")
        for key in keys:
            lines.append(f"    node = node.get({key!r}) if type(node) is dict else None")
        lines.append(f"    if node is None: viol.append(missing{number})")
    lines.append("    return None")
    exec(compile("\n".join(lines) + "\n", "<plan context rule>", "exec"), namespace)
    return namespace["check_context"]


_TYPE_EXPECTED = "track, page, screen or identify"


def _bad_envelope(path: str, expected: str, got: str) -> Violation:
    return violation(Code.BAD_ENVELOPE.value, path, expected, got)


_NO_TIME: tuple[None, None] = (None, None)


def _time_field(raw: object, path: str, viol: list[Violation]) -> tuple[float | None, str | None]:
    """(epoch, normalised text) of one timestamp field that is not in the canonical form;
    (None, None) when it is bad (and then reported). The text is None for dates before 1970."""
    epoch = parse_timestamp(raw)
    if epoch is None:
        viol.append(violation(Code.BAD_TIMESTAMP.value, path, _TS_EXPECTED, describe(raw)))
        return _NO_TIME
    return (epoch, format_timestamp(epoch) if 0.0 <= epoch < _YEAR_10000 else None)


def _remember(cache: dict[str | None, str], source: str | None, mode: Mode) -> str:
    """Cache the mode of a source (bounded: sources are few, but they come from the input)."""
    if len(cache) < 256:
        cache[source] = mode.value
    return mode.value


def _only_unplanned(viol: list[Violation]) -> bool:
    return all(v.code == _UNPLANNED_PROPERTY for v in viol)


def _dotted_path(prefix: str, keys: tuple[str, ...]) -> str:
    path = prefix
    for key in keys:
        path = key_path(path, key)
    return path


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _envelope_result(problem: Violation, key: str, name: str | None) -> Result:
    return Result("quarantined", None, [problem], key, name, False, None, _BLOCK)


_MISSING_ANY_ID = violation(Code.MISSING_IDENTITY.value, "$", "userId or anonymousId", "absent")
_MISSING_USER_ID = violation(Code.MISSING_IDENTITY.value, "$.userId", "userId", "absent")
_MISSING_ANON_ID = violation(Code.MISSING_IDENTITY.value, "$.anonymousId", "anonymousId", "absent")
_DEPRECATED = violation(Code.DEPRECATED_EVENT.value, "$", "an active event", "deprecated")


def compile_plan(plan: Plan) -> Validator:
    """Compile `plan` into a `Validator` (generates and compiles one function per event)."""
    return Validator(plan)


__all__ = ["Result", "Validator", "compile_plan"]
