"""A `Plan` written back as YAML in the plan format (`dump_plan`): `parse_plan(dump_plan(p))`
equals `p`, line numbers aside; one-line mappings where hand-written plans use them."""

from __future__ import annotations

from typing import Any

import yaml

from tracking_plan.model import (
    BUILTIN_SETS,
    CallType,
    EventSpec,
    Mode,
    Plan,
    PropertySpec,
    PropType,
    Status,
    format_duration,
    is_unnamed_view,
)
from tracking_plan.plan_yaml import MAP_TAG, SEQ_TAG, STR_TAG

# ----------------------------------------------------------------------------------- dump


class _Flow(dict):
    """A mapping written on one line (`{type: string, required: true}`), like hand-written plans."""


class _PlanDumper(yaml.SafeDumper):
    pass


_PlanDumper.add_representer(
    _Flow, lambda dumper, data: dumper.represent_mapping(MAP_TAG, data, flow_style=True)
)
_PlanDumper.add_representer(
    str,  # PyYAML mangles NEL/LS/PS in single quotes: double-quoted style escapes them
    lambda dumper, data: dumper.represent_scalar(
        STR_TAG, data, style='"' if any(c in data for c in "\x85\u2028\u2029") else None
    ),
)
_PlanDumper.add_representer(
    tuple, lambda dumper, data: dumper.represent_sequence(SEQ_TAG, data, flow_style=True)
)


def _dump_property(prop: PropertySpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if prop.type is not PropType.ANY:
        out["type"] = prop.type.value
    for key, value, default in (
        ("required", prop.required, False),
        ("nullable", prop.nullable, False),
        ("enum", list(prop.enum) if prop.enum is not None else None, None),
        ("pattern", prop.pattern, None),
        ("min", prop.minimum, None),
        ("max", prop.maximum, None),
        ("max_length", prop.max_length, None),
        ("format", prop.format, None),
        ("pii", prop.pii, False),
        ("description", prop.description, ""),
    ):
        if value != default or (default is None and value is not None):
            out[key] = value
    if prop.unique is not None:
        within = format_duration(prop.unique.within_seconds)
        if prop.unique.mode is Mode.FLAG:
            out["unique"] = within
        else:
            out["unique"] = _Flow(within=within, mode=prop.unique.mode.value)
    if prop.has_default:
        out["default"] = prop.default
    if prop.items is not None:
        out["items"] = _dump_property(prop.items)
    if prop.properties:
        out["properties"] = {p.name: _dump_property(p) for p in prop.properties}
    if not prop.additional_properties:
        out["additional_properties"] = False
    nested = isinstance(out.get("default"), dict | list) or "items" in out or "properties" in out
    return out if nested else _Flow(out)


def _dump_event(event: EventSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if event.description:
        out["description"] = event.description
    if event.owner:
        out["owner"] = event.owner
    if event.status is not Status.ACTIVE:
        out["status"] = event.status.value
    if event.sources:
        out["sources"] = tuple(event.sources)
    if event.mode is not None:
        out["mode"] = event.mode.value
    if event.allow_unplanned_properties:
        out["allow_unplanned_properties"] = True
    if event.unique is not None:
        key = _Flow(
            keys=tuple(event.unique.properties),
            within=format_duration(event.unique.within_seconds),
        )
        if event.unique.mode is not Mode.FLAG:
            key["mode"] = event.unique.mode.value
        out["unique"] = key
    if event.properties:
        out["properties"] = {p.name: _dump_property(p) for p in event.properties}
    return out


def dump_plan(plan: Plan) -> str:
    """The plan as YAML in the plan format: `parse_plan(dump_plan(p))` equals `p`, lines aside."""
    doc: dict[str, Any] = {"plan": plan.name, "version": plan.version}
    doc["defaults"] = {"mode": plan.default_mode.value, "identity": plan.identity.value}
    if plan.required_context:
        doc["context"] = {"required": list(plan.required_context)}
    if plan.pii:
        doc["pii"] = list(plan.pii)
    if plan.sources:
        doc["sources"] = {
            s.name: {
                k: v
                for k, v in (
                    ("platform", s.platform),
                    ("description", s.description),
                    ("mode", s.mode.value if s.mode else ""),
                )
                if v
            }
            for s in plan.sources.values()
        }
    if plan.funnels:
        doc["funnels"] = [
            {"name": f.name, "steps": list(f.steps), "window_minutes": f.window_minutes}
            for f in plan.funnels
        ]
    if plan.builtins != frozenset(BUILTIN_SETS):
        doc["builtins"] = {name: name in plan.builtins for name in BUILTIN_SETS}
    sections: dict[CallType, str] = {
        CallType.TRACK: "events",
        CallType.PAGE: "pages",
        CallType.SCREEN: "screens",
    }
    single = {CallType.IDENTIFY: "traits", CallType.GROUP: "group", CallType.ALIAS: "alias"}
    for event in plan.events.values():
        if event.call in single:
            doc[single[event.call]] = _dump_event(event)
        elif is_unnamed_view(event):
            doc.setdefault(sections[event.call], {})  # implied by the section itself
        else:
            doc.setdefault(sections[event.call], {})[event.name] = _dump_event(event)
    return yaml.dump(doc, Dumper=_PlanDumper, sort_keys=False, allow_unicode=True, width=120)
