"""Import JSON Schema (draft 7 / 2020-12 subset) into a tracking plan.

Accepted documents:
- one event schema: an object schema whose `properties` are the event's properties, or a
  Segment-style event schema whose `properties.properties` holds them (`title` is the event name);
- a bundle: `{"events": [{"name": ..., "description": ..., "rules": <schema>}, ...]}` (also under
  a top-level `"rules"`, as tracking-plan exports do), or `{"events": {"<name>": <schema>}}`; an
  `identify` (or `traits`) schema becomes the plan's traits.

Supported keywords: type (a list with "null" means nullable), required, enum, const, pattern,
minimum/maximum, exclusiveMinimum/exclusiveMaximum, minLength/maxLength, minItems/maxItems,
items, properties, additionalProperties, format (date-time → timestamp; email, uri), default,
description, and `$ref` to `#/...` in the same document (`$defs`, `definitions`). Every other
keyword is reported as a warning with its JSON pointer, never dropped silently.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from tracking_plan.loader import (
    MAX_DEPTH,
    MAX_PLAN_BYTES,
    PlanError,
    PlanProblem,
    parse_plan,
)
from tracking_plan.model import CallType, EventSpec, Plan, PropertySpec, PropType, event_key
from tracking_plan.plan_dump import dump_plan
from tracking_plan.plan_values import type_accepts, value_problems
from tracking_plan.plan_yaml import printable

_TYPES = {
    "string": PropType.STRING,
    "number": PropType.NUMBER,
    "integer": PropType.INTEGER,
    "boolean": PropType.BOOLEAN,
    "object": PropType.OBJECT,
    "array": PropType.ARRAY,
}
_FORMATS = {"email": "email", "uri": "uri", "currency": "currency"}
# Annotations with no effect on validation: ignored without a warning.
_QUIET = {
    "$schema", "$id", "$comment", "$defs", "definitions", "title", "examples", "readOnly",
    "writeOnly", "deprecated", "$anchor", "id",
}  # fmt: skip
_KNOWN = {
    "type", "required", "enum", "const", "pattern", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems", "items", "properties",
    "additionalProperties", "format", "default", "description", "$ref", "anyOf", "oneOf",
}  # fmt: skip


_DEFAULT_NAME = "Imported plan"


@dataclass
class ImportResult:
    """The imported plan and every warning (unsupported keyword, approximation) with its pointer."""

    plan: Plan
    warnings: list[str] = field(default_factory=list)

    def to_yaml(self) -> str:
        return dump_plan(self.plan)


def _pointer(parts: tuple[str | int, ...]) -> str:
    escaped = (str(p).replace("~", "~0").replace("/", "~1") for p in parts)
    return printable("/" + "/".join(escaped) if parts else "/", 200)


class _Importer:
    def __init__(self, root: Any, source: str) -> None:
        self.root = root
        self.source = source
        self.warnings: list[str] = []
        self.problems: list[PlanProblem] = []

    def warn(self, at: tuple[str | int, ...], message: str) -> None:
        self.warnings.append(f"{_pointer(at)}: {printable(message, 300)}")

    def fail(self, at: tuple[str | int, ...], message: str, hint: str = "") -> None:
        text = f"{_pointer(at)}: {printable(message, 300)}"
        self.problems.append(PlanProblem(self.source, None, None, text, hint))

    # -- $ref ---------------------------------------------------------------------------------

    def resolve(
        self, schema: Any, at: tuple[str | int, ...], seen: frozenset[str]
    ) -> tuple[Any, tuple[str | int, ...], frozenset[str]]:
        """Follow `$ref` chains to local definitions; other keywords next to `$ref` are warned."""
        while isinstance(schema, dict) and "$ref" in schema:
            ref = schema["$ref"]
            extra = sorted(k for k in schema if k not in ("$ref", "description", *_QUIET))
            if extra:
                self.warn(at, f"keywords next to $ref are ignored: {', '.join(extra)}")
            if not isinstance(ref, str) or not ref.startswith("#"):
                self.warn(at, f"$ref {ref!r} is not local to this document; imported as any")
                return {}, at, seen
            if ref in seen:
                self.warn(at, f"$ref {ref!r} is recursive; imported as any")
                return {}, at, seen
            target: Any = self.root
            path: tuple[str | int, ...] = ()
            for raw in [p for p in ref[1:].split("/") if p]:
                part = raw.replace("~1", "/").replace("~0", "~")
                if isinstance(target, dict) and part in target:
                    target = target[part]
                elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                    target = target[int(part)]
                else:
                    self.fail(at, f"$ref {ref!r} points nowhere", "fix the reference")
                    return {}, at, seen
                path += (part,)
            schema, at, seen = target, path, seen | {ref}
        return schema, at, seen

    # -- properties ---------------------------------------------------------------------------

    def property(
        self,
        name: str,
        schema: Any,
        at: tuple[str | int, ...],
        required: bool,
        depth: int,
        seen: frozenset[str] = frozenset(),
    ) -> PropertySpec:
        if depth > MAX_DEPTH:
            self.fail(at, f"schema nested deeper than {MAX_DEPTH} levels", "flatten it")
            return PropertySpec(name=name)
        own_description = schema.get("description") if isinstance(schema, dict) else None
        if not isinstance(own_description, str):
            own_description = None
        schema, at, seen = self.resolve(schema, at, seen)
        if schema is True or schema == {}:
            return PropertySpec(name=name, required=required, description=own_description or "")
        if not isinstance(schema, dict):
            self.fail(at, f"a schema must be an object or true, found {type(schema).__name__}")
            return PropertySpec(name=name)
        spec: dict[str, Any] = {"name": name, "required": required}
        schema = self.simplify_union(schema, at, spec)
        for key in schema:
            if key not in _KNOWN and key not in _QUIET:
                self.warn((*at, key), f"keyword {key!r} is not supported; dropped")

        kind = self.type(schema.get("type"), at, spec)
        fmt = schema.get("format")
        if fmt is not None:
            if fmt == "date-time" and kind in (PropType.STRING, PropType.ANY):
                kind = PropType.TIMESTAMP
            elif fmt in _FORMATS and kind in (PropType.STRING, PropType.ANY):
                spec["format"] = _FORMATS[fmt]
            else:
                self.warn((*at, "format"), f"format {fmt!r} is not supported; dropped")
        spec["type"] = kind

        if isinstance(own_description, str):  # a description next to $ref wins
            spec["description"] = own_description
        elif isinstance(schema.get("description"), str):
            spec["description"] = schema["description"]
        elif isinstance(schema.get("title"), str):
            spec["description"] = schema["title"]
        self.enum(schema, at, spec, kind)
        if "pattern" in schema:
            pattern = schema["pattern"]
            try:
                if not isinstance(pattern, str):
                    raise re.error("not a string")
                re.compile(pattern)
                if kind not in (PropType.STRING, PropType.ANY):
                    self.warn((*at, "pattern"), f"pattern on type {kind.value} is not supported")
                else:
                    spec["pattern"] = pattern
            except (re.error, RecursionError, OverflowError) as exc:
                self.warn((*at, "pattern"), f"pattern is not a valid Python regex ({exc}); dropped")
        self.bounds(schema, at, spec, kind)

        if kind is PropType.ARRAY and "items" in schema:
            items = schema["items"]
            if isinstance(items, dict | bool):
                spec["items"] = self.property(
                    "items", items, (*at, "items"), False, depth + 1, seen
                )
            else:
                self.warn((*at, "items"), "tuple validation (a list of schemas) is not supported")
        elif "items" in schema:
            self.warn((*at, "items"), "items without type array; dropped")
        if "properties" in schema or "additionalProperties" in schema:
            if kind is PropType.OBJECT:
                spec["properties"], allow = self.fields(schema, at, depth, seen)
                spec["additional_properties"] = allow
            else:
                self.warn((*at, "properties"), "properties without type object; dropped")
        prop = PropertySpec(**spec)
        if "default" in schema:
            problems = value_problems(prop, schema["default"])
            if problems:
                self.fail((*at, "default"), f"default {problems[0]}", "fix the default")
            else:
                prop = replace(prop, default=schema["default"], has_default=True)
        return prop

    def simplify_union(
        self, schema: dict[str, Any], at: tuple[str | int, ...], spec: dict[str, Any]
    ) -> dict[str, Any]:
        """`anyOf`/`oneOf` of one schema and `{"type": "null"}` is that schema, nullable."""
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if options is None:
                continue
            if isinstance(options, list):
                rest = [o for o in options if o != {"type": "null"}]
                if len(rest) == 1 and len(options) == 2 and isinstance(rest[0], dict):
                    spec["nullable"] = True
                    merged = {k: v for k, v in schema.items() if k != key}
                    resolved, _, _ = self.resolve(rest[0], (*at, key), frozenset())
                    if isinstance(resolved, dict):
                        return {**resolved, **merged}
            self.warn((*at, key), f"{key} is not supported; imported as any")
            return {k: v for k, v in schema.items() if k not in (key, "type")}
        return schema

    def type(self, value: Any, at: tuple[str | int, ...], spec: dict[str, Any]) -> PropType:
        if value is None:
            return PropType.ANY
        names = value if isinstance(value, list) else [value]
        if not all(isinstance(n, str) for n in names):
            self.fail((*at, "type"), f"type must be a name or a list of names, found {value!r}")
            return PropType.ANY
        if "null" in names:
            spec["nullable"] = True
        kinds = [n for n in names if n != "null"]
        unknown = [n for n in kinds if n not in _TYPES]
        if unknown:
            self.fail((*at, "type"), f"unknown type {unknown[0]!r}", "use a JSON Schema type")
            return PropType.ANY
        if len(kinds) == 1:
            return _TYPES[kinds[0]]
        if set(kinds) == {"integer", "number"}:
            return PropType.NUMBER
        if kinds:
            self.warn((*at, "type"), f"union type {kinds} imported as any")
        return PropType.ANY

    def enum(
        self,
        schema: dict[str, Any],
        at: tuple[str | int, ...],
        spec: dict[str, Any],
        kind: PropType,
    ) -> None:
        values: list[Any] | None = None
        if "const" in schema:
            values = [schema["const"]]
        if "enum" in schema:
            if not isinstance(schema["enum"], list) or not schema["enum"]:
                self.fail((*at, "enum"), "enum must be a non-empty list")
                return
            values = [v for v in schema["enum"] if values is None or v in values]
        if values is None:
            return
        if None in values:
            spec["nullable"] = True
            values = [v for v in values if v is not None]
        if any(isinstance(v, dict | list) for v in values):
            self.warn((*at, "enum"), "enum of objects or lists is not supported; dropped")
            return
        if kind in (PropType.OBJECT, PropType.ARRAY, PropType.TIMESTAMP):
            self.warn((*at, "enum"), f"enum on type {kind.value} is not supported; dropped")
            return
        wrong = [v for v in values if not type_accepts(kind, v)]
        if wrong:
            self.fail((*at, "enum"), f"enum value {wrong[0]!r} is not of type {kind.value}")
            return
        if values:
            spec["enum"] = tuple(values)

    def bounds(
        self,
        schema: dict[str, Any],
        at: tuple[str | int, ...],
        spec: dict[str, Any],
        kind: PropType,
    ) -> None:
        def number(key: str) -> float | None:
            value = schema.get(key)
            if value is None or isinstance(value, bool):
                return None
            if not isinstance(value, int | float) or not math.isfinite(value):
                self.warn((*at, key), f"{key} must be a finite number; dropped")
                return None
            return value

        low, high = number("minimum"), number("maximum")
        for key, is_low in (("exclusiveMinimum", True), ("exclusiveMaximum", False)):
            raw = schema.get(key)
            base = low if is_low else high
            if raw is True and base is not None:  # draft 4: a flag on minimum/maximum
                value: float | None = base
            else:
                value = number(key)
            if value is None:
                continue
            if kind is PropType.INTEGER:
                value = math.floor(value) + 1 if is_low else math.ceil(value) - 1
            else:
                self.warn((*at, key), f"{key} {value} imported as inclusive")
            if is_low:
                low = value if low is None else max(low, value)
            else:
                high = value if high is None else min(high, value)
        if kind is PropType.STRING:
            if "minimum" in schema or "maximum" in schema:
                self.warn(at, "minimum/maximum on a string are ignored")
                low = high = None
            low = number("minLength") if "minLength" in schema else low
            if "maxLength" in schema:
                length = number("maxLength")
                spec["max_length"] = int(length) if length is not None else None
        elif kind is PropType.ARRAY:
            low, high = number("minItems"), number("maxItems")
        else:
            for key in ("minLength", "maxLength", "minItems", "maxItems"):
                if key in schema:
                    self.warn((*at, key), f"{key} on type {kind.value} is not supported; dropped")
        if (low is not None or high is not None) and kind in (
            PropType.BOOLEAN,
            PropType.OBJECT,
            PropType.TIMESTAMP,
        ):
            self.warn(at, f"bounds on type {kind.value} are not supported; dropped")
            return
        if low is not None and high is not None and low > high:
            self.fail(at, f"lower bound {low} is above upper bound {high}")
            return
        spec["minimum"], spec["maximum"] = low, high

    def fields(
        self, schema: dict[str, Any], at: tuple[str | int, ...], depth: int, seen: frozenset[str]
    ) -> tuple[tuple[PropertySpec, ...], bool]:
        """Nested properties of an object schema, and whether unlisted fields are allowed."""
        props = schema.get("properties", {})
        required = schema.get("required", [])
        if not isinstance(props, dict):
            self.fail((*at, "properties"), "properties must be an object")
            props = {}
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            self.fail((*at, "required"), "required must be a list of names")
            required = []
        for name in required:
            if name not in props:
                self.warn((*at, "required"), f"{name!r} is required but not described; any type")
        out = [
            self.property(name, sub, (*at, "properties", name), name in required, depth + 1, seen)
            for name, sub in props.items()
        ]
        out += [PropertySpec(name=n, required=True) for n in required if n not in props]
        extra = schema.get("additionalProperties", True)
        if isinstance(extra, dict) and extra:
            self.warn((*at, "additionalProperties"), "a schema for extra fields is not supported")
        return tuple(out), extra is not False

    # -- events -------------------------------------------------------------------------------

    def event(
        self, name: Any, call: CallType, schema: Any, at: tuple[str | int, ...]
    ) -> EventSpec | None:
        if not isinstance(name, str) or not name.strip():
            self.fail(at, "event has no name", "give the schema a `title` or the entry a `name`")
            return None
        schema, at, seen = self.resolve(schema, at, frozenset())
        if not isinstance(schema, dict):
            self.fail(at, f"schema of {name!r} must be an object")
            return None
        description = (
            schema.get("description") if isinstance(schema.get("description"), str) else ""
        )
        body, body_at = schema, at
        inner = schema.get("properties", {})
        key = "traits" if call is CallType.IDENTIFY else "properties"
        if isinstance(inner, dict) and isinstance(inner.get(key), dict):  # Segment-style envelope
            for other in sorted(set(inner) - {key}):
                self.warn((*at, "properties", other), f"envelope field {other!r} is not imported")
            body, body_at, seen = self.resolve(inner[key], (*at, "properties", key), seen)
            if not isinstance(body, dict):
                self.fail(body_at, "event properties must be an object schema")
                return None
        event_keys = {"type", "properties", "required", "additionalProperties", "description"}
        for k in sorted(set(body) - event_keys - _QUIET):
            self.warn((*body_at, k), f"keyword {k!r} on an event is not supported; dropped")
        props, allow = self.fields(body, body_at, 1, seen)
        return EventSpec(
            name="" if call is CallType.IDENTIFY else name,
            call=call,
            description=description,
            properties=props,
            allow_unplanned_properties=allow,
        )


def _events_of(imp: _Importer, doc: dict[str, Any], fallback: str | None) -> list[EventSpec]:
    """The events of a bundle, or of a single event schema."""
    rules = doc.get("rules") if isinstance(doc.get("rules"), dict) else doc
    base: tuple[str | int, ...] = ("rules",) if rules is not doc else ()
    out: list[EventSpec | None] = []
    events = rules.get("events")
    if isinstance(events, list):
        for i, entry in enumerate(events):
            at = (*base, "events", i)
            if not isinstance(entry, dict):
                imp.fail(at, "an event entry must be an object with name and rules")
                continue
            schema = entry.get("rules", entry.get("schema", {}))
            spec = imp.event(entry.get("name"), CallType.TRACK, schema, (*at, "rules"))
            if (
                spec is not None
                and not spec.description
                and isinstance(entry.get("description"), str)
            ):
                spec = replace(spec, description=entry["description"])
            out.append(spec)
    elif isinstance(events, dict):
        for name, schema in events.items():
            out.append(imp.event(name, CallType.TRACK, schema, (*base, "events", name)))
    elif events is not None:
        imp.fail((*base, "events"), "events must be a list or an object")
    else:
        name = doc.get("title") if isinstance(doc.get("title"), str) else fallback
        return [e for e in [imp.event(name, CallType.TRACK, doc, ())] if e is not None]
    for key in ("identify", "traits"):
        if isinstance(rules.get(key), dict):
            out.append(imp.event("identify", CallType.IDENTIFY, rules[key], (*base, key)))
    for key in sorted(set(rules) - {"events", "identify", "traits", "global", "group", *_QUIET}):
        if key not in ("name", "display_name", "version", "description"):
            imp.warn((*base, key), f"bundle field {key!r} is not imported")
    for key in ("global", "group"):
        if key in rules:
            imp.warn((*base, key), f"{key} rules are not supported; dropped")
    return [e for e in out if e is not None]


def import_json_schema(
    document: Any,
    *,
    name: str | None = None,
    version: str = "1",
    source: str = "<schema>",
    event_name: str | None = None,
) -> ImportResult:
    """A plan from a parsed JSON Schema document (one event, or a bundle of events).

    `event_name` names a single-event schema that has no `title`.

    Raises `PlanError` when the document cannot become a plan (no event name, bad `$ref`,
    contradictory bounds); merely unsupported keywords become warnings.
    """
    imp = _Importer(document, source)
    if not isinstance(document, dict):
        raise PlanError(
            [PlanProblem(source, None, None, "a JSON Schema document must be an object")]
        )
    try:
        events = _events_of(imp, document, event_name)
    except RecursionError:
        raise PlanError([PlanProblem(source, None, None, "schema is nested too deeply")]) from None
    keyed: dict[str, EventSpec] = {}
    for event in events:
        key = event_key(event.call, event.name or None)
        if key in keyed:
            imp.fail((), f"event {key!r} is defined twice", "keep one definition")
        keyed[key] = event
    if not keyed and not imp.problems:
        imp.fail((), "no event found", 'give one event schema a "title", or list "events"')
    if imp.problems:
        raise PlanError(imp.problems)
    plan_name = name or next(
        (document[k] for k in ("name", "display_name") if isinstance(document.get(k), str)),
        _DEFAULT_NAME,
    )
    plan = Plan(name=plan_name, version=version, events=keyed)
    try:  # the loader's checks (names, regexes, defaults) apply to imported plans too
        checked = parse_plan(dump_plan(plan), f"{source} (as YAML)")
    except yaml.YAMLError as exc:
        raise PlanError([PlanProblem(source, None, None, f"cannot write as YAML: {exc}")]) from None
    return ImportResult(plan=replace(checked, path=None), warnings=imp.warnings)


def parse_json_schema(text: str | bytes, source: str = "<schema>", **kwargs: Any) -> ImportResult:
    """Parse JSON text and import it; JSON syntax errors carry line and column."""
    if len(text) > MAX_PLAN_BYTES:
        raise PlanError(
            [PlanProblem(source, 1, 1, f"schema is larger than {MAX_PLAN_BYTES} bytes")]
        )
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PlanError(
                [
                    PlanProblem(
                        source, None, None, f"byte {exc.start} is not valid UTF-8", "save as UTF-8"
                    )
                ]
            ) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(
            [PlanProblem(source, exc.lineno, exc.colno, f"invalid JSON: {exc.msg}")]
        ) from None
    except RecursionError:
        raise PlanError([PlanProblem(source, 1, 1, "JSON nested too deeply")]) from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise PlanError([PlanProblem(source, None, None, f"invalid JSON: {exc}")]) from None
    return import_json_schema(document, source=source, **kwargs)


def load_json_schema(path: str | Path, **kwargs: Any) -> ImportResult:
    """Read a JSON Schema file and import it; problems raise `PlanError`."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise PlanError(
            [PlanProblem(str(path), None, None, f"cannot read schema: {exc.strerror or exc}")]
        ) from None
    kwargs.setdefault("event_name", Path(path).name.split(".")[0])
    return parse_json_schema(data, str(path), **kwargs)


def load_json_schemas(
    paths: Iterable[str | Path], *, name: str | None = None, version: str = "1"
) -> ImportResult:
    """Import several schema files into one plan (a directory means every `*.json` in it).

    Each file is one event schema or a bundle; warnings are prefixed with their file. An event
    defined in two files is an error.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        files += sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise PlanError([PlanProblem(", ".join(map(str, paths)), None, None, "no .json files")])
    events: dict[str, EventSpec] = {}
    origin: dict[str, Path] = {}
    warnings: list[str] = []
    problems: list[PlanProblem] = []
    plan_name = name
    for file in files:
        try:
            result = load_json_schema(file, name=name, version=version)
        except PlanError as exc:
            problems += exc.problems
            continue
        warnings += [f"{file}: {w}" for w in result.warnings]
        if plan_name is None and result.plan.name != _DEFAULT_NAME:
            plan_name = result.plan.name
        for key, event in result.plan.events.items():
            if key in events:
                message = f"event {key!r} is also defined in {origin[key]}"
                problems.append(PlanProblem(str(file), None, None, message, "keep one definition"))
            else:
                events[key], origin[key] = event, file
    if problems:
        raise PlanError(problems)
    plan = Plan(name=plan_name or _DEFAULT_NAME, version=version, events=events)
    return ImportResult(plan=plan, warnings=warnings)
