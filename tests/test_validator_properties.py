"""Property tests: events generated from a plan's specs always pass, and each single mutation
yields exactly its own violation code (and no other)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_validator_plans import EXAMPLE_PLAN, RECEIVED, make_plan

from tracking_plan.loader import load_plan
from tracking_plan.model import CallType, EventSpec, Plan, PropertySpec, PropType, Status
from tracking_plan.normalise import MIN_EPOCH, format_timestamp
from tracking_plan.normalise_currency_codes import CURRENCY_CODES
from tracking_plan.validator import Validator, compile_plan

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PLANS = {"test": make_plan(), "example": load_plan(EXAMPLE_PLAN)}
VALIDATORS = {name: compile_plan(plan) for name, plan in PLANS.items()}
SAFE_KEYS = st.sampled_from(["a", "b", "colour", "size", "n"])


def values(spec: PropertySpec) -> st.SearchStrategy[Any]:
    """Valid values of one property spec."""
    strategy = _values(spec)
    return st.none() | strategy if spec.nullable else strategy


def _values(spec: PropertySpec) -> st.SearchStrategy[Any]:
    if spec.enum is not None:
        return st.sampled_from(spec.enum)
    kind = spec.type
    if kind is PropType.STRING:
        if spec.format == "currency":
            codes = sorted(CURRENCY_CODES)
            return st.sampled_from(codes) | st.sampled_from(codes).map(str.lower)
        top = min((x for x in (spec.max_length, spec.maximum) if x is not None), default=40)
        low = int(spec.minimum or 0)
        if spec.pattern is not None:
            return st.from_regex(spec.pattern, fullmatch=True).filter(
                lambda s: low <= len(s) <= top
            )
        return st.text(min_size=low, max_size=int(top))
    if kind is PropType.INTEGER:
        low = None if spec.minimum is None else int(spec.minimum)
        high = None if spec.maximum is None else int(spec.maximum)
        return st.integers(min_value=low, max_value=high)
    if kind is PropType.NUMBER:
        floats = st.floats(
            min_value=spec.minimum, max_value=spec.maximum, allow_nan=False, allow_infinity=False
        )
        ints = st.integers(
            min_value=None if spec.minimum is None else int(spec.minimum) + 1,
            max_value=None if spec.maximum is None else int(spec.maximum) - 1,
        )
        return floats | ints
    if kind is PropType.BOOLEAN:
        return st.booleans()
    if kind is PropType.TIMESTAMP:
        epochs = st.floats(min_value=MIN_EPOCH + 1, max_value=RECEIVED)
        return (
            epochs.map(format_timestamp)
            | epochs.map(lambda e: round(e * 1000))
            | epochs.map(lambda e: int(e))
        )
    if kind is PropType.ARRAY:
        items = values(spec.items) if spec.items is not None else st.integers()
        low = int(spec.minimum or 0)
        high = None if spec.maximum is None else int(spec.maximum)
        return st.lists(items, min_size=low, max_size=high if high is not None else 4)
    if kind is PropType.OBJECT:
        if spec.properties:
            return properties(spec.properties)
        return st.dictionaries(SAFE_KEYS, st.integers(), max_size=3)
    return st.integers() | st.text(max_size=10) | st.booleans()


def properties(specs: tuple[PropertySpec, ...]) -> st.SearchStrategy[dict[str, Any]]:
    required = {s.name: values(s) for s in specs if s.required}
    optional = {s.name: values(s) for s in specs if not s.required}
    return st.fixed_dictionaries(required, optional=optional)


def _planned(plan: Plan) -> list[tuple[str, EventSpec]]:
    return [(k, s) for k, s in plan.events.items() if s.status is not Status.DEPRECATED]


def body_for(key: str, spec: EventSpec, props: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "userId": "u1",
        "context": {"library": {"name": "analytics.js"}},
        "timestamp": format_timestamp(RECEIVED - 100),
    }
    if spec.call is CallType.TRACK:
        body.update(type="track", event=key, properties=props)
    elif spec.call is CallType.IDENTIFY:
        body.update(type="identify", traits=props)
    elif spec.call is CallType.GROUP:
        body.update(type="group", groupId="g1", traits=props)
    elif spec.call is CallType.ALIAS:
        body.update(type="alias", previousId="a1")
    else:
        body.update(type=spec.call.value, name=key.split(":", 1)[1], properties=props)
    return body


@st.composite
def planned_events(draw: st.DrawFn) -> tuple[Validator, str | None, dict[str, Any], EventSpec]:
    plan_name = draw(st.sampled_from(sorted(PLANS)))
    key, spec = draw(st.sampled_from(_planned(PLANS[plan_name])))
    source = draw(st.sampled_from(spec.sources)) if spec.sources else None
    props = draw(properties(spec.properties))
    return VALIDATORS[plan_name], source, body_for(key, spec, props), spec


@SETTINGS
@given(planned_events())
def test_generated_events_always_pass(case: tuple[Validator, str | None, dict, EventSpec]) -> None:
    validator, source, body, _ = case
    result = validator.validate(body, source, RECEIVED)
    assert result.violations == []
    assert result.outcome == "valid"
    assert result.event is not None and result.event["planVersion"] == validator.plan_version


# ---------------------------------------------------------------------------- mutations

Mutation = tuple[str, str, Callable[[dict[str, Any]], None]]  # code, path, change


def _container(spec: EventSpec) -> str:
    return "traits" if spec.call in (CallType.IDENTIFY, CallType.GROUP) else "properties"


def _set(container: str, name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda body: body[container].__setitem__(name, value)


def _wrong_value(spec: PropertySpec) -> Any:
    return {
        PropType.STRING: 12345,
        PropType.NUMBER: "12",
        PropType.INTEGER: "x",
        PropType.BOOLEAN: "true",
        PropType.OBJECT: [1],
        PropType.ARRAY: {"a": 1},
        PropType.TIMESTAMP: [1],
    }[spec.type]


def mutations(spec: EventSpec, props: dict[str, Any]) -> list[Mutation]:
    """Every single-rule break applicable to this event, with the code and path it must give."""
    c = _container(spec)
    out: list[Mutation] = []
    for p in spec.properties if spec.call is not CallType.ALIAS else ():
        path = f"$.{c}.{p.name}"
        if p.required and not p.has_default:
            out.append(("missing_required", path, lambda b, n=p.name: b[c].pop(n)))
        if p.type is not PropType.ANY:
            out.append(("wrong_type", path, _set(c, p.name, _wrong_value(p))))
        if p.enum is not None and p.type is PropType.STRING and p.pattern is None:
            out.append(("not_in_enum", path, _set(c, p.name, "zz-not-in-enum")))
        if (
            p.pattern is not None
            and p.enum is None
            and not p.minimum
            and re.search(p.pattern, "#") is None
        ):
            out.append(("pattern_mismatch", path, _set(c, p.name, "#")))
        if p.type in (PropType.NUMBER, PropType.INTEGER) and p.enum is None:
            if p.minimum is not None:
                out.append(("out_of_range", path, _set(c, p.name, int(p.minimum) - 1)))
            if p.maximum is not None:
                out.append(("out_of_range", path, _set(c, p.name, int(p.maximum) + 1)))
        if p.type is PropType.ARRAY and p.minimum:
            out.append(("out_of_range", path, _set(c, p.name, [])))
    if spec.call is not CallType.ALIAS:  # an alias call has no properties
        if not spec.allow_unplanned_properties:
            out.append(("unplanned_property", f"$.{c}.zz_unplanned", _set(c, "zz_unplanned", 1)))
        out.append(("pii_detected", f"$.{c}.email", _set(c, "email", "someone@example.com")))
    out.append(  # (context.traits of an identify call without traits are its traits)
        (
            "pii_detected",
            "$.context.device.Email",
            lambda b: b["context"].__setitem__("device", {"Email": "someone@example.com"}),
        )
    )
    for bad in ("not a date", "1999-12-31T23:59:59Z", RECEIVED + 3 * 86400):
        out.append(("bad_timestamp", "$.timestamp", lambda b, v=bad: b.__setitem__("timestamp", v)))
    return out


@SETTINGS
@given(planned_events(), st.data())
def test_each_mutation_yields_exactly_its_code(
    case: tuple[Validator, str | None, dict, EventSpec], data: st.DataObject
) -> None:
    validator, source, body, spec = case
    code, path, mutate = data.draw(st.sampled_from(mutations(spec, body)), label="mutation")
    mutate(body)
    result = validator.validate(body, source, RECEIVED)
    assert [(v.code, v.path) for v in result.violations] == [(code, path)]
    if code == "pii_detected":
        assert result.violations[0].got == "<redacted>"


@pytest.mark.parametrize("plan_name", sorted(PLANS))
def test_every_mutation_kind_is_exercised(plan_name: str) -> None:
    """Guard against a vacuous property: the plans offer every kind of mutation."""
    kinds = {m[0] for _, s in _planned(PLANS[plan_name]) for m in mutations(s, {})}
    assert kinds >= {
        "missing_required",
        "wrong_type",
        "not_in_enum",
        "pattern_mismatch",
        "out_of_range",
        "unplanned_property",
        "pii_detected",
        "bad_timestamp",
    }
