"""The validator's compiled fast path: decides in C (a Cython extension, `_fastcheck.pyx`)
whether a call is valid, and builds its normalised event; anything else goes to the full
Python path (`validator_codegen`), which finds and reports every violation.

`build_fast_checker(plan, pii, make_result)` compiles a plan for it; its `accepts(body,
source, received_at)` gives the `Result` of a valid call or None ("run the full path"), its
`check` the `Result` of any call (the full path's when `accepts` gives None). It is None
when the extension is not built (`pip install` builds it when a C
compiler is there; without one trackwatch runs on the full path alone, the same results, just
slower) or when `TRACKWATCH_PURE_VALIDATOR=1` is set.

The fast path accepts only what the full path accepts, and builds the same event (same keys,
same order, same normalised values): tests/test_validator_fastpath.py checks both on random
valid, mutated and malformed calls over the example plans.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Callable
from typing import Any

from tracking_plan.builtins import with_builtins
from tracking_plan.model import CallType, EventSpec, Identity, Plan, PropertySpec, PropType, Status
from tracking_plan.normalise import (
    format_timestamp,
    normalise_currency,
    now,
    parse_canonical,
    parse_timestamp,
)
from tracking_plan.normalise_currency_codes import CURRENCY_CODES
from tracking_plan.pii import is_pii_token
from tracking_plan.validator_codegen import _FORMAT_CHECKS, _enum_ok, _needs_copy
from tracking_plan.validator_support import PiiDetector

try:
    from tracking_plan import _fastcheck
except ImportError:  # not built (no C compiler when installed): the full path alone
    _fastcheck = None  # type: ignore[assignment]

CheckFn = Callable[[object, Any, Any], Any]
_KINDS = {
    PropType.ANY: 0,
    PropType.STRING: 1,
    PropType.NUMBER: 2,
    PropType.INTEGER: 3,
    PropType.BOOLEAN: 4,
    PropType.OBJECT: 5,
    PropType.ARRAY: 6,
    PropType.TIMESTAMP: 7,
}
_IDENTITY = {Identity.ANY: 0, Identity.USER_ID: 1, Identity.ANONYMOUS_ID: 2}
_BIG = 1 << 62  # length limits beyond this are no limits
_CONTAINERS = {
    CallType.TRACK: "properties",
    CallType.PAGE: "properties",
    CallType.SCREEN: "properties",
    CallType.IDENTIFY: "traits",
    CallType.GROUP: "traits",
    CallType.ALIAS: None,
}
_CALL_FIELDS = {CallType.GROUP: ("groupId",), CallType.ALIAS: ("previousId", "userId")}


def available() -> bool:
    """Is the compiled extension built (and not turned off)?"""
    return _fastcheck is not None and os.environ.get("TRACKWATCH_PURE_VALIDATOR") != "1"


def received_epoch_parser() -> Callable[[object], float | None] | None:
    """The compiled parser of the collector's reception stamps (`YYYY-MM-DDTHH:MM:SS.mmmZ` ->
    the float `streams.envelope.received_at_epoch` gives; None for any other value), or None
    when the extension is not available."""
    return _fastcheck.received_epoch if available() else None  # type: ignore[no-any-return]


def build_fast_checker(
    plan: Plan, pii: PiiDetector, make_result: Callable[..., Any], full: CheckFn
) -> Any:
    """A `FastChecker` for `plan` (see the module docstring), or None when not available.
    Its `check(body, source, received_at)` returns the `Result` of every call: built by the
    fast path when valid, else by `full` (the full path); `accepts(...)` is the fast path
    alone (a `Result`, or None)."""
    if not available():
        return None
    helpers = _fastcheck.Helpers()
    helpers.is_pii = pii.is_pii
    helpers.safe = pii.safe_keys()
    helpers.pii_active = pii.active
    helpers.enum_ok = _enum_ok
    helpers.parse_canonical = parse_canonical
    helpers.parse_timestamp = parse_timestamp
    helpers.format_timestamp = format_timestamp
    helpers.normalise_currency = normalise_currency
    helpers.currency_codes = CURRENCY_CODES
    helpers.is_pii_token = is_pii_token
    helpers.deepcopy = copy.deepcopy
    helpers.now = now
    helpers.set_result_type(make_result)
    helpers.plan_version = plan.version
    helpers.required_context = tuple(tuple(path.split(".")) for path in plan.required_context)
    helpers.identity = _IDENTITY[Identity(plan.identity)]
    events = {}
    for key, spec in plan.events.items():
        compiled = _event(plan, with_builtins(spec, plan), key, pii)
        if compiled is not None:  # else: the full path checks this event
            events[key] = compiled
    return _fastcheck.FastChecker(events, helpers, full)


class _NotCompiled(Exception):
    """A plan feature the fast path does not take (the full path checks the event)."""


def _distinct(specs: list[PropertySpec]) -> bool:
    """The fast path finds fields by name: one per name."""
    return len({s.name for s in specs}) == len(specs)


def _event(plan: Plan, spec: EventSpec, key: str, pii: PiiDetector) -> Any:
    """The compiled event, or None when the full path must check it."""
    try:
        return _compile_event(plan, spec, key, pii)
    except _NotCompiled:
        return None


def _compile_event(plan: Plan, spec: EventSpec, key: str, pii: PiiDetector) -> Any:
    out = _fastcheck.Spec()
    out.key = key
    container = _CONTAINERS[spec.call]
    out.container = container
    out.container_name = container or "properties"
    out.deprecated = spec.status is Status.DEPRECATED
    out.sources = frozenset(spec.sources) if spec.sources else None
    out.call_fields = _CALL_FIELDS.get(spec.call, ())
    checked = [s for s in spec.properties if not pii.is_pii(s.name)] if container else []
    if not _distinct(checked):
        raise _NotCompiled(key)
    out.fields, out.by_name = _fields(checked, pii)
    out.allow = spec.allow_unplanned_properties
    out.modes = {}
    out.mode_of = lambda source, spec=spec: plan.mode_for(spec, source).value
    return out


_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_LITERALS = _WORD | frozenset("_-@:/ ,;=#%&'\"<>~`!")  # plain outside [...] (no metacharacter)
_IN_CLASS = _WORD | frozenset("_.")  # plain inside [...] ("-" only first or last)
_QUANTIFIER = re.compile(r"\?|\*|\+|\{(\d{1,4})(?:(,)(\d{1,4})?)?\}")


def simple_pattern(pattern: str) -> list[tuple[str, int, int]] | None:
    """The atoms (characters, least, most; most -1: no bound) of an anchored pattern made of
    ASCII literals and character classes with counts, such as `^p_[0-9a-z]{4,12}$`; None for
    any other pattern (alternation, groups, escapes, `.`, negated classes, lazy or possessive
    counts...), which the fast path leaves to `re`."""
    if len(pattern) < 2 or pattern[0] != "^" or pattern[-1] != "$":
        return None
    body, atoms, i = pattern[1:-1], [], 0
    while i < len(body):
        if body[i] == "[":
            end = body.find("]", i + 1)
            chars = _class_chars(body[i + 1 : end]) if end > i + 1 else None
            if chars is None:
                return None
            i = end + 1
        elif body[i] in _LITERALS:
            chars, i = body[i], i + 1
        else:
            return None
        least, most = 1, 1
        found = _QUANTIFIER.match(body, i)
        if found:
            text = found.group(0)
            if text in "?*+":
                least, most = {"?": (0, 1), "*": (0, -1), "+": (1, -1)}[text]
            else:
                least = int(found.group(1))
                most = least if not found.group(2) else int(found.group(3) or -1)
                if found.group(3) and most < least:
                    return None
            i = found.end()
            if i < len(body) and body[i] in "?+*{":  # lazy, possessive or repeated counts
                return None
        elif i < len(body) and body[i] in "?*+{":
            return None
        atoms.append((chars, least, most))
    return atoms if len(atoms) <= 32 else None


def _class_chars(inside: str) -> str | None:
    """The characters of `[inside]` (ranges a-z, A-Z, 0-9 and plain characters; "-" first or
    last), or None when it holds anything else."""
    chars: set[str] = set()
    if inside.startswith("-"):
        chars.add("-")
        inside = inside[1:]
    if inside.endswith("-"):
        chars.add("-")
        inside = inside[:-1]
    i = 0
    while i < len(inside):
        if i + 2 < len(inside) and inside[i + 1] == "-":
            low, high = inside[i], inside[i + 2]
            same = any(low in r and high in r for r in _RANGES)
            if not same or low > high:
                return None
            chars.update(chr(c) for c in range(ord(low), ord(high) + 1))
            i += 3
        elif inside[i] in _IN_CLASS:
            chars.add(inside[i])
            i += 1
        else:
            return None
    return "".join(sorted(chars)) or None


_RANGES = ("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789")


def _fields(specs: list[PropertySpec], pii: PiiDetector) -> tuple[list[Any], dict[str, Any]]:
    """The compiled fields of an object (at most 64: the fast path marks the ones it saw in
    a 64-slot array), and the same by name."""
    if len(specs) > 64:
        raise _NotCompiled("more than 64 fields")
    fields = []
    for index, spec in enumerate(specs):
        prop = _prop(spec, pii)
        prop.index = index
        fields.append(prop)
    return fields, {prop.name: prop for prop in fields}


def _exact_double(bound: object) -> bool:
    """Does comparing a float with `bound` in C doubles give Python's answer?"""
    if type(bound) is float:
        return not math.isnan(bound)
    return type(bound) is int and abs(bound) <= 2**53


def _prop(spec: PropertySpec, pii: PiiDetector) -> Any:
    out = _fastcheck.Prop()
    out.name = spec.name
    is_time = spec.type is PropType.TIMESTAMP or spec.format == "date-time"
    out.kind = 7 if is_time else _KINDS[spec.type]
    out.nullable = spec.nullable
    out.required = spec.required
    out.has_default = spec.has_default
    out.default = spec.default
    out.default_copy = isinstance(spec.default, dict | list)
    out.pii_value = spec.pii
    out.currency = spec.type is PropType.STRING and spec.format == "currency"
    enum = spec.enum
    if enum is not None and spec.type is PropType.STRING and all(type(v) is str for v in enum):
        out.enum_set = frozenset(enum)
    else:
        out.enum_tuple = enum
    if spec.type in (PropType.NUMBER, PropType.INTEGER):
        out.minimum, out.maximum = spec.minimum, spec.maximum
        bounds = [b for b in (spec.minimum, spec.maximum) if b is not None]
        out.c_bounds = all(_exact_double(b) for b in bounds)
        out.c_min = -math.inf if spec.minimum is None or not out.c_bounds else spec.minimum
        out.c_max = math.inf if spec.maximum is None or not out.c_bounds else spec.maximum
    out.len_min, out.len_max = -_BIG, _BIG
    if spec.type is PropType.STRING:
        limits = [x for x in (spec.max_length, spec.maximum) if x is not None]
        if limits:
            out.len_max = min(int(min(limits)), _BIG)
        if spec.minimum is not None:
            out.len_min = max(math.ceil(spec.minimum), -_BIG)
        if spec.pattern is not None:
            out.search = re.compile(spec.pattern).search
            atoms = simple_pattern(spec.pattern)
            out.simple = None if atoms is None else _fastcheck.SimplePattern(atoms)
        if spec.format in _FORMAT_CHECKS:
            out.format_search = _FORMAT_CHECKS[spec.format][0].search
    elif spec.type is PropType.ARRAY:
        if spec.minimum is not None:
            out.len_min = max(math.ceil(spec.minimum), -_BIG)
        if spec.maximum is not None:
            out.len_max = min(int(spec.maximum), _BIG)
        if spec.items is not None:
            out.items = _prop(spec.items, pii)
            out.nested_writes = _needs_copy(spec.items)
    elif spec.type is PropType.OBJECT:
        out.has_fields = bool(spec.properties) or not spec.additional_properties
        if out.has_fields:
            out.nested_writes = _needs_copy(spec)
            checked = [s for s in spec.properties if not pii.is_pii(s.name)]
            if not _distinct(checked):
                raise _NotCompiled(spec.name)
            out.fields, out.by_name = _fields(checked, pii)
            out.allow = spec.additional_properties
    return out


__all__ = ["available", "build_fast_checker", "received_epoch_parser", "simple_pattern"]
