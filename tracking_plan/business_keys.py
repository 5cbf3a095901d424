"""The business keys of a plan, compiled: which key values an event carries (pure, stateless).

A `BusinessKeys` is built with each compiled plan (`Validator.keys`) and tells the validate
stage, for one event, the 64-bit hashes (`tracking_plan.keystore.key_hash`) it must look up in
its `KeyStore`s; the stores hold the state, this module none.

Declared keys (`EventSpec.business_keys`: a property's `unique: 24h`, or an event's
`unique: {keys: [...], within: ...}`): an event carries a key when every property of the key is
present with the planned type: a non-empty string for `string`, an integer (or a float with no
fractional part, taken as that integer) for `integer`. A value that is absent, null, empty or of
another type gives no key (its own violation, if any, comes from the validator: `wrong_type`,
`missing_required`...). The hash covers the event key, the key's property names and the values
(typed: the string "7" and the integer 7 differ), never the source: the same order sent by the
web and by the server is a repeat.

Automatic key (records contract point 1): a planned event without a declared key carries one
too, remembered for `PAYLOAD_HORIZON` (1 hour), whose repeats are only counted (no violation):
- when the plan requires an identifier of it (a top-level string or integer property whose name
  ends in "id": `order_id`, `orderId`, `transaction_id`; `automatic_id`) and the event carries
  it, the hash of (event key, userId or else anonymousId, that identifier's value): a tracker
  that fires the purchase twice repeats its order id even when the rest of the payload differs
  (a new timestamp, a reformatted amount);
- else the "same payload" key: the hash of (event key, user, the canonical JSON of its
  properties, or traits for identify, keys sorted at every depth).
An event with neither userId nor anonymousId carries none (nothing tells whose it is).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from tracking_plan.keystore import key_hash
from tracking_plan.model import (
    CallType,
    EventSpec,
    Mode,
    Plan,
    PropType,
    UniqueKey,
    format_duration,
)
from tracking_plan.validator_support import REDACTED, PiiDetector, describe, key_path
from tracking_plan.violations import Code, Violation

PAYLOAD_HORIZON = 3600.0  # seconds the automatic key is remembered
_ENVELOPE_IDS = {"userid", "anonymousid", "messageid", "groupid", "previousid"}
# order_id, orderId, transactionID, id
_ID_NAME = re.compile(r"(?:^|[_\-\s])[iI][dD]$|[a-z0-9](?:Id|ID)$|^[iI][dD]$")
_SORTED = orjson.OPT_SORT_KEYS
_GOT_MAX = 80


@dataclass(frozen=True, slots=True)
class KeyRule:
    """One declared business key of one event, ready to check."""

    names: tuple[str, ...]  # the key's properties (top level of `properties`/`traits`)
    integer: tuple[bool, ...]  # per property: planned as an integer (else a string)
    redact: tuple[bool, ...]  # per property: PII (`pii: true` or a plan `pii` name)
    horizon: float  # seconds
    block: bool  # mode block: a repeat quarantines the event (else it is flagged)
    path: str  # JSON path of the violation
    expected: str  # e.g. "a value not seen in the last 24h"
    scope: bytes  # canonical prefix of the hashed bytes: event key and property names


class BusinessKeys:
    """The business keys of one plan; `rules[event_key]` the declared keys of an event
    (absent: none, so the automatic payload key applies)."""

    __slots__ = ("_containers", "_ids", "rules")

    def __init__(self, plan: Plan, pii: PiiDetector | None = None) -> None:
        pii = pii if pii is not None else PiiDetector(plan.pii)
        self.rules: dict[str, tuple[KeyRule, ...]] = {}
        self._containers: dict[str, str] = {}
        self._ids: dict[str, str] = {}  # event key -> the identifier its automatic key uses
        for event_key, spec in plan.events.items():
            container = "traits" if spec.call is CallType.IDENTIFY else "properties"
            self._containers[event_key] = container
            rules = tuple(
                _rule(event_key, spec, key, container, pii) for key in spec.business_keys()
            )
            if rules:
                self.rules[event_key] = rules
            else:
                found = automatic_id(spec)
                if found is not None:
                    self._ids[event_key] = found

    def container(self, event_key: str) -> str:
        """Where the event's properties are: "traits" for identify calls, else "properties"."""
        return self._containers.get(event_key, "properties")

    def payload(self, event_key: str, body: dict[str, Any]) -> int | None:
        """The automatic "same payload" key of a planned event; None without any id (or when
        its properties cannot be written as JSON)."""
        user = body.get("userId")
        if type(user) is not str or not user:
            user = body.get("anonymousId")
            if type(user) is not str or not user:
                return None
        props = body.get(self._containers.get(event_key, "properties"))
        name = self._ids.get(event_key)
        if name is not None and type(props) is dict:
            value = props.get(name)
            if (type(value) is str and value) or type(value) is int:
                return key_hash(orjson.dumps((event_key, user, name, value)))
        try:
            return key_hash(orjson.dumps((event_key, user, props), option=_SORTED))
        except TypeError:  # orjson.JSONEncodeError: nested too deep, a lone surrogate...
            return None


def automatic_id(spec: EventSpec) -> str | None:
    """The identifier an event's automatic key uses: its first required top-level string or
    integer property named like an id (`id`, `order_id`, `orderId`; not the call's own ids)."""
    for prop in spec.properties:
        folded = prop.name.lower().replace("_", "").replace("-", "")
        if (
            prop.required
            and prop.type in (PropType.STRING, PropType.INTEGER)
            and _ID_NAME.search(prop.name)
            and folded not in _ENVELOPE_IDS
        ):
            return prop.name
    return None


def rule_values(rule: KeyRule, props: object) -> tuple[int, tuple[Any, ...]] | None:
    """(hash, values) of the key `rule` in the properties dict `props`; None when it carries
    none (a property absent, null, empty or of another type than planned)."""
    if type(props) is not dict:
        return None
    parts = [rule.scope]
    values = []
    for name, integer in zip(rule.names, rule.integer, strict=True):
        value: Any = props.get(name)
        kind = type(value)
        if integer:
            if kind is float and value.is_integer():
                value = int(value)
            elif kind is not int:
                return None
            size = (value.bit_length() + 8) // 8
            parts.append(b"i%d:" % size + value.to_bytes(size, "little", signed=True))
        else:
            if kind is not str or not value:
                return None
            data = value.encode("utf-8", "surrogatepass")
            parts.append(b"s%d:" % len(data) + data)
        values.append(value)
    return key_hash(b"".join(parts)), tuple(values)


def duplicate_violation(rule: KeyRule, values: tuple[Any, ...]) -> Violation:
    """The `duplicate_key` violation of a repeated key: its path, what was expected, and the
    repeated value(s), redacted where PII."""
    if len(values) == 1:
        got = REDACTED if rule.redact[0] else describe(values[0])
    else:
        shown = (
            f"{name}={REDACTED if secret else _short(value)}"
            for name, value, secret in zip(rule.names, values, rule.redact, strict=True)
        )
        got = ", ".join(shown)
        if len(got) > _GOT_MAX:
            got = got[: _GOT_MAX - 1] + "…"
    return Violation(Code.DUPLICATE_KEY.value, rule.path, rule.expected, got)


def _short(value: Any) -> str:
    return repr(value[:30]) if type(value) is str else str(value)


def _rule(
    event_key: str, spec: EventSpec, key: UniqueKey, container: str, pii: PiiDetector
) -> KeyRule:
    props = {p.name: p for p in spec.properties}
    names = tuple(key.properties)
    within = format_duration(key.within_seconds)
    if len(names) == 1:
        path = key_path(f"$.{container}", names[0])
        expected = f"a value not seen in the last {within}"
    else:
        path = f"$.{container}"
        expected = f"{', '.join(names)} together not seen in the last {within}"
        if len(expected) > _GOT_MAX:
            expected = expected[: _GOT_MAX - 1] + "…"
    return KeyRule(
        names=names,
        integer=tuple(props[n].type is PropType.INTEGER for n in names),
        redact=tuple(props[n].pii or pii.is_pii(n) for n in names),
        horizon=key.within_seconds,
        block=key.mode is Mode.BLOCK,
        path=path,
        expected=expected,
        scope=orjson.dumps((event_key, names)),
    )


__all__ = [
    "PAYLOAD_HORIZON",
    "BusinessKeys",
    "KeyRule",
    "duplicate_violation",
    "rule_values",
]
