"""Compiles each planned event of a plan to one specialised Python function.

`EventCompiler.compile` turns everything the plan fixes for an event (status, sources, identity
rule, required context, PII names, the property tree, modes) into straight-line Python source
(`_EVENT_TEMPLATE` plus the property checks of `_Generator`: one `if` chain per property,
constants and compiled regexes bound as globals, violations with static paths pre-built) and
`exec`s it once. The generated function

    check(body, get, call, name, key, source, received_at, latest) -> Result

does all the work of `Validator.validate` after the envelope (see `tracking_plan.validator` for
what is checked and in which order). Hot paths are inlined: canonical timestamps
(`YYYY-MM-DDTHH:MM:SS.mmmZ`, looked up in the caches of `tracking_plan.normalise`), the PII
search of `context` for known keys, timestamp formatting. The properties dict `p` is copied
only on its first write (defaults filled, currency codes upper-cased, timestamps formatted), so
the caller's input is never modified and a valid event that needs no normalisation is checked
without copies; nested containers are copied before they are changed. The locations of PII
keys and unplanned properties go to `strip` as `(kind, keys)` so that they can be removed from
a forwarded event.

Pattern semantics: `pattern` is a Python regular expression matched with `re.search`, i.e. it
may match anywhere in the value unless anchored with `^...$` (as in JSON Schema).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tracking_plan.model import (
    CallType,
    EventSpec,
    Identity,
    Mode,
    Plan,
    PropertySpec,
    PropType,
    Status,
)
from tracking_plan.normalise import (
    MILLIS_Z,
    MIN_EPOCH,
    cached_second_epoch,
    cached_second_text,
    format_timestamp,
    millis_z_fraction,
    normalise_currency,
    parse_canonical,
    parse_timestamp,
    second_text,
)
from tracking_plan.normalise_currency_codes import CURRENCY_CODES
from tracking_plan.pii import is_pii_token
from tracking_plan.validator_support import (
    REDACTED,
    PiiDetector,
    describe,
    key_path,
    strip_locations,
    violation,
)
from tracking_plan.violations import Code, Violation

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
_FORMAT_CHECKS = {"email": (_EMAIL, "an e-mail address"), "uri": (_URI, "a URI")}
_MISSING = object()


def _enum_ok(value: object, allowed: tuple[Any, ...]) -> bool:
    """`value in allowed`, except that booleans and numbers never equal each other."""
    is_bool = type(value) is bool
    return any(value == item and (type(item) is bool) == is_bool for item in allowed)


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _needs_copy(spec: PropertySpec) -> bool:
    """Does checking this value (or anything inside it) write a normalised value back?"""
    if spec.type is PropType.TIMESTAMP or spec.format in ("currency", "date-time"):
        return True
    if any(child.has_default or _needs_copy(child) for child in spec.properties):
        return True
    return spec.items is not None and _needs_copy(spec.items)


@dataclass(frozen=True)
class _Path:
    """A JSON path made of literal text and the names of loop-index variables."""

    parts: tuple[str | int, ...]  # str: literal text; int: depth of index variable `i<depth>`
    loc: tuple[str | int, ...]  # same for the location tuple: str key or int index depth

    @property
    def static(self) -> bool:
        return all(isinstance(part, str) for part in self.parts)

    def text(self) -> str:
        return "".join(str(p) for p in self.parts)

    def key(self, name: str) -> _Path:
        base = self.parts[-1] if self.parts and isinstance(self.parts[-1], str) else ""
        head = self.parts[:-1] if base else self.parts
        return _Path((*head, key_path(base, name)), (*self.loc, name))

    def index(self, depth: int) -> _Path:
        return _Path((*self.parts, "[", depth, "]"), (*self.loc, depth))

    def expr(self) -> str:
        if self.static:
            return repr(self.text())
        out = []
        for part in self.parts:
            if isinstance(part, int):
                out.append(f"{{i{part}}}")
            else:
                out.append(part.replace("{", "{{").replace("}", "}}"))
        return "f" + repr("".join(out))

    def loc_expr(self) -> str:
        items = [f"i{p}" if isinstance(p, int) else repr(p) for p in self.loc]
        return "(" + "".join(f"{item}, " for item in items) + ")"


class _Generator:
    def __init__(self, pii: PiiDetector) -> None:
        self.pii = pii
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {
            "_MISSING": _MISSING,
            "_violation": violation,
            "_describe": describe,
            "_parse_ts": parse_timestamp,
            "_format_ts": format_timestamp,
            "_currency": normalise_currency,
            "_CURRENCY_CODES": CURRENCY_CODES,
            "_isfinite": math.isfinite,
            "_enum_ok": _enum_ok,
            "_deepcopy": copy.deepcopy,
            "_scan": pii.scan,
            "_unknown": self._unknown_fn(pii),
            "_MIN_EPOCH": MIN_EPOCH,
            "_is_pii_token": is_pii_token,
        }
        for code in Code:
            self.namespace[f"C_{code.name}"] = code.value
        self._count = 0

    @staticmethod
    def _unknown_fn(pii: PiiDetector) -> Callable[..., None]:
        def unknown(
            obj: dict[Any, Any],
            known: frozenset[str],
            allow: bool,
            expected: str,
            path: str,
            loc: tuple[Any, ...],
            viol: list[Violation],
            strip: list[tuple[str, tuple[Any, ...]]],
        ) -> None:
            for key, value in obj.items():
                if key in known:
                    continue
                where = key_path(path, key)
                if pii.is_pii(key):
                    pii.report(key, where, viol)
                    strip.append(("pii", (*loc, key)))
                    continue
                if not allow:
                    viol.append(violation(_UNPLANNED_PROPERTY, where, expected, describe(value)))
                    strip.append(("unplanned", (*loc, key)))
                kind = type(value)
                if kind is dict or kind is list:
                    pii.scan(value, where, (*loc, key), viol, strip)

        return unknown

    def const(self, value: Any, hint: str = "k") -> str:
        self._count += 1
        name = f"_{hint}{self._count}"
        self.namespace[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def assign(self, indent: int, target: str, expr: str) -> None:
        """Emit `target = expr`. A write into the top-level dict `p` first copies it (once):
        the caller's input is never modified, and a valid event that needs no normalisation
        is checked without any copy."""
        if target.startswith("p["):
            self.emit(indent, "if p is raw:")
            self.emit(indent + 1, "p = dict(raw)")
        self.emit(indent, f"{target} = {expr}")

    def report(self, indent: int, code: Code, path: _Path, expected: str, got: str | None) -> None:
        """Emit `viol.append(...)`; `got` is an expression, or None for the literal "absent"."""
        if got is None and path.static:
            prebuilt = violation(code.value, path.text(), expected, "absent")
            self.emit(indent, f"viol.append({self.const(prebuilt, 'v')})")
            return
        got_expr = repr("absent") if got is None else got
        self.emit(
            indent,
            f"viol.append(_violation(C_{code.name}, {path.expr()}, "
            f"{self.const(expected, 'e')}, {got_expr}))",
        )

    def wrong_type(self, indent: int, v: str, path: _Path, expected: str, got: str) -> None:
        """Report a wrong type; a container in the wrong place is still searched for PII."""
        self.report(indent, Code.WRONG_TYPE, path, expected, got)
        self.emit(indent, f"if type({v}) is dict or type({v}) is list:")
        self.emit(indent + 1, f"_scan({v}, {path.expr()}, {path.loc_expr()}, viol, strip)")

    # -- objects -------------------------------------------------------------------------------

    def fields(
        self,
        specs: tuple[PropertySpec, ...],
        allow: bool,
        var: str,
        path: _Path,
        indent: int,
        depth: int,
    ) -> None:
        checked = [s for s in specs if not self.pii.is_pii(s.name)]
        known = frozenset(s.name for s in checked)
        expected = (
            _clip("a planned property: " + ", ".join(sorted(known))) if known else "no properties"
        )
        known_name = self.const(known, "known")
        self.emit(indent, f"if not {known_name}.issuperset({var}):")
        self.emit(
            indent + 1,
            f"_unknown({var}, {known_name}, {allow!r}, {self.const(expected, 'e')}, "
            f"{path.expr()}, {path.loc_expr()}, viol, strip)",
        )
        for spec in checked:
            self.field(spec, var, path.key(spec.name), indent, depth)

    def field(self, spec: PropertySpec, var: str, path: _Path, indent: int, depth: int) -> None:
        """Check one field of the dict `var`. The usual case, a present non-null value, is
        tested first; `name in var` then tells a null value from an absent one."""
        value = f"v{depth}"
        name = repr(spec.name)
        self.emit(indent, f"{value} = {var}.get({name})")
        self.emit(indent, f"if {value} is not None:")
        self.value(spec, value, f"{var}[{name}]", path, indent + 1, depth)
        if spec.has_default or spec.required:
            if spec.nullable:
                self.emit(indent, f"elif {name} not in {var}:")
            else:
                self.emit(indent, f"elif {name} in {var}:")
                self.not_nullable(spec, path, indent + 1)
                self.emit(indent, "else:")
            if spec.has_default:
                default = spec.default
                if isinstance(default, dict | list):
                    copied = f"_deepcopy({self.const(default, 'd')})"
                    self.assign(indent + 1, f"{var}[{name}]", copied)
                else:
                    self.assign(indent + 1, f"{var}[{name}]", self.const(default, "d"))
            else:
                expected = f"{_type_text(spec)} (required)"
                self.report(indent + 1, Code.MISSING_REQUIRED, path, expected, None)
        elif not spec.nullable:
            self.emit(indent, f"elif {name} in {var}:")
            self.not_nullable(spec, path, indent + 1)

    def not_nullable(self, spec: PropertySpec, path: _Path, indent: int) -> None:
        expected = f"{_type_text(spec)}, not null"
        self.report(indent, Code.NOT_NULLABLE, path, expected, repr("null"))

    # -- values --------------------------------------------------------------------------------

    def value(
        self, spec: PropertySpec, v: str, target: str, path: _Path, indent: int, depth: int
    ) -> None:
        got = repr(REDACTED) if spec.pii else f"_describe({v})"
        if spec.pii:  # a value the collector replaced by a token is not checked any further
            self.emit(indent, f"if not _is_pii_token({v}):")
            indent += 1
        kind = spec.type
        if kind is PropType.TIMESTAMP or spec.format == "date-time":
            self.timestamp(v, target, path, got, indent, depth)
        elif kind is PropType.STRING:
            self.string(spec, v, target, path, got, indent)
        elif kind in (PropType.NUMBER, PropType.INTEGER):
            self.number(spec, v, path, got, indent, depth)
        elif kind is PropType.BOOLEAN:
            self.emit(indent, f"if type({v}) is not bool:")
            self.wrong_type(indent + 1, v, path, "boolean", got)
            if spec.enum is not None:
                self.emit(indent, f"elif not _enum_ok({v}, {self.const(spec.enum, 'enum')}):")
                self.report(indent + 1, Code.NOT_IN_ENUM, path, _enum_text(spec.enum), got)
        elif kind is PropType.OBJECT:
            self.object(spec, v, target, path, got, indent, depth)
        elif kind is PropType.ARRAY:
            self.array(spec, v, target, path, got, indent, depth)
        else:  # ANY
            self.emit(indent, f"if type({v}) is dict or type({v}) is list:")
            self.emit(indent + 1, f"_scan({v}, {path.expr()}, {path.loc_expr()}, viol, strip)")
            if spec.enum is not None:
                self.emit(indent, f"if not _enum_ok({v}, {self.const(spec.enum, 'enum')}):")
                self.report(indent + 1, Code.NOT_IN_ENUM, path, _enum_text(spec.enum), got)

    def timestamp(
        self, v: str, target: str, path: _Path, got: str, indent: int, depth: int
    ) -> None:
        epoch = f"t{depth}"
        self.emit(indent, f"{epoch} = _parse_ts({v})")
        self.emit(indent, f"if {epoch} is None:")
        self.emit(indent + 1, f"if type({v}) is str or type({v}) is int or type({v}) is float:")
        self.report(indent + 2, Code.BAD_TIMESTAMP, path, "ISO-8601 date-time or epoch s/ms", got)
        self.emit(indent + 1, "else:")
        self.wrong_type(indent + 2, v, path, "timestamp", got)
        self.emit(indent, f"elif {epoch} < _MIN_EPOCH or {epoch} > latest:")
        self.report(
            indent + 1, Code.BAD_TIMESTAMP, path, "a date after 2000, at most 1 day ahead", got
        )
        self.emit(indent, "else:")
        self.assign(indent + 1, target, f"_format_ts({epoch})")

    def string(
        self, spec: PropertySpec, v: str, target: str, path: _Path, got: str, indent: int
    ) -> None:
        self.emit(indent, f"if type({v}) is str:")
        body = indent + 1
        self.emit(body, "pass")
        if spec.format == "currency":
            # normalise_currency, with the usual case (already a valid code) inline
            self.emit(body, f"c = {v} if {v} in _CURRENCY_CODES else _currency({v})")
            self.emit(body, "if c is None:")
            self.report(body + 1, Code.BAD_CURRENCY, path, "an ISO 4217 currency code", got)
            self.emit(body, f"elif c is not {v}:")
            self.assign(body + 1, target, f"{v} = c")
        limits = [x for x in (spec.max_length, spec.maximum) if x is not None]
        if limits or spec.minimum is not None:
            self.emit(body, f"n = len({v})")
        if limits:
            top = int(min(limits))
            self.emit(body, f"if n > {top}:")
            self.report(body + 1, Code.TOO_LONG, path, f"at most {top} characters", got)
        if spec.minimum is not None:
            bottom = math.ceil(spec.minimum)
            self.emit(body, f"if n < {bottom}:")
            self.report(body + 1, Code.OUT_OF_RANGE, path, f"at least {bottom} characters", got)
        if spec.pattern is not None:
            search = self.const(re.compile(spec.pattern).search, "rx")
            self.emit(body, f"if {search}({v}) is None:")
            expected = _clip(f"matches {spec.pattern}")
            self.report(body + 1, Code.PATTERN_MISMATCH, path, expected, got)
        if spec.format in _FORMAT_CHECKS:
            regex, text = _FORMAT_CHECKS[spec.format]
            self.emit(body, f"if {self.const(regex.search, 'rx')}({v}) is None:")
            self.report(body + 1, Code.PATTERN_MISMATCH, path, text, got)
        if spec.enum is not None:
            if all(type(item) is str for item in spec.enum):
                self.emit(body, f"if {v} not in {self.const(frozenset(spec.enum), 'enum')}:")
            else:
                self.emit(body, f"if not _enum_ok({v}, {self.const(spec.enum, 'enum')}):")
            self.report(body + 1, Code.NOT_IN_ENUM, path, _enum_text(spec.enum), got)
        self.emit(indent, "else:")
        self.wrong_type(indent + 1, v, path, "string", got)

    def number(
        self, spec: PropertySpec, v: str, path: _Path, got: str, indent: int, depth: int
    ) -> None:
        kind = f"k{depth}"
        self.emit(indent, f"{kind} = type({v})")
        if spec.type is PropType.INTEGER:
            self.emit(indent, f"if {kind} is int or ({kind} is float and {v}.is_integer()):")
            type_name = "integer"
        else:
            self.emit(indent, f"if {kind} is int or ({kind} is float and _isfinite({v})):")
            type_name = "number"
        body = indent + 1
        self.emit(body, "pass")
        if spec.minimum is not None and spec.maximum is not None:
            expected = f"between {_fmt_number(spec.minimum)} and {_fmt_number(spec.maximum)}"
            self.emit(body, f"if {v} < {spec.minimum!r} or {v} > {spec.maximum!r}:")
            self.report(body + 1, Code.OUT_OF_RANGE, path, expected, got)
        elif spec.minimum is not None:
            self.emit(body, f"if {v} < {spec.minimum!r}:")
            self.report(body + 1, Code.OUT_OF_RANGE, path, f"≥ {_fmt_number(spec.minimum)}", got)
        elif spec.maximum is not None:
            self.emit(body, f"if {v} > {spec.maximum!r}:")
            self.report(body + 1, Code.OUT_OF_RANGE, path, f"≤ {_fmt_number(spec.maximum)}", got)
        if spec.enum is not None:
            self.emit(body, f"if not _enum_ok({v}, {self.const(spec.enum, 'enum')}):")
            self.report(body + 1, Code.NOT_IN_ENUM, path, _enum_text(spec.enum), got)
        self.emit(indent, "else:")
        self.wrong_type(indent + 1, v, path, type_name, got)

    def object(
        self,
        spec: PropertySpec,
        v: str,
        target: str,
        path: _Path,
        got: str,
        indent: int,
        depth: int,
    ) -> None:
        self.emit(indent, f"if type({v}) is dict:")
        body = indent + 1
        if spec.properties or not spec.additional_properties:
            if _needs_copy(spec):
                self.emit(body, f"{v} = dict({v})")
                self.assign(body, target, v)
            self.fields(spec.properties, spec.additional_properties, v, path, body, depth + 1)
        else:
            self.emit(body, f"_scan({v}, {path.expr()}, {path.loc_expr()}, viol, strip)")
        self.emit(indent, "else:")
        self.wrong_type(indent + 1, v, path, "object", got)

    def array(
        self,
        spec: PropertySpec,
        v: str,
        target: str,
        path: _Path,
        got: str,
        indent: int,
        depth: int,
    ) -> None:
        self.emit(indent, f"if type({v}) is list:")
        body = indent + 1
        self.emit(body, "pass")
        if spec.minimum is not None or spec.maximum is not None:
            self.emit(body, f"n = len({v})")
            if spec.minimum is not None:
                bottom = math.ceil(spec.minimum)
                self.emit(body, f"if n < {bottom}:")
                self.report(body + 1, Code.OUT_OF_RANGE, path, f"at least {bottom} items", got)
            if spec.maximum is not None:
                top = int(spec.maximum)
                self.emit(body, f"if n > {top}:")
                self.report(body + 1, Code.OUT_OF_RANGE, path, f"at most {top} items", got)
        items = spec.items
        if items is None:
            self.emit(body, f"_scan({v}, {path.expr()}, {path.loc_expr()}, viol, strip)")
        else:
            if _needs_copy(items):
                self.emit(body, f"{v} = list({v})")
                self.assign(body, target, v)
            index, item = f"i{depth}", f"x{depth}"
            item_path = path.index(depth)
            self.emit(body, f"for {index}, {item} in enumerate({v}):")
            self.emit(body + 1, f"if {item} is None:")
            if items.nullable:
                self.emit(body + 2, "pass")
            else:
                self.report(
                    body + 2,
                    Code.NOT_NULLABLE,
                    item_path,
                    f"{_type_text(items)}, not null",
                    "'null'",
                )
            self.emit(body + 1, "else:")
            self.value(items, item, f"{v}[{index}]", item_path, body + 2, depth + 1)
        self.emit(indent, "else:")
        self.wrong_type(indent + 1, v, path, "array", got)


def _type_text(spec: PropertySpec) -> str:
    return spec.type.value


def _enum_text(values: tuple[Any, ...]) -> str:
    return _clip("one of: " + ", ".join(str(v) for v in values))


# -- whole calls ---------------------------------------------------------------------------------

# The per-event function; `#@NAME` lines are replaced by generated code (see `EventCompiler`).
# Everything the plan fixes (identity rule, required context, PII names, sources, status,
# property tree) is decided at generation time; what is left is straight-line code.
_EVENT_TEMPLATE = """\
def check(body, get, call, name, key, source, received_at, latest):
    viol = []
    strip = []
    #@EVENT
    user = get("userId")
    if user is not None and type(user) is not str:
        viol.append(_violation(C_WRONG_TYPE, "$.userId", "string", _describe(user)))
        user = None
    anonymous = get("anonymousId")
    if anonymous is not None and type(anonymous) is not str:
        viol.append(_violation(C_WRONG_TYPE, "$.anonymousId", "string", _describe(anonymous)))
        anonymous = None
    #@IDENTITY
    context = get("context")
    if context is not None and type(context) is not dict:
        viol.append(_violation(C_WRONG_TYPE, "$.context", "object", _describe(context)))
        context = None
    #@CONTEXT
    moment = received_at
    moment_text = None
    raw_sent = get("sentAt")
    if raw_sent is None:
        sent = sent_text = None
    else:
        #@PARSE sent sent_text raw_sent $.sentAt
    raw_original = get("originalTimestamp")
    if raw_original is None:
        original = original_text = None
    else:
        #@PARSE original original_text raw_original $.originalTimestamp
    raw_stamp = get("timestamp")
    if raw_stamp is None:
        stamp = stamp_text = None
    else:
        #@PARSE stamp stamp_text raw_stamp $.timestamp
    if original is not None:
        client = original
        client_text = original_text
    else:
        client = stamp
        client_text = stamp_text
    if client is not None:
        if sent is not None and received_at is not None:
            moment = received_at - (sent - client)
        else:
            moment = client
            moment_text = client_text
        if not _MIN_EPOCH <= moment <= latest:
            if original is not None:
                path, got = "$.originalTimestamp", _describe(raw_original)
            else:
                path, got = "$.timestamp", _describe(raw_stamp)
            viol.append(_violation(C_BAD_TIMESTAMP, path, _TS_RANGE, got))
            moment, moment_text = received_at, None
    #@CONTAINER
    if raw is None:
        p = {}
    elif type(raw) is dict:
        p = raw  # copied on the first write (defaults, currency, timestamps)
    else:
        viol.append(_violation(C_WRONG_TYPE, _CONTAINER_PATH, "object", _describe(raw)))
        p = None
    if p is not None:
        #@PROPERTIES
    mode = _modes.get(source)
    if mode is None:
        mode = _remember(_modes, source, _mode_for(_SPEC, source))
    if not viol:
        outcome = "valid"
    elif mode == "flag" or (mode == "omit" and _only_unplanned(viol)):
        outcome = "flagged"
    else:
        return _Result("quarantined", None, viol, key, name, _PLANNED, moment, mode)
    if moment is not None and 0.0 <= moment < _YEAR_10000:
        if not moment_text:
            #@FORMAT moment moment_text
    else:
        moment_text = None
    if received_at is not None and 0.0 <= received_at < _YEAR_10000:
        last = _last_received[0]  # the calls of one batch share their reception time
        if last[0] == received_at:
            received_text = last[1]
        else:
            #@FORMAT received_at received_text
            _last_received[0] = (received_at, received_text)
    else:
        received_text = None
    if (
        moment_text is not None
        and client_text is not None
        and sent_text is not None
        and received_text is not None
        and p is not None
        and (raw is not None or p)
    ):  # the usual case in one go; the same keys in the same order as below
        event = {
            **body,
            "type": call,
            _CONTAINER: p,
            "timestamp": moment_text,
            "originalTimestamp": client_text,
            "sentAt": sent_text,
            "receivedAt": received_text,
            "planVersion": _PLAN_VERSION,
        }
    else:
        event = dict(body)
        event["type"] = call
        if p is not None and (raw is not None or p):
            event[_CONTAINER] = p
        if moment_text is not None:
            event["timestamp"] = moment_text
        if client_text is not None:
            event["originalTimestamp"] = client_text
        if sent_text is not None:
            event["sentAt"] = sent_text
        if received_text is not None:
            event["receivedAt"] = received_text
        event["planVersion"] = _PLAN_VERSION
    #@STORE
    if viol:
        if strip:
            drop_unplanned = mode == "omit"
            _strip_locations(event, [loc for k, loc in strip if k == "pii" or drop_unplanned])
        event["violations"] = [  # Violation.to_dict, inlined
            {"code": v.code, "path": v.path, "expected": v.expected, "got": v.got} for v in viol
        ]
    return _Result(outcome, event, viol, key, name, _PLANNED, moment, mode)
"""

# format_timestamp(EPOCH) into TEXT, inline.
_FORMAT_TEMPLATE = """\
second, millis = divmod(round(EPOCH * 1000), 1000)
head = _second_text(second)
if head is None:
    head = _make_second_text(second)
TEXT = head + _MILLIS_Z[millis]
"""

# One timestamp field: the canonical text (`parse_canonical`) inline, the rest in `_time_field`.
_PARSE_TEMPLATE = """\
if (
    type(RAW) is str
    and (VAR := _fraction_z(RAW[19:])) is not None  # ".mmmZ": so the length is 24
    and (second := _second_epoch(RAW[:19])) is not None
):
    VAR += second
    TEXT = RAW
else:
    VAR = _parse_canonical(RAW)
    if VAR is None:
        VAR, TEXT = _time_field(RAW, PATH, viol)
    else:
        TEXT = RAW
"""

TS_EXPECTED = "ISO-8601 date-time or epoch seconds/milliseconds"
TS_RANGE = "an event time after 2000 and at most 1 day after reception"
YEAR_10000 = 253_402_300_800.0
_NO_TIME: tuple[None, None] = (None, None)
_CONTAINERS = frozenset((dict, list))


def _time_field(raw: object, path: str, viol: list[Violation]) -> tuple[float | None, str | None]:
    """(epoch, normalised text) of one timestamp field that is not in the canonical form;
    (None, None) when it is bad (and then reported). The text is None for dates before 1970."""
    epoch = parse_timestamp(raw)
    if epoch is None:
        viol.append(violation(Code.BAD_TIMESTAMP.value, path, TS_EXPECTED, describe(raw)))
        return _NO_TIME
    return (epoch, format_timestamp(epoch) if 0.0 <= epoch < YEAR_10000 else None)


def _remember(cache: dict[str | None, str], source: str | None, mode: Mode) -> str:
    """Cache the mode of a source (bounded: sources are few, but they come from the input)."""
    if len(cache) < 256:
        cache[source] = mode.value
    return mode.value


def _only_unplanned(viol: list[Violation]) -> bool:
    return all(v.code == _UNPLANNED_PROPERTY for v in viol)


_UNPLANNED_PROPERTY = Code.UNPLANNED_PROPERTY.value
_IDENTITY_CHECKS = {
    Identity.ANY: ("if not user and not anonymous:", "userId or anonymousId", "$"),
    Identity.USER_ID: ("if not user:", "userId", "$.userId"),
    Identity.ANONYMOUS_ID: ("if not anonymous:", "anonymousId", "$.anonymousId"),
}

EventFn = Callable[..., Any]
# top-level fields a call type must carry (as non-empty strings), besides the plan's identity rule
_CALL_FIELDS = {CallType.GROUP: ("groupId",), CallType.ALIAS: ("previousId", "userId")}


class EventCompiler:
    """Generates, per planned event, one `check(body, get, call, name, key, source,
    received_at, latest)` function doing everything after the envelope (see
    `tracking_plan.validator`): event status and source, identity, context, timestamps,
    properties, PII, the mode's decision and the normalised event. `make_result` builds the
    returned value from (outcome, event, violations, key, name, planned, event time, mode)."""

    def __init__(self, plan: Plan, pii: PiiDetector, make_result: Callable[..., Any]) -> None:
        self.plan = plan
        self.pii = pii
        self.last_received: list[tuple[float, str]] = [(math.nan, "")]  # shared by all events
        self.shared: dict[str, Any] = {
            "_Result": make_result,
            "_remember": _remember,
            "_mode_for": plan.mode_for,
            "_only_unplanned": _only_unplanned,
            "_strip_locations": strip_locations,
            "_time_field": _time_field,
            "_parse_canonical": parse_canonical,
            "_second_epoch": cached_second_epoch,
            "_fraction_z": millis_z_fraction,
            "_second_text": cached_second_text,
            "_make_second_text": second_text,
            "_MILLIS_Z": MILLIS_Z,
            "_last_received": self.last_received,
            "_PLAN_VERSION": plan.version,
            "_TS_RANGE": TS_RANGE,
            "_YEAR_10000": YEAR_10000,
            "_clip": _clip,
            "_safe_superset": pii.safe_keys().issuperset,
            "_no_containers": _CONTAINERS.isdisjoint,
        }
        rule, expected, path = _IDENTITY_CHECKS[Identity(plan.identity)]
        missing_id = violation(Code.MISSING_IDENTITY.value, path, expected, "absent")
        self.shared["_MISSING_ID"] = missing_id
        self.identity = [rule, "    viol.append(_MISSING_ID)"]
        self.context = self._context_lines(skip_traits=False)
        self.context_without_traits = self._context_lines(skip_traits=True)

    def _context_lines(self, skip_traits: bool) -> list[str]:
        """`missing_context` per required dotted path (absent or null), then the PII search
        (`PiiDetector.scan`, with its fast path inline: known keys, at most one level of
        objects holding only scalars). `context` is a dict or None here. `skip_traits`: the
        search leaves `context.traits` out (checked as the identify call's traits)."""
        present: list[str] = []
        absent: list[str] = []
        for number, path in enumerate(self.plan.required_context):
            keys = path.split(".")
            location = "$.context"
            for part in keys:
                location = key_path(location, part)
            missing = f"_MISSING_CONTEXT{number}"
            self.shared[missing] = violation(
                Code.MISSING_CONTEXT.value, location, "present (plan context rule)", "absent"
            )
            present.append(f"node = context.get({keys[0]!r})")
            for part in keys[1:]:
                present.append(f"node = node.get({part!r}) if type(node) is dict else None")
            present.append(f"if node is None: viol.append({missing})")
            absent.append(f"viol.append({missing})")
        if self.pii.active:
            scan = '_scan(searched, "$.context", ("context",), viol, strip)'
            present += [
                "searched = {k: v for k, v in context.items() if k != 'traits'}"
                if skip_traits
                else "searched = context",
                "if _safe_superset(searched):",
                "    for child in searched.values():",
                "        kind = type(child)",
                "        if kind is dict:",
                "            if not _safe_superset(child) or not _no_containers(",
                "                map(type, child.values())",
                "            ):",
                f"                {scan}",
                "                break",
                "        elif kind is list:",
                f"            {scan}",
                "            break",
                "else:",
                f"    {scan}",
            ]
        lines = ["if context is not None:", *("    " + line for line in present or ["pass"])]
        if absent:
            lines += ["else:", *("    " + line for line in absent)]
        return lines

    def _call_fields(self, spec: EventSpec, gen: _Generator) -> list[str]:
        """Status and sources of a planned event, and the fields its call type needs
        (`groupId` of a group call; `previousId` and `userId` of an alias call)."""
        lines: list[str] = []
        if spec.status is Status.DEPRECATED:
            gone = violation(Code.DEPRECATED_EVENT.value, "$", "an active event", "deprecated")
            lines.append(f"viol.append({gen.const(gone, 'v')})")
        if spec.sources:
            sources = frozenset(spec.sources)
            expected = _clip("sent by " + ", ".join(sorted(sources)))
            lines += [
                f"if source is not None and source not in {gen.const(sources, 'sources')}:",
                f"    viol.append(_violation(C_WRONG_SOURCE, '$', "
                f"{gen.const(expected, 'e')}, _clip(f'source {{source!r}}')))",
            ]
        for field in _CALL_FIELDS.get(spec.call, ()):
            path = f"$.{field}"
            missing = violation(Code.MISSING_REQUIRED.value, path, "a string (required)", "absent")
            lines += [
                f"value = get({field!r})",
                "if value is None or value == '':",
                f"    viol.append({gen.const(missing, 'v')})",
                "elif type(value) is not str:",
                f"    viol.append(_violation(C_WRONG_TYPE, {path!r}, 'string', _describe(value)))",
            ]
        return lines

    def compile(self, spec: EventSpec | None, container: str) -> tuple[EventFn, str]:
        """The function for the planned event `spec`, or for unplanned calls (`spec` None)
        whose properties are in `container`: "properties", "traits", "context.traits" (an
        identify call that sends its traits in its context) or "" (alias calls: none)."""
        gen = _Generator(self.pii)
        gen.namespace.update(self.shared)
        in_context = container == "context.traits"
        loc: tuple[str, ...] = tuple(container.split(".")) if container else ("properties",)
        gen.namespace.update(
            _SPEC=spec,
            _modes={},
            _PLANNED=spec is not None,
            _CONTAINER=container or "properties",
            _CONTAINER_PATH=f"$.{container}",
        )
        if not container:
            fetch = ["raw = None"]
        elif in_context:
            fetch = ['raw = context.get("traits") if context is not None else None']
        else:
            fetch = ["raw = get(_CONTAINER)"]
        if spec is None:
            unplanned = _clip(f"an event of plan {self.plan.name!r}")
            event = [
                f"viol.append(_violation(C_UNPLANNED_EVENT, '$', {gen.const(unplanned, 'e')}, "
                "_clip(f'{call} {key!r}')))"
            ]
            gen.emit(0, f"if p: _scan(p, '$.{container}', {loc!r}, viol, strip)")
        else:
            event = self._call_fields(spec, gen)
            root = _Path((f"$.{container}",), loc)
            if container:
                gen.fields(spec.properties, spec.allow_unplanned_properties, "p", root, 0, 0)
        blocks = {
            "EVENT": event,
            "IDENTITY": self.identity,
            "CONTEXT": self.context_without_traits if in_context else self.context,
            "CONTAINER": fetch,
            "PROPERTIES": gen.lines or ["pass"],
            "STORE": (
                [  # normalised traits go back where they came from
                    "if p is not raw and p is not None:",
                    '    event["context"] = {**event["context"], "traits": p}',
                ]
                if in_context
                else []
            ),
        }
        template = _EVENT_TEMPLATE
        if in_context:  # the traits stay in `context`: no top-level container
            template = template.replace("            _CONTAINER: p,\n", "").replace(
                "            event[_CONTAINER] = p\n", "            pass\n"
            )
        out: list[str] = []
        for line in template.splitlines():
            marker = line.strip()
            if not marker.startswith("#@"):
                out.append(line)
                continue
            indent = line[: len(line) - len(line.lstrip())]
            name, *args = marker[2:].split()
            if name == "FORMAT":
                epoch, text = args
                body = _FORMAT_TEMPLATE.replace("EPOCH", epoch).replace("TEXT", text).splitlines()
            elif name == "PARSE":
                var, text, raw, path = args
                body = (
                    _PARSE_TEMPLATE.replace("TEXT", text)
                    .replace("RAW", raw)
                    .replace("VAR", var)
                    .replace("PATH", repr(path))
                    .splitlines()
                )
            else:
                body = blocks[name]
            out += [indent + part if part else part for part in body]
        source = "\n".join(out) + "\n"
        label = "unplanned calls" if spec is None else f"plan event {spec.call.value} {spec.name!r}"
        exec(compile(source, f"<{label}>", "exec"), gen.namespace)
        return gen.namespace["check"], source


__all__ = ["EventCompiler", "EventFn"]
