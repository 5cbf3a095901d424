"""Read a YAML tracking plan into a `Plan`, reporting every mistake with file, line, column and fix.

The plan is parsed into a node tree that keeps line/column marks (`tracking_plan.plan_yaml`,
which refuses hostile files early: too large, too deep, aliases, custom tags) and checked part by
part here through a `PlanReader` (`tracking_plan.plan_nodes`), so that one run reports ALL
problems, not only the first. Defaults are checked with `tracking_plan.plan_values`; the plan is
written back by `tracking_plan.plan_dump`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from tracking_plan.model import (
    BUILTIN_SETS,
    MAX_UNIQUE_SECONDS,
    CallType,
    EventSpec,
    Funnel,
    Identity,
    Mode,
    Plan,
    PropertySpec,
    PropType,
    SourceSpec,
    Status,
    UniqueKey,
    event_key,
    format_duration,
    parse_duration,
    unnamed_view,
)
from tracking_plan.plan_nodes import PlanReader, choices_hint, node_kind, suggest
from tracking_plan.plan_values import type_accepts, value_problems
from tracking_plan.plan_yaml import (
    MAX_DEPTH,
    MAX_PLAN_BYTES,
    NULL_TAG,
    PlanError,
    PlanProblem,
    compose_plan,
    printable,
)

__all__ = ["MAX_DEPTH", "MAX_PLAN_BYTES", "PlanError", "PlanProblem", "load_plan", "parse_plan"]

FORMATS = ("currency", "email", "uri", "date-time")

# ----------------------------------------------------------------------------------- plan parts

PROPERTY_KEYS = (
    "type",
    "required",
    "nullable",
    "enum",
    "pattern",
    "min",
    "max",
    "max_length",
    "format",
    "default",
    "items",
    "properties",
    "additional_properties",
    "description",
    "pii",
    "unique",
)
EVENT_KEYS = (
    "description",
    "owner",
    "status",
    "sources",
    "mode",
    "properties",
    "allow_unplanned_properties",
    "unique",
)
TOP_KEYS = (
    "plan",
    "version",
    "defaults",
    "context",
    "pii",
    "sources",
    "funnels",
    "events",
    "pages",
    "screens",
    "traits",
    "group",
    "alias",
    "builtins",
)
ALIAS_KEYS = ("description", "owner", "status", "sources", "mode")  # alias calls: no properties
SOURCE_KEYS = ("platform", "mode", "description")
PROPERTY_KEY_KEYS = ("within", "mode")  # `unique: {within: 24h, mode: block}` on a property
EVENT_KEY_KEYS = ("keys", "within", "mode")  # `unique: {keys: [a, b], within: 24h}` on an event
KEY_TYPES = (PropType.STRING, PropType.INTEGER)  # the types a business key property may have
_DURATION_HINT = "write a whole number and a unit (s, m, h or d), e.g. 24h"
FUNNEL_KEYS = ("name", "steps", "window_minutes")
_RANGE_TYPES = (PropType.NUMBER, PropType.INTEGER, PropType.STRING, PropType.ARRAY, PropType.ANY)
_ENUM_TYPES = (
    PropType.STRING,
    PropType.NUMBER,
    PropType.INTEGER,
    PropType.BOOLEAN,
    PropType.ANY,
)


def _property(
    ctx: PlanReader,
    name: str,
    node: Node,
    where: str,
    line: int | None = None,
    *,
    top: bool = False,
) -> PropertySpec | None:
    """One property; `line` is where its name is written (defaults to its value's line); `top`:
    a top-level property of an event (the only place a business key may be declared)."""
    what = f"property `{printable(name)}` of {where}"
    line = line or node.start_mark.line + 1
    if isinstance(node, ScalarNode) and node.tag != NULL_TAG:  # shorthand: `name: string`
        kind = ctx.choice(node, f"type of {what}", PropType)
        if kind is None:
            return None
        return PropertySpec(name=name, type=kind, line=line)
    if isinstance(node, ScalarNode):  # `name:` with nothing: any value
        return PropertySpec(name=name, line=line)
    fields = ctx.fields(node, what, PROPERTY_KEYS)
    if fields is None:
        return None
    n_before = len(ctx.problems)
    spec: dict[str, Any] = {"name": name, "line": line}
    kind = PropType.ANY
    if "type" in fields:
        kind = ctx.choice(fields["type"], f"type of {what}", PropType) or PropType.ANY
    spec["type"] = kind
    for key in ("required", "nullable", "pii", "additional_properties"):
        if key in fields:
            value = ctx.boolean(fields[key], f"`{key}` of {what}")
            if value is not None:
                spec[key] = value
    if "description" in fields:
        spec["description"] = ctx.text(fields["description"], f"description of {what}") or ""

    if "enum" in fields:
        enum_node = fields["enum"]
        if kind not in _ENUM_TYPES:
            ctx.add(enum_node, f"enum is not supported for type {kind.value} ({what})", "remove it")
        else:
            values = _enum(ctx, enum_node, kind, bool(spec.get("nullable")), what)
            if values is not None:
                spec["enum"] = values

    if "pattern" in fields:
        pattern_node = fields["pattern"]
        pattern = ctx.text(pattern_node, f"pattern of {what}")
        if kind not in (PropType.STRING, PropType.ANY):
            ctx.add(
                pattern_node,
                f"pattern only applies to strings, {what} is {kind.value}",
                "remove it or set type: string",
            )
        elif pattern is not None:
            try:
                re.compile(pattern)
                spec["pattern"] = pattern
            except (re.error, RecursionError, OverflowError) as exc:
                ctx.add(
                    pattern_node,
                    f"invalid regular expression for {what}: {printable(str(exc), 60)}",
                    "fix the pattern: Python `re` syntax, quoted in YAML",
                )

    for key, attr in (("min", "minimum"), ("max", "maximum")):
        if key in fields:
            if kind not in _RANGE_TYPES:
                ctx.add(
                    fields[key],
                    f"`{key}` does not apply to type {kind.value} ({what})",
                    "remove it",
                )
                continue
            value = ctx.number(fields[key], f"`{key}` of {what}")
            if value is not None:
                spec[attr] = value
    low, high = spec.get("minimum"), spec.get("maximum")
    if low is not None and high is not None and low > high:
        ctx.add(fields["min"], f"min {low} is greater than max {high} ({what})", "swap them")
    if "max_length" in fields:
        if kind not in (PropType.STRING, PropType.ANY):
            ctx.add(fields["max_length"], f"max_length only applies to strings ({what})", "use max")
        else:
            value = ctx.integer(fields["max_length"], f"max_length of {what}")
            if value is not None:
                spec["max_length"] = value
    if "format" in fields:
        fmt = ctx.text(fields["format"], f"format of {what}")
        if fmt is not None and fmt not in FORMATS:
            ctx.add(
                fields["format"],
                f"unknown format `{printable(fmt)}` ({what})",
                choices_hint(fmt, FORMATS),
            )
        elif fmt is not None and kind not in (PropType.STRING, PropType.TIMESTAMP, PropType.ANY):
            ctx.add(
                fields["format"],
                f"format applies to strings, {what} is {kind.value}",
                "remove it or set type: string",
            )
        elif fmt is not None:
            spec["format"] = fmt

    if "items" in fields:
        if kind is not PropType.ARRAY:
            ctx.add(
                fields["items"], f"`items` only applies to type array ({what})", "set type: array"
            )
        else:
            items_line = ctx.key_lines[id(fields["items"])]
            items = _property(ctx, "items", fields["items"], f"{where}, {name}[]", items_line)
            if items is not None:
                spec["items"] = items
    if "properties" in fields:
        if kind is not PropType.OBJECT:
            ctx.add(
                fields["properties"],
                f"`properties` only applies to type object ({what})",
                "set type: object",
            )
        else:
            spec["properties"] = _properties(ctx, fields["properties"], f"{where}, {name}")
    if "additional_properties" in fields and kind is not PropType.OBJECT:
        ctx.add(
            fields["additional_properties"],
            f"`additional_properties` only applies to type object ({what})",
            "remove it or set type: object",
        )

    if "default" in fields:
        ok, default = ctx.value(fields["default"], f"default of {what}")
        if ok:
            spec["default"] = default
            spec["has_default"] = True
    if "unique" in fields:
        unique_node = fields["unique"]
        if not top:
            ctx.add(
                unique_node,
                f"`unique` only applies to a top-level property of an event ({what} is nested)",
                "declare the key on a top-level property",
            )
        elif kind not in KEY_TYPES:
            ctx.add(
                unique_node,
                f"`unique` needs type string or integer, {what} is {kind.value}",
                "set type: string or type: integer",
            )
        elif "default" in fields:
            ctx.add(
                unique_node,
                f"`unique` and `default` together make every event without {what} a repeat",
                "remove the default",
            )
        else:
            key = _property_key(ctx, unique_node, name, what, ctx.key_lines[id(unique_node)])
            if key is not None:
                spec["unique"] = key
    if len(ctx.problems) > n_before:
        return None
    prop = PropertySpec(**spec)
    if prop.has_default:
        for problem in value_problems(prop, prop.default):
            ctx.add(
                fields["default"],
                f"default of {what} {problem}",
                "change the default or the rule it breaks",
            )
    return prop


def _enum(
    ctx: PlanReader, node: Node, kind: PropType, nullable: bool, what: str
) -> tuple[Any, ...] | None:
    nodes = ctx.items(node, f"enum of {what}")
    if nodes is None:
        return None
    if not nodes:
        ctx.add(node, f"enum of {what} is empty", "list the allowed values or remove enum")
        return None
    values: list[Any] = []
    good = True
    for item in nodes:
        ok, value = ctx.scalar(item, f"enum value of {what}")
        if not ok:
            good = False
            continue
        if value is None:
            if not nullable:
                ctx.add(
                    item, f"enum of {what} contains null", "add `nullable: true` or remove null"
                )
                good = False
            continue
        if not type_accepts(kind, value):
            hint = f"use a {kind.value}"
            if kind is PropType.STRING:
                read_as = type(value).__name__
                hint = f"quote it: '{printable(item.value)}'; YAML reads it as {read_as}"
            ctx.add(
                item, f"enum value `{printable(item.value)}` of {what} is not a {kind.value}", hint
            )
            good = False
            continue
        values.append(value)
    return tuple(values) if good else None


def _within(ctx: PlanReader, node: Node, what: str) -> float | None:
    """The horizon of a business key: a duration such as `24h` of at most 30 days."""
    ok, value = ctx.scalar(node, what)
    if not ok:
        return None
    if value is None:
        ctx.add(node, f"{what} is empty", _DURATION_HINT)
        return None
    if isinstance(value, bool) or not isinstance(value, str):
        unit_hint = (
            f"write e.g. {value}h, {value}m or {value}s"
            if isinstance(value, int) and not isinstance(value, bool) and value > 0
            else _DURATION_HINT
        )
        ctx.add(node, f"{what} must be a duration, found {node_kind(node)}", unit_hint)
        return None
    seconds = parse_duration(value)
    if seconds is None:
        ctx.add(node, f"{what} is `{printable(value)}`, which is not a duration", _DURATION_HINT)
        return None
    if seconds > MAX_UNIQUE_SECONDS:
        limit = format_duration(MAX_UNIQUE_SECONDS)
        ctx.add(
            node,
            f"{what} is {printable(value)}, longer than the {limit} a key is remembered",
            f"write at most {limit}",
        )
        return None
    return seconds


def _key_mode(ctx: PlanReader, node: Node, what: str) -> Mode | None:
    """The mode of a business key: flag (forward repeats with a violation) or block."""
    mode = ctx.choice(node, f"mode of {what}", Mode)
    if mode is Mode.OMIT:
        ctx.add(
            node,
            f"mode of {what} is `omit`, which does not apply to keys",
            "use flag (forward repeats with a duplicate_key violation) or block (quarantine them)",
        )
        return None
    return mode


def _property_key(
    ctx: PlanReader, node: Node, name: str, what: str, line: int | None
) -> UniqueKey | None:
    """`unique: 24h` or `unique: {within: 24h, mode: block}` of the property `name`."""
    key_what = f"`unique` of {what}"
    mode: Mode | None = Mode.FLAG
    if isinstance(node, MappingNode):
        fields = ctx.fields(node, key_what, PROPERTY_KEY_KEYS)
        if fields is None:
            return None
        if "within" not in fields:
            ctx.add(node, f"{key_what} has no `within`", "add e.g. `within: 24h`")
            return None
        seconds = _within(ctx, fields["within"], f"within of {key_what}")
        if "mode" in fields:
            mode = _key_mode(ctx, fields["mode"], key_what)
    else:
        seconds = _within(ctx, node, key_what)
    if seconds is None or mode is None:
        return None
    return UniqueKey(properties=(name,), within_seconds=seconds, mode=mode, line=line)


def _event_key(
    ctx: PlanReader, node: Node, props: tuple[PropertySpec, ...], declared: set[str], where: str
) -> UniqueKey | None:
    """`unique: {keys: [a, b], within: 24h, mode: flag}` of an event: a composite business
    key over top-level string/integer properties it plans (`declared`: every name written under
    its `properties`, also those with errors of their own, which are not reported again)."""
    what = f"`unique` of {where}"
    fields = ctx.fields(node, what, EVENT_KEY_KEYS)
    if fields is None:
        return None
    n_before = len(ctx.problems)
    for required, example in (("keys", "keys: [order_id]"), ("within", "within: 24h")):
        if required not in fields:
            ctx.add(node, f"{what} has no `{required}`", f"add e.g. `{example}`")
    by_name = {p.name: p for p in props}
    names: list[str] = []
    if "keys" in fields:
        listed = ctx.text_list(fields["keys"], f"keys of {what}")
        if isinstance(fields["keys"], SequenceNode) and not fields["keys"].value:
            ctx.add(fields["keys"], f"keys of {what} is empty", "list the key's properties")
        for key, item in listed:
            prop = by_name.get(key)
            if key in names:
                ctx.add(item, f"`{printable(key)}` is listed twice in keys of {what}", "remove one")
            elif prop is None and key not in declared:
                hint = suggest(key, by_name)
                plan_it = "plan it under the event's `properties` (type string or integer)"
                ctx.add(
                    item,
                    f"key `{printable(key)}` of {where} is not a planned property",
                    f"{hint} or {plan_it}" if hint else plan_it,
                )
            elif prop is not None and prop.type not in KEY_TYPES:
                ctx.add(
                    item,
                    f"key `{printable(key)}` of {where} is {prop.type.value}: "
                    "keys are strings or integers",
                    "set its type to string or integer, or leave it out of the key",
                )
            elif prop is not None and prop.has_default:
                ctx.add(
                    item,
                    f"key `{printable(key)}` of {where} has a default, which would make every "
                    "event without it a repeat",
                    "remove the default",
                )
            names.append(key)
        if len(names) == 1 and names[0] in by_name and by_name[names[0]].unique is not None:
            ctx.add(
                fields["keys"],
                f"`{printable(names[0])}` of {where} is already unique on its own",
                "keep one of the two declarations",
            )
    seconds = _within(ctx, fields["within"], f"within of {what}") if "within" in fields else None
    mode = _key_mode(ctx, fields["mode"], what) if "mode" in fields else Mode.FLAG
    if len(ctx.problems) > n_before or seconds is None or mode is None:
        return None
    line = ctx.key_lines[id(node)]
    return UniqueKey(properties=tuple(names), within_seconds=seconds, mode=mode, line=line)


def _properties(
    ctx: PlanReader, node: Node, where: str, *, top: bool = False
) -> tuple[PropertySpec, ...]:
    if isinstance(node, ScalarNode) and node.tag == NULL_TAG:
        return ()
    entries = ctx.entries(node, f"properties of {where}")
    out = []
    for name, key_node, value_node in entries or ():
        if not ctx.check_name(key_node, name, f"property name in {where}"):
            continue
        prop = _property(ctx, name, value_node, where, key_node.start_mark.line + 1, top=top)
        if prop is not None:
            out.append(prop)
    return tuple(out)


def _event(
    ctx: PlanReader,
    name: str,
    call: CallType,
    node: Node,
    sources: dict[str, SourceSpec] | None,
    where: str,
    line: int,
    allowed: tuple[str, ...] = EVENT_KEYS,
) -> EventSpec | None:
    if isinstance(node, ScalarNode) and node.tag == NULL_TAG:
        return EventSpec(name=name, call=call, line=line)
    fields = ctx.fields(node, where, allowed)
    if fields is None:
        return None
    spec: dict[str, Any] = {"name": name, "call": call, "line": line}
    for key in ("description", "owner"):
        if key in fields:
            spec[key] = ctx.text(fields[key], f"{key} of {where}") or ""
    if "status" in fields:
        status = ctx.choice(fields["status"], f"status of {where}", Status)
        if status is not None:
            spec["status"] = status
    if "mode" in fields:
        spec["mode"] = ctx.choice(fields["mode"], f"mode of {where}", Mode)
    if "allow_unplanned_properties" in fields:
        value = ctx.boolean(
            fields["allow_unplanned_properties"], f"allow_unplanned_properties of {where}"
        )
        spec["allow_unplanned_properties"] = bool(value)
    if "sources" in fields:
        listed = ctx.text_list(fields["sources"], f"sources of {where}")
        if isinstance(fields["sources"], SequenceNode) and not fields["sources"].value:
            ctx.add(
                fields["sources"],
                f"sources of {where} is empty",
                "remove `sources` to allow every source",
            )
        seen: set[str] = set()
        for source, item in listed:
            if source in seen:
                ctx.add(
                    item, f"source `{printable(source)}` is listed twice in {where}", "remove one"
                )
            elif sources is not None and source not in sources:
                hint = suggest(source, sources)
                hint = (
                    f"{hint} or declare it under `sources:`"
                    if hint
                    else "declare it under `sources:`"
                )
                ctx.add(item, f"source `{printable(source)}` of {where} is not declared", hint)
            seen.add(source)
        spec["sources"] = tuple(s for s, _ in listed)
    if "properties" in fields:
        spec["properties"] = _properties(ctx, fields["properties"], where, top=True)
    if "unique" in fields:
        props_node = fields.get("properties")
        declared = {
            key.value
            for key, _ in (props_node.value if isinstance(props_node, MappingNode) else ())
            if isinstance(key, ScalarNode)
        }
        props = spec.get("properties", ())
        spec["unique"] = _event_key(ctx, fields["unique"], props, declared, where)
    return EventSpec(**spec)


def _sources(ctx: PlanReader, node: Node) -> dict[str, SourceSpec]:
    out: dict[str, SourceSpec] = {}
    for name, key_node, value_node in ctx.entries(node, "sources") or ():
        if not ctx.check_name(key_node, name, "source name"):
            continue
        line = key_node.start_mark.line + 1
        if isinstance(value_node, ScalarNode) and value_node.tag == NULL_TAG:
            out[name] = SourceSpec(name=name, line=line)
            continue
        fields = ctx.fields(value_node, f"source `{printable(name)}`", SOURCE_KEYS)
        if fields is None:
            continue
        spec: dict[str, Any] = {"name": name, "line": line}
        if "platform" in fields:
            spec["platform"] = ctx.text(fields["platform"], f"platform of source `{name}`") or ""
        if "description" in fields:
            spec["description"] = (
                ctx.text(fields["description"], f"description of source `{name}`") or ""
            )
        if "mode" in fields:
            spec["mode"] = ctx.choice(fields["mode"], f"mode of source `{printable(name)}`", Mode)
        out[name] = SourceSpec(**spec)
    return out


def _funnels(ctx: PlanReader, node: Node) -> list[tuple[Funnel, list[tuple[str, Node]]]]:
    out = []
    names: dict[str, int] = {}
    for item in ctx.items(node, "funnels") or ():
        fields = ctx.fields(item, "a funnel", FUNNEL_KEYS)
        if fields is None:
            continue
        line = item.start_mark.line + 1
        if "name" not in fields:
            ctx.add(item, "funnel has no name", "add `name: <funnel name>`")
            continue
        name = ctx.text(fields["name"], "funnel name", name=True)
        if name is None:
            continue
        if name in names:
            ctx.add(
                fields["name"],
                f"funnel `{printable(name)}` is declared twice (first at line {names[name]})",
                "rename one",
            )
            continue
        names[name] = line
        steps = (
            ctx.text_list(fields["steps"], f"steps of funnel `{printable(name)}`")
            if "steps" in fields
            else []
        )
        if "steps" not in fields or len(steps) < 2:
            ctx.add(
                fields.get("steps", item),
                f"funnel `{printable(name)}` needs at least two steps",
                "list them under `steps:`",
            )
            continue
        window = 60
        if "window_minutes" in fields:
            window = (
                ctx.integer(
                    fields["window_minutes"], f"window_minutes of funnel `{printable(name)}`", 1
                )
                or 60
            )
        funnel = Funnel(
            name=name, steps=tuple(s for s, _ in steps), window_minutes=window, line=line
        )
        out.append((funnel, steps))
    return out


def _builtins(ctx: PlanReader, node: Node) -> frozenset[str]:
    """`builtins: true|false` (every set on or off) or a mapping `{page: false, ...}` that turns
    single sets off (sets it does not name stay on)."""
    if isinstance(node, ScalarNode):
        value = ctx.boolean(node, "builtins")
        return frozenset(BUILTIN_SETS) if value is not False else frozenset()
    fields = ctx.fields(node, "builtins", BUILTIN_SETS) or {}
    enabled = set(BUILTIN_SETS)
    for name, value_node in fields.items():
        if ctx.boolean(value_node, f"builtins.{name}") is False:
            enabled.discard(name)
    return frozenset(enabled)


def _build(ctx: PlanReader, root: Node) -> Plan | None:
    top = ctx.fields(root, "the plan", TOP_KEYS)
    if top is None:
        return None
    name = version = None
    for key in ("plan", "version"):
        if key not in top:
            ctx.add(root, f"the plan has no `{key}`", f"add `{key}: ...` at the top of the file")
    if "plan" in top:
        name = ctx.text(top["plan"], "plan name", name=True)
        if name is None and top["plan"].tag == NULL_TAG:
            ctx.add(top["plan"], "plan name is empty", "write `plan: <name>`")
    if "version" in top:
        version = ctx.text(top["version"], "version")
        if version is None and top["version"].tag == NULL_TAG:
            ctx.add(top["version"], "version is empty", 'write e.g. `version: "1.0.0"`')

    kwargs: dict[str, Any] = {}
    if "defaults" in top:
        defaults = ctx.fields(top["defaults"], "defaults", ("mode", "identity")) or {}
        if "mode" in defaults:
            kwargs["default_mode"] = (
                ctx.choice(defaults["mode"], "defaults.mode", Mode) or Mode.BLOCK
            )
        if "identity" in defaults:
            kwargs["identity"] = (
                ctx.choice(defaults["identity"], "defaults.identity", Identity) or Identity.ANY
            )
    if "context" in top:
        context = ctx.fields(top["context"], "context", ("required",)) or {}
        if "required" in context:
            paths = ctx.text_list(context["required"], "context.required")
            for path, item in paths:
                if any(not part for part in path.split(".")):
                    ctx.add(
                        item,
                        f"context path `{printable(path)}` has an empty part",
                        "write e.g. library.name",
                    )
            kwargs["required_context"] = tuple(p for p, _ in paths)
    if "pii" in top:
        kwargs["pii"] = tuple(p for p, _ in ctx.text_list(top["pii"], "pii"))

    sources = _sources(ctx, top["sources"]) if "sources" in top else None
    events: dict[str, EventSpec] = {}
    sections: list[tuple[str, CallType]] = [
        ("events", CallType.TRACK),
        ("pages", CallType.PAGE),
        ("screens", CallType.SCREEN),
    ]
    for section, call in sections:
        if section not in top:
            continue
        node = top[section]
        if call is not CallType.TRACK:  # a plan with pages takes analytics.js's bare page()
            events[event_key(call, None)] = unnamed_view(call, ctx.key_lines.get(id(node)))
        if isinstance(node, ScalarNode) and node.tag == NULL_TAG:
            continue
        for event_name, key_node, value_node in ctx.entries(node, section) or ():
            label = "event" if call is CallType.TRACK else call.value
            if not ctx.check_name(key_node, event_name, f"{label} name"):
                continue
            where = f"{label} `{printable(event_name)}`"
            line = key_node.start_mark.line + 1
            spec = _event(ctx, event_name, call, value_node, sources, where, line)
            if spec is not None:
                events[event_key(call, event_name)] = spec
    if "traits" in top:
        line = ctx.key_lines[id(top["traits"])]
        spec = _event(ctx, "", CallType.IDENTIFY, top["traits"], sources, "traits (identify)", line)
        if spec is not None:
            events[event_key(CallType.IDENTIFY, None)] = spec
    for section, call, where, allowed in (
        ("group", CallType.GROUP, "group (group calls)", EVENT_KEYS),
        ("alias", CallType.ALIAS, "alias (alias calls)", ALIAS_KEYS),
    ):
        if section in top:
            line = ctx.key_lines[id(top[section])]
            spec = _event(ctx, "", call, top[section], sources, where, line, allowed)
            if spec is not None:
                events[event_key(call, None)] = spec
    if "builtins" in top:
        kwargs["builtins"] = _builtins(ctx, top["builtins"])

    funnels = _funnels(ctx, top["funnels"]) if "funnels" in top else []
    for _, steps in funnels:
        for step, step_node in steps:
            if step not in events:
                hint = suggest(step, events)
                hint = (
                    f"{hint} or plan the event under `events:`"
                    if hint
                    else "plan it under `events:`"
                )
                ctx.add(step_node, f"funnel step `{printable(step)}` is not a planned event", hint)
    if name is None or version is None or ctx.problems:
        return None
    return Plan(
        name=name,
        version=version,
        sources=sources or {},
        events=events,
        funnels=tuple(f for f, _ in funnels),
        path=ctx.file,
        **kwargs,
    )


# ----------------------------------------------------------------------------------- public API


def parse_plan(text: str, path: str = "<string>") -> Plan:
    """Parse plan YAML text; raise `PlanError` listing every problem (file, line, column, hint)."""
    if not isinstance(text, str):
        raise TypeError("parse_plan expects text; use load_plan for files")
    root = compose_plan(path, text.removeprefix("\ufeff"))
    ctx = PlanReader(path)
    try:
        plan = _build(ctx, root)
    except RecursionError:  # defensive: MAX_DEPTH keeps recursion far below the limit
        raise PlanError(
            [PlanProblem(path, 1, 1, "plan is nested too deeply", "flatten it")]
        ) from None
    if plan is None:
        problems = sorted(ctx.problems, key=lambda p: (p.line or 0, p.column or 0))
        raise PlanError(problems or [PlanProblem(path, 1, 1, "plan could not be read")])
    return plan


def load_plan(path: str | Path) -> Plan:
    """Read and parse a UTF-8 plan file of at most `MAX_PLAN_BYTES`; raise `PlanError` if bad."""
    name = str(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise PlanError(
            [
                PlanProblem(
                    name, None, None, f"cannot read plan: {exc.strerror or exc}", "check the path"
                )
            ]
        ) from None
    if len(data) > MAX_PLAN_BYTES:
        raise PlanError(
            [
                PlanProblem(
                    name,
                    1,
                    1,
                    f"plan file is larger than {MAX_PLAN_BYTES} bytes",
                    "split it or remove generated content",
                )
            ]
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise PlanError(
            [
                PlanProblem(
                    name,
                    line,
                    col,
                    f"byte 0x{data[exc.start]:02x} is not valid UTF-8",
                    "save the file as UTF-8",
                )
            ]
        ) from None
    return parse_plan(text, name)
