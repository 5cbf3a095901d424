"""Plan lint: smells in a plan that loads fine but will hurt its users.

Errors are contradictions (a planned property the PII rule forbids, a deprecated event inside a
funnel); warnings are inconsistencies (productId next to product_id, a property whose type changes
between events, missing description or owner); infos are hints.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from tracking_plan.model import (
    CallType,
    EventSpec,
    Plan,
    PropertySpec,
    PropType,
    Status,
    format_duration,
)

Severity = Literal["error", "warning", "info"]
SEVERITY_ORDER: dict[str, int] = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class LintFinding:
    """One finding: how bad, where (plan path and file line), what, and the rule that found it."""

    severity: Severity
    path: str
    line: int | None
    message: str
    rule: str = ""


def event_path(event: EventSpec) -> str:
    """A readable location of an event in the plan file: `events.X`, `pages.X`, `traits`."""
    single = {CallType.IDENTIFY: "traits", CallType.GROUP: "group", CallType.ALIAS: "alias"}
    if event.call in single:
        return single[event.call]
    section = {CallType.TRACK: "events", CallType.PAGE: "pages", CallType.SCREEN: "screens"}
    return f"{section[event.call]}.{event.name}"


def walk_properties(
    props: tuple[PropertySpec, ...], prefix: str
) -> Iterator[tuple[str, PropertySpec]]:
    """Every property at any depth with its path (`a.b`, `list[].field`)."""
    for prop in props:
        path = f"{prefix}.{prop.name}"
        yield path, prop
        yield from walk_properties(prop.properties, path)
        if prop.items is not None:
            item_path = f"{path}[]"
            yield from walk_properties(prop.items.properties, item_path)


_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def name_style(name: str) -> str:
    """snake_case, camelCase, PascalCase, kebab-case, or "single" for one lowercase word."""
    if re.fullmatch(r"[a-z][a-z0-9]*", name):
        return "single"
    if re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)+", name):
        return "snake_case"
    if re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)+", name):
        return "kebab-case"
    if re.fullmatch(r"[a-z][a-z0-9]*([A-Z][a-z0-9]*)+", name):
        return "camelCase"
    if re.fullmatch(r"([A-Z][a-z0-9]*)+", name):
        return "PascalCase"
    return "other"


def event_name_style(name: str) -> str:
    """ "Title Case" (Segment's "Object Action"), "lower case", or a property-name style."""
    if re.fullmatch(r"[A-Z][A-Za-z0-9]*( [A-Z0-9][A-Za-z0-9]*)*", name) and " " in name:
        return "Title Case"
    if re.fullmatch(r"[a-z0-9]+( [a-z0-9]+)+", name):
        return "lower case"
    style = name_style(name)
    return "Title Case" if style == "PascalCase" and name[1:].islower() else style


def _words(name: str) -> list[str]:
    return [w.lower() for w in _WORDS.findall(name)]


def _in_style(name: str, style: str) -> str:
    words = _words(name) or [name]
    if style == "snake_case":
        return "_".join(words)
    if style == "kebab-case":
        return "-".join(words)
    if style == "camelCase":
        return words[0] + "".join(w.title() for w in words[1:])
    if style == "PascalCase":
        return "".join(w.title() for w in words)
    return name


def _normal(name: str) -> str:
    return "".join(_words(name)) or name.lower()


def lint_plan(plan: Plan) -> list[LintFinding]:
    """All findings, errors first, then by line."""
    out: list[LintFinding] = []
    add = out.append
    all_props = [
        (event, f"{event_path(event)}.properties{path}", prop)
        for event in plan.events.values()
        for path, prop in walk_properties(event.properties, "")
    ]

    # -- documentation ---------------------------------------------------------------------
    for event in plan.events.values():
        where = event_path(event)
        tracked = event.call in (CallType.TRACK, CallType.IDENTIFY, CallType.GROUP)
        severity: Severity = "warning" if tracked else "info"
        if not event.description:
            add(
                LintFinding(
                    severity, where, event.line, "has no description", "missing-description"
                )
            )
        if not event.owner and tracked:
            add(LintFinding("warning", where, event.line, "has no owner", "missing-owner"))

    # -- names ------------------------------------------------------------------------------
    spellings: dict[str, dict[str, list[tuple[str, int | None]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    styles: dict[str, int] = defaultdict(int)
    for _, path, prop in all_props:
        spellings[_normal(prop.name)][prop.name].append((path, prop.line))
        style = name_style(prop.name)
        if style != "single":
            styles[style] += 1
    for variants in spellings.values():
        if len(variants) > 1:
            names = sorted(variants, key=lambda n: -len(variants[n]))
            for name in names[1:]:
                for path, line in variants[name]:
                    others = ", ".join(f"`{n}`" for n in names if n != name)
                    message = f"`{name}` is spelled {others} elsewhere; use one spelling"
                    add(LintFinding("warning", path, line, message, "inconsistent-name"))
    if styles:
        dominant = max(styles, key=lambda s: (styles[s], s == "snake_case"))
        for _, path, prop in all_props:
            style = name_style(prop.name)
            if style not in ("single", dominant):
                fix = _in_style(prop.name, dominant)
                message = f"`{prop.name}` is {style} but the plan uses {dominant}: `{fix}`"
                add(LintFinding("warning", path, prop.line, message, "name-style"))

    tracked = [e for e in plan.events.values() if e.call is CallType.TRACK]
    event_styles = {e.name: event_name_style(e.name) for e in tracked}
    counts: dict[str, int] = defaultdict(int)
    for style in event_styles.values():
        counts[style] += 1
    if len(counts) > 1:
        dominant = max(counts, key=lambda s: (counts[s], s == "Title Case"))
        for event in tracked:
            style = event_styles[event.name]
            if style != dominant:
                message = f"event name is {style} but the plan uses {dominant}"
                add(LintFinding("warning", event_path(event), event.line, message, "event-style"))

    # -- types --------------------------------------------------------------------------------
    types: dict[str, dict[PropType, list[tuple[str, int | None]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for _, path, prop in all_props:
        if prop.type is not PropType.ANY:
            types[prop.name][prop.type].append((path, prop.line))
    for name, by_type in types.items():
        if len(by_type) > 1:
            common = max(by_type, key=lambda t: len(by_type[t]))
            for kind, places in by_type.items():
                if kind is common:
                    continue
                for path, line in places:
                    message = (
                        f"`{name}` is {kind.value} here but {common.value} in "
                        f"{len(by_type[common])} other place(s); use one type"
                    )
                    add(LintFinding("warning", path, line, message, "type-conflict"))

    # -- PII ---------------------------------------------------------------------------------
    pii = {_normal(p): p for p in plan.pii}
    for _, path, prop in all_props:
        declared = pii.get(_normal(prop.name))
        if declared is None:
            continue
        if declared == prop.name:
            message = (
                f"`{prop.name}` is planned but listed under `pii`: every event with it is rejected"
            )
            add(LintFinding("error", path, prop.line, message, "pii-property"))
        else:
            message = f"`{prop.name}` looks like the PII field `{declared}`; do not collect it"
            add(LintFinding("warning", path, prop.line, message, "pii-property"))

    # -- enums and patterns -------------------------------------------------------------------
    for _, path, prop in all_props:
        if prop.enum is not None:
            seen: list[object] = []
            for value in prop.enum:
                key = (type(value).__name__, value)
                if key in seen:
                    message = f"enum lists {value!r} more than once"
                    add(LintFinding("warning", path, prop.line, message, "enum-duplicate"))
                seen.append(key)
        if prop.pattern is not None and not (
            prop.pattern.startswith("^") and prop.pattern.endswith("$")
        ):
            message = f"pattern {prop.pattern!r} matches anywhere in the text; anchor it with ^...$"
            add(LintFinding("info", path, prop.line, message, "unanchored-pattern"))
        if prop.required and prop.has_default:
            message = "is required and has a default: the default is never used"
            add(LintFinding("info", path, prop.line, message, "required-default"))

    # -- business keys ------------------------------------------------------------------------
    for event in plan.events.values():
        props = {p.name: p for p in event.properties}
        for key in event.business_keys():
            specs = [props[name] for name in key.properties]
            if len(specs) == 1:
                where, line = f"{event_path(event)}.properties.{specs[0].name}", specs[0].line
            else:
                where, line = f"{event_path(event)}.unique", key.line
            if all(p.enum is not None for p in specs):
                values = math.prod(len(p.enum or ()) for p in specs)
                within = format_duration(key.within_seconds)
                message = (
                    f"business key has only {values} possible value(s): within {within} "
                    "every event after the first few repeats one"
                )
                add(LintFinding("warning", where, line, message, "key-enum"))
            optional = [p.name for p in specs if not p.required]
            if optional:
                names = ", ".join(f"`{n}`" for n in optional)
                message = f"business key uses optional {names}: events without it are not checked"
                add(LintFinding("info", where, line, message, "key-optional"))

    # -- funnels ------------------------------------------------------------------------------
    for funnel in plan.funnels:
        where = f"funnels.{funnel.name}"
        for step in funnel.steps:
            event = plan.events.get(step)
            if event is None:
                continue
            if event.status is Status.DEPRECATED:
                message = f"step `{step}` is deprecated: the funnel will drop to zero"
                add(LintFinding("error", where, funnel.line, message, "deprecated-in-funnel"))
            elif event.status is Status.DRAFT:
                message = f"step `{step}` is still a draft"
                add(LintFinding("warning", where, funnel.line, message, "draft-in-funnel"))
        repeated = sorted({s for s in funnel.steps if funnel.steps.count(s) > 1})
        for step in repeated:
            message = f"step `{step}` appears more than once"
            add(LintFinding("warning", where, funnel.line, message, "funnel-repeat"))
        sources = [set(plan.events[s].sources) for s in funnel.steps if s in plan.events]
        restricted = [s for s in sources if s]
        if restricted and not set.intersection(*restricted):
            message = "no source may send every step: the conversion can never be measured"
            add(LintFinding("error", where, funnel.line, message, "funnel-sources"))

    # -- sources ------------------------------------------------------------------------------
    if plan.sources:
        every_source = any(not e.sources for e in plan.events.values())
        used = {s for e in plan.events.values() for s in e.sources}
        for name, source in plan.sources.items():
            if not every_source and name not in used:
                message = "is declared but no event may come from it"
                add(
                    LintFinding("warning", f"sources.{name}", source.line, message, "unused-source")
                )
    else:
        named = sorted({s for e in plan.events.values() for s in e.sources})
        if named:
            message = f"events name sources ({', '.join(named)}) but the plan declares none"
            add(LintFinding("warning", "sources", None, message, "undeclared-sources"))

    out.sort(key=lambda f: (SEVERITY_ORDER[f.severity], f.line or 0, f.path))
    return out
