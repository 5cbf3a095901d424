"""Compiles the property specs of one event to a specialised Python function.

For each planned event the plan's property tree is turned into straight-line Python source
(one `if` chain per property, constants and compiled regexes bound as globals, violations with
static paths pre-built) and `exec`-ed once. The generated function has the signature

    check(p, viol, strip, latest) -> None

`p` is the event's `properties` (or `traits`) dict, already copied by the caller so that it may
be normalised in place (defaults filled, currency codes upper-cased, timestamps formatted);
nested containers are copied before they are changed. Every violation is appended to `viol`;
the locations of PII keys and unplanned properties go to `strip` as `(kind, keys)` so that the
caller can remove them from a forwarded event. `latest` is the latest plausible epoch for
timestamp properties (reception time + 1 day).

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

from tracking_plan.model import EventSpec, PropertySpec, PropType
from tracking_plan.normalise import MIN_EPOCH, format_timestamp, normalise_currency, parse_timestamp
from tracking_plan.validator_support import REDACTED, PiiDetector, describe, key_path, violation
from tracking_plan.violations import Code, Violation

CheckFn = Callable[
    [dict[str, Any], list[Violation], list[tuple[str, tuple[Any, ...]]], float], None
]

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


def writes_properties(event: EventSpec) -> bool:
    """Does the generated check write into the event's properties dict (so that the caller
    must pass a copy)?"""
    return any(spec.has_default or _needs_copy(spec) for spec in event.properties)


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
            "_isfinite": math.isfinite,
            "_enum_ok": _enum_ok,
            "_deepcopy": copy.deepcopy,
            "_scan": pii.scan,
            "_unknown": self._unknown_fn(pii),
            "_MIN_EPOCH": MIN_EPOCH,
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
                    viol.append(
                        violation(Code.UNPLANNED_PROPERTY.value, where, expected, describe(value))
                    )
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
        value = f"v{depth}"
        name = repr(spec.name)
        self.emit(indent, f"{value} = {var}.get({name}, _MISSING)")
        self.emit(indent, f"if {value} is _MISSING:")
        if spec.has_default:
            default = spec.default
            if isinstance(default, dict | list):
                self.emit(indent + 1, f"{var}[{name}] = _deepcopy({self.const(default, 'd')})")
            else:
                self.emit(indent + 1, f"{var}[{name}] = {self.const(default, 'd')}")
        elif spec.required:
            self.report(
                indent + 1, Code.MISSING_REQUIRED, path, f"{_type_text(spec)} (required)", None
            )
        else:
            self.emit(indent + 1, "pass")
        self.emit(indent, f"elif {value} is None:")
        if spec.nullable:
            self.emit(indent + 1, "pass")
        else:
            got = repr("null")
            self.report(indent + 1, Code.NOT_NULLABLE, path, f"{_type_text(spec)}, not null", got)
        self.emit(indent, "else:")
        self.value(spec, value, f"{var}[{name}]", path, indent + 1, depth)

    # -- values --------------------------------------------------------------------------------

    def value(
        self, spec: PropertySpec, v: str, target: str, path: _Path, indent: int, depth: int
    ) -> None:
        got = repr(REDACTED) if spec.pii else f"_describe({v})"
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
        self.emit(indent + 1, f"{target} = _format_ts({epoch})")

    def string(
        self, spec: PropertySpec, v: str, target: str, path: _Path, got: str, indent: int
    ) -> None:
        self.emit(indent, f"if type({v}) is str:")
        body = indent + 1
        self.emit(body, "pass")
        if spec.format == "currency":
            self.emit(body, f"c = _currency({v})")
            self.emit(body, "if c is None:")
            self.report(body + 1, Code.BAD_CURRENCY, path, "an ISO 4217 currency code", got)
            self.emit(body, f"elif c is not {v}:")
            self.emit(body + 1, f"{target} = {v} = c")
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
                self.emit(body, f"{target} = {v}")
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
                self.emit(body, f"{target} = {v}")
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


def compile_properties(event: EventSpec, container: str, pii: PiiDetector) -> tuple[CheckFn, str]:
    """The specialised `check` function of `event` and its generated source (for debugging)."""
    gen = _Generator(pii)
    gen.emit(0, "def check(p, viol, strip, latest):")
    root = _Path((f"$.{container}",), (container,))
    gen.fields(event.properties, event.allow_unplanned_properties, "p", root, 1, 0)
    source = "\n".join(gen.lines) + "\n"
    code = compile(source, f"<plan event {event.name!r}>", "exec")
    exec(code, gen.namespace)
    return gen.namespace["check"], source


__all__ = ["CheckFn", "compile_properties", "writes_properties"]
