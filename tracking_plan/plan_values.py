"""Whether a value fits a plan property (type, enum, pattern, range, length, nested fields): the
small checker used for plan defaults (the event validator is `tracking_plan.validator`)."""

from __future__ import annotations

import re
from typing import Any

from tracking_plan.model import (
    PropertySpec,
    PropType,
)

# ----------------------------------------------------------------------------------- values


def type_accepts(kind: PropType, value: Any) -> bool:
    """Whether `value` (parsed JSON/YAML) has the plan type `kind` (bools are never numbers)."""
    if kind is PropType.ANY:
        return True
    if kind is PropType.STRING:
        return isinstance(value, str)
    if kind is PropType.BOOLEAN:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is PropType.NUMBER:
        return isinstance(value, int | float)
    if kind is PropType.INTEGER:
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind is PropType.OBJECT:
        return isinstance(value, dict)
    if kind is PropType.ARRAY:
        return isinstance(value, list)
    if kind is PropType.TIMESTAMP:
        return isinstance(value, str | int | float)
    return False


def value_problems(spec: PropertySpec, value: Any) -> list[str]:
    """Why `value` breaks `spec` (type, enum, pattern, range, length, nested fields); [] if fine.

    A small checker used for plan defaults; the event validator is `tracking_plan.validator`.
    Patterns match anywhere in the text (`re.search`), as in JSON Schema: anchor with ^...$.
    """
    if value is None:
        return [] if spec.nullable else ["is null but the property is not nullable"]
    if not type_accepts(spec.type, value):
        return [f"is not of type {spec.type.value}"]
    out = []
    if spec.enum is not None and value not in spec.enum:
        out.append(f"is not one of {list(spec.enum)}")
    if spec.pattern is not None and isinstance(value, str):
        try:
            if not re.search(spec.pattern, value):
                out.append(f"does not match pattern {spec.pattern}")
        except re.error:
            pass  # reported where the pattern is declared
    size = len(value) if isinstance(value, str | list) else value
    if isinstance(size, int | float) and not isinstance(size, bool):
        unit = " (length)" if isinstance(value, str | list) else ""
        if spec.minimum is not None and size < spec.minimum:
            out.append(f"is below min {spec.minimum}{unit}")
        if spec.maximum is not None and size > spec.maximum:
            out.append(f"is above max {spec.maximum}{unit}")
    if spec.max_length is not None and isinstance(value, str) and len(value) > spec.max_length:
        out.append(f"is longer than max_length {spec.max_length}")
    if isinstance(value, dict):
        for child in spec.properties:
            if child.name in value:
                out += [f"{child.name} {p}" for p in value_problems(child, value[child.name])]
            elif child.required:
                out.append(f"lacks required field {child.name}")
        if not spec.additional_properties:
            known = {c.name for c in spec.properties}
            out += [f"has unplanned field {k}" for k in value if k not in known]
    if isinstance(value, list) and spec.items is not None:
        for i, item in enumerate(value):
            out += [f"[{i}] {p}" for p in value_problems(spec.items, item)]
    return out
