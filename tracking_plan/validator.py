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
- properties (traits for identify calls):
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

Speed: a compiled fast path (`tracking_plan.fastpath`, a C extension built at install) decides
whether a call is valid and builds its normalised event; a call it does not accept takes the
full path: each planned event is compiled to one specialised Python function
(`validator_codegen`), `validate_full` reads the envelope and dispatches on the event key. Both
give the same results (tests/test_validator_fastpath.py); without the extension only the full
path runs.

Business keys (plan `unique`) are checked across events, so not here: `validate` judges one call
alone. `Validator.keys` (`tracking_plan.business_keys`) tells the validate stage which key values
a call carries; the stage looks them up in its `KeyStore`s and adds `duplicate_key` violations
(`streams.pipeline.BatchProcessor`).

Limits: property values are walked only as deep as the plan describes them; PII search walks any
depth without recursion. Keys longer than 200 characters are never taken for PII names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from tracking_plan.builtins import with_builtins
from tracking_plan.business_keys import BusinessKeys
from tracking_plan.fastpath import build_fast_checker
from tracking_plan.model import CallType, Plan, event_key
from tracking_plan.normalise import MAX_FUTURE_SECONDS, now
from tracking_plan.validator_codegen import EventCompiler, EventFn
from tracking_plan.validator_support import PiiDetector, describe, violation
from tracking_plan.violations import Code, Violation

Outcome = Literal["valid", "flagged", "quarantined"]


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


class Validator:
    """A plan compiled for fast checking. Build with `compile_plan`. Safe to share between
    threads (the only shared mutable state are caches of harmless keys, of dates and modes).

    Each planned event is compiled to one specialised function (`validator_codegen`) that does
    all the work after the envelope; `validate` only reads the envelope and dispatches."""

    __slots__ = (
        "_context_traits",
        "_events",
        "_fast",
        "_pii",
        "_sources",
        "_unplanned",
        "keys",
        "plan",
        "plan_version",
        "validate",
    )

    def __init__(self, plan: Plan, fast: bool = True) -> None:
        """`fast=False`: the full path alone (no compiled fast path, even when built)."""
        self.plan = plan
        self.plan_version = plan.version
        self._pii = PiiDetector(plan.pii)
        self.keys = BusinessKeys(plan, self._pii)  # what the validate stage looks up
        compiler = EventCompiler(plan, self._pii, Result)
        self._events: dict[str, EventFn] = {}
        self._sources: dict[str, str] = {}
        self._context_traits: EventFn | None = None  # identify, traits sent in context.traits
        for key, spec in plan.events.items():
            spec = with_builtins(spec, plan)
            self._events[key], self._sources[key] = compiler.compile(spec, _CONTAINERS[spec.call])
            if spec.call is CallType.IDENTIFY:
                self._context_traits = compiler.compile(spec, "context.traits")[0]
        self._unplanned = {
            container: compiler.compile(None, container)[0]
            for container in ("properties", "traits", "context.traits", "")
        }
        # `validate`: the compiled fast path (it hands what it does not accept to the full
        # path), else the full path alone; an attribute, not a method: one call less per event
        self._fast = (
            build_fast_checker(plan, self._pii, Result, self.validate_full) if fast else None
        )
        self.validate: Callable[..., Result] = (
            self.validate_full if self._fast is None else self._fast.check
        )
        """`validate(body, source=None, received_at=None) -> Result`: check, normalise and
        judge one Segment call (see the module docstring). Never raises: a bug quarantines
        the event with the reason instead of losing it. A call the compiled fast path finds
        valid gets its `Result` from there; every other call takes the full path
        (`validate_full`), which reports each violation."""

    @property
    def compiled(self) -> bool:
        """Does this validator use the compiled fast path (`tracking_plan.fastpath`)?"""
        return self._fast is not None

    def validate_full(
        self, body: object, source: str | None = None, received_at: float | None = None
    ) -> Result:
        """`validate` on the full Python path alone (the reference the fast path agrees with;
        what `validate` is when the compiled fast path is not built)."""
        try:
            if type(body) is not dict:
                return _envelope_result(
                    _bad_envelope("$", _BODY_EXPECTED, describe(body)), "", None
                )
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
                traits = get("traits")
                if traits is None or traits == {}:  # absent, null or {}: context.traits?
                    context = get("context")
                    if (
                        type(context) is dict
                        and type(inner := context.get("traits")) is dict
                        and inner
                    ):
                        return self._in_context(body, get, name, key, source, received_at)
            elif call == "group" or call == "alias":
                name = None
                key = call
            elif call == "page" or call == "screen":
                name = get("name")
                if name is None or name == "":
                    name = None
                    key = call
                elif type(name) is str:
                    key = f"{call}:{name}"
                else:
                    expected = f"the {call} name (a string)"
                    problem = violation(Code.WRONG_TYPE.value, "$.name", expected, describe(name))
                    return _envelope_result(problem, event_key(call, None), None)
            else:
                got = "absent" if call is None else describe(call)
                return _envelope_result(_bad_envelope("$.type", _TYPE_EXPECTED, got), "", None)

            received_at = _plausible_epoch(received_at)
            latest = (now() if received_at is None else received_at) + MAX_FUTURE_SECONDS
            check = self._events.get(key)
            if check is None:
                check = self._unplanned[_UNPLANNED_CONTAINERS[call]]
            return check(body, get, call, name, key, source, received_at, latest)  # type: ignore[no-any-return]
        except Exception as exc:  # a bug must not lose the event: quarantine it with the reason
            return _validator_error(exc)

    def _in_context(
        self, body: dict, get: Any, name: None, key: str, source: str | None, received_at: Any
    ) -> Result:
        """An identify call whose traits are in `context.traits` (rudder-sdk-python): checked
        against the plan's traits there, paths `$.context.traits.<trait>`."""
        try:
            received_at = _plausible_epoch(received_at)
            latest = (now() if received_at is None else received_at) + MAX_FUTURE_SECONDS
            check = self._context_traits or self._unplanned["context.traits"]
            return check(body, get, "identify", name, key, source, received_at, latest)  # type: ignore[no-any-return]
        except Exception as exc:
            return _validator_error(exc)

    def generated_source(self, key: str) -> str:
        """The Python source generated for one event (for debugging and curiosity)."""
        return self._sources[key]


_BODY_EXPECTED = "a JSON object (one Segment call)"
_TYPE_EXPECTED = "track, page, screen, identify, group or alias"
# where each call type keeps what the plan checks ("": nothing, an alias call has no properties)
_CONTAINERS = {
    CallType.TRACK: "properties",
    CallType.PAGE: "properties",
    CallType.SCREEN: "properties",
    CallType.IDENTIFY: "traits",
    CallType.GROUP: "traits",
    CallType.ALIAS: "",
}
_UNPLANNED_CONTAINERS = {call.value: container for call, container in _CONTAINERS.items()}


def _plausible_epoch(received_at: Any) -> float | None:
    """`received_at` as a float when it is a plausible epoch (seconds), else None."""
    kind = type(received_at)
    if kind is float and -1e13 < received_at < 1e13:
        return received_at  # type: ignore[no-any-return]
    if kind is int and -1e13 < received_at < 1e13:
        return float(received_at)
    return None


def _validator_error(exc: Exception) -> Result:
    got = f"validator error: {type(exc).__name__}"
    return _envelope_result(
        violation(Code.BAD_ENVELOPE.value, "$", "a checkable call", got), "", None
    )


_BLOCK = "block"


def _bad_envelope(path: str, expected: str, got: str) -> Violation:
    return violation(Code.BAD_ENVELOPE.value, path, expected, got)


def _envelope_result(problem: Violation, key: str, name: str | None) -> Result:
    return Result("quarantined", None, [problem], key, name, False, None, _BLOCK)


def compile_plan(plan: Plan, fast: bool = True) -> Validator:
    """Compile `plan` into a `Validator` (generates and compiles one function per event, and
    the compiled fast path when it is built; `fast=False`: without it)."""
    return Validator(plan, fast)


__all__ = ["Result", "Validator", "compile_plan"]
