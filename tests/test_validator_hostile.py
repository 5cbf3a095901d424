"""Hostile input: the validator accepts any value and never raises, never hides a crash as a
verdict, and keeps its reports small and printable."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_validator_plans import EXAMPLE_PLAN, RECEIVED, make_plan, order

from tracking_plan.loader import load_plan
from tracking_plan.validator import Result, compile_plan
from tracking_plan.validator_support import key_path

V = compile_plan(make_plan())
EXAMPLE = compile_plan(load_plan(EXAMPLE_PLAN))
ODD = [
    "\u200f\u202eRTL",  # right-to-left marks
    "zero\u200bwidth\ufeff",
    "nul\x00byte",
    "\ud800lone surrogate",
    "\udfff",
    "e\u0301",  # combining accent
    "😀" * 3,
    "",
]
SCALARS = [None, 0, -1, 1.5, math.inf, -math.inf, math.nan, True, False, "", "x", 10**400]
ALL = [*SCALARS, [], {}, [[]], {"a": {}}, [None, {"b": [1]}], *ODD]


def sane(result: Result) -> Result:
    """The invariants of every result."""
    assert isinstance(result, Result)
    assert result.outcome in ("valid", "flagged", "quarantined")
    assert (result.outcome == "valid") == (not result.violations)
    assert (result.event is None) == (result.outcome == "quarantined")
    for v in result.violations:
        assert not v.got.startswith("validator error"), v  # a crash disguised as a verdict
        assert isinstance(v.path, str) and v.path.startswith("$")
        assert len(v.got) <= 80
        v.got.encode("utf-8")  # printable: lone surrogates are escaped
        v.path.encode("utf-8")
    return result


def deep(levels: int, leaf: Any, kind: str = "dict") -> Any:
    value = leaf
    for _ in range(levels):
        value = {"k": value} if kind == "dict" else [value]
    return value


@pytest.mark.parametrize("body", ALL, ids=repr)
def test_any_body(body: Any) -> None:
    result = sane(V.validate(body, "web", RECEIVED))
    assert result.outcome == "quarantined"


FIELDS = [
    "type",
    "event",
    "name",
    "userId",
    "anonymousId",
    "context",
    "properties",
    "traits",
    "timestamp",
    "sentAt",
    "originalTimestamp",
    "messageId",
]


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", ALL, ids=repr)
def test_any_value_in_any_field(field: str, value: Any) -> None:
    body = order()
    body[field] = value
    sane(V.validate(body, "web", RECEIVED))
    sane(V.validate({**body, "type": "identify", "traits": value}, "app", RECEIVED))


@pytest.mark.parametrize(
    "prop",
    [
        "order_id",
        "total",
        "currency",
        "items",
        "paid_at",
        "gift",
        "meta",
        "tags",
        "code",
        "email_hint",
        "unplanned",
    ],
)
@pytest.mark.parametrize("value", ALL, ids=repr)
def test_any_value_in_any_property(prop: str, value: Any) -> None:
    sane(V.validate(order(**{prop: value}), "web", RECEIVED))
    sane(V.validate(order(items=[{"sku": "a", "price": value, prop: value}, value]), "app"))


@pytest.mark.parametrize("kind", ["dict", "list"])
def test_ten_thousand_levels_of_nesting(kind: str) -> None:
    tower = deep(10_000, {"email": "a@b.c"}, kind)
    body = order(meta=tower, unplanned=tower, tags=tower, email_hint=tower)
    body["context"]["extra"] = tower
    body["properties"]["items"] = [tower]
    result = sane(V.validate(body, "web", RECEIVED))
    pii = [v for v in result.violations if v.code == "pii_detected"]
    assert len(pii) == 6  # at the bottom of each tower, wrong types or not
    assert sane(V.validate(tower, "web", RECEIVED)).outcome == "quarantined"
    assert sane(EXAMPLE.validate({**body, "event": "Cart Viewed"}, "web", RECEIVED))


def test_megabyte_strings() -> None:
    big = "x" * 1_000_000
    body = order(order_id=big, coupon=big, code=big, paid_at=big, currency=big, **{big: big})
    body["event"] = "Order Completed"
    body["timestamp"] = big
    body["userId"] = big
    body["context"][big] = {big: big}
    result = sane(V.validate(body, "web", RECEIVED))
    assert {v.code for v in result.violations} >= {
        "too_long",
        "pattern_mismatch",
        "bad_timestamp",
        "bad_currency",
        "unplanned_property",
    }
    assert all(len(v.path) < 200 for v in result.violations)
    sane(V.validate({**body, "event": big}, "web", RECEIVED))


@pytest.mark.parametrize("text", ODD, ids=repr)
def test_odd_unicode_everywhere(text: str) -> None:
    body = order(order_id=text, method=text, **{text: text, f"em{text}ail": 1})
    body["event"] = text or "x"
    sane(V.validate(body, text, RECEIVED))
    body = order(order_id=text, **{text: text})
    body["context"] = {"library": {"name": text}, text: {text: text}}
    result = sane(V.validate(body, "web", RECEIVED))
    expected = ("unplanned_property", key_path("$.properties", text))
    assert expected in [(v.code, v.path) for v in result.violations]


def test_zero_width_characters_do_not_hide_pii() -> None:
    result = V.validate(order(**{"e\u200bmail": "a@b.c"}), "server", RECEIVED)
    assert [v.code for v in result.violations] == ["pii_detected"]


def test_received_at_of_any_kind() -> None:
    for received in [None, math.nan, math.inf, -1e300, 0, True, "2026-01-01", 10**30]:
        sane(V.validate(order(), "web", received))  # type: ignore[arg-type]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON, st.sampled_from([*FIELDS, "extra"]))
def test_arbitrary_json_never_raises(value: Any, field: str) -> None:
    sane(V.validate(value, "web", RECEIVED))
    body = order()
    body[field] = value
    sane(V.validate(body, "web", RECEIVED))
    sane(EXAMPLE.validate({**body, "event": "Cart Viewed", "properties": value}, "ios", RECEIVED))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=12), JSON, max_size=6))
def test_arbitrary_properties_never_raise(props: dict[str, Any]) -> None:
    for source in ("web", "server", "app"):
        sane(V.validate(order(**props), source, RECEIVED))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(["email", "a", "colour", "items", "meta"]), JSON, max_size=5)
)
def test_the_input_is_never_modified(props: dict[str, Any]) -> None:
    """Quarantine keeps the call as received: validating must not change it, in any mode."""
    body = order(**props)
    before = repr(body)
    for source in ("web", "server", "app"):
        sane(V.validate(body, source, RECEIVED))
        assert repr(body) == before
