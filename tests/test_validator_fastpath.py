"""The compiled fast path (`tracking_plan.fastpath`) agrees with the full Python path: on random
valid, mutated, malformed and unicode-odd calls over the example plans, whatever the fast path
accepts the full path finds valid, with the same `Result` and byte-identical JSON of the
normalised event; neither modifies its input. Skipped when the extension is not built."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_validator_plans import RECEIVED, make_plan
from test_validator_properties import body_for, properties

from streams.envelope import received_at_epoch
from tracking_plan import fastpath
from tracking_plan.loader import load_plan
from tracking_plan.model import Plan, Status
from tracking_plan.normalise import format_timestamp
from tracking_plan.validator import Validator, compile_plan

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [ROOT / "examples" / name for name in ("ecommerce.yaml", "shop.yaml")]
PLANS: dict[str, Plan] = {"test": make_plan(), **{p.stem: load_plan(p) for p in EXAMPLES}}
VALIDATORS = {name: compile_plan(plan) for name, plan in PLANS.items()}
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))

pytestmark = pytest.mark.skipif(
    not fastpath.available(), reason="the compiled fast path is not built"
)

ODD_TEXT = st.sampled_from(
    ["", " ", "\x00", "\ud800", "é", "e\u0301", "\u202e", "😀", "ＥＭＡＩＬ", "e-mail", "E_Mail"]
)
JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6) | ODD_TEXT
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=6) | ODD_TEXT, inner, max_size=3)
    ),
    max_leaves=8,
)
TIMES = st.one_of(
    st.floats(min_value=RECEIVED - 86400 * 30, max_value=RECEIVED).map(format_timestamp),
    st.floats(min_value=RECEIVED - 86400 * 30, max_value=RECEIVED),
    st.integers(min_value=int(RECEIVED * 1000) - 10**9, max_value=int(RECEIVED * 1000)),
    st.sampled_from(
        [
            "2026-11-18T11:06:34Z",
            "2026-11-18T11:06:34.123456+02:00",
            "2026-11-18 11:06:34.123z",
            "2026-02-29T00:00:00.000Z",
            "2024-02-29T23:59:59.999Z",
            "1999-12-31T23:59:59.999Z",
            "2026-11-18T11:06:60.000Z",
            "2026-11-18T24:00:00.000Z",
            "０２６-11-18T11:06:34.123Z",
            "9999-12-31T23:59:59.999Z",
            "0000-01-01T00:00:00.000Z",
            "yesterday",
        ]
    ),
    JSON,
)
RECEIVED_AT = st.one_of(
    st.just(RECEIVED),
    st.just(int(RECEIVED)),
    st.floats(min_value=0, max_value=3e11),
    st.sampled_from([None, True, math.nan, math.inf, -1.0, 1e13, "2026-11-18"]),
)


def _planned(plan: Plan) -> list[tuple[str, Any]]:
    return [(k, s) for k, s in plan.events.items() if s.status is not Status.DEPRECATED]


@st.composite
def mutation(draw: st.DrawFn, body: dict[str, Any], container: str) -> None:
    """Change one thing of `body` (in place): a property, a top-level or context field."""
    where = draw(st.sampled_from(["property", "top", "context", "delete"]))
    if where == "property" and isinstance(body.get(container), dict):
        props = body[container]
        name = draw(st.sampled_from(sorted(props) or ["x"]) | st.text(max_size=8) | ODD_TEXT)
        props[name] = draw(JSON)
    elif where == "top":
        key = draw(
            st.sampled_from(
                ["type", "event", "name", "userId", "anonymousId", "context", container, "traits"]
            )
            | ODD_TEXT
        )
        body[key] = draw(JSON)
    elif where == "context":
        context = body.setdefault("context", {})
        if isinstance(context, dict):
            key = draw(st.sampled_from(["library", "traits", "email", "page", "Phone"]) | ODD_TEXT)
            context[key] = draw(JSON | st.just({"email": "a@b.c"}) | st.just([{"iban": 1}]))
    else:
        keys = sorted(body)
        if keys:
            body.pop(draw(st.sampled_from(keys)), None)


@st.composite
def calls(draw: st.DrawFn) -> tuple[Validator, object, object, object]:
    """(validator, body, source, received_at): a valid call, then 0-3 mutations."""
    plan_name = draw(st.sampled_from(sorted(PLANS)))
    plan = PLANS[plan_name]
    key, spec = draw(st.sampled_from(_planned(plan)))
    body = body_for(key, spec, draw(properties(spec.properties)))
    container = "traits" if "traits" in body else "properties"
    for field in ("sentAt", "originalTimestamp", "timestamp"):
        if draw(st.booleans()):
            body[field] = draw(TIMES)
    if draw(st.booleans()):
        body["anonymousId"] = draw(st.text(max_size=5))
    for _ in range(draw(st.integers(0, 3))):
        draw(mutation(body, container))
    sources = [*spec.sources, *plan.sources, None, "nowhere"]
    source = draw(st.sampled_from(sources))
    received = draw(RECEIVED_AT)
    if draw(st.integers(0, 30)) == 0:  # not even a dict
        body = draw(JSON)
    return VALIDATORS[plan_name], body, source, received


def _json(value: Any) -> bytes:
    """The JSON the worker writes (orjson), or Python's where orjson refuses (surrogates)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value).encode()


def _same(fast: Any, full: Any) -> None:
    assert full.outcome == "valid" and not full.violations
    assert fast == full
    assert list(fast.event) == list(full.event)  # the same keys in the same order
    assert _json(fast.event) == _json(full.event)
    for field in ("event_time", "event_key", "event_name", "mode", "planned"):
        assert getattr(fast, field) == getattr(full, field) or (
            getattr(fast, field) != getattr(fast, field)  # nan
        )


@SETTINGS
@given(calls())
def test_fast_path_accepts_only_what_the_full_path_finds_valid(
    case: tuple[Validator, object, object, object],
) -> None:
    validator, body, source, received = case
    before = copy.deepcopy(body)
    fast = validator._fast.accepts(body, source, received)  # type: ignore[union-attr]
    full = validator.validate_full(body, source, received)
    assert body == before or body != body  # (nan compares unequal to itself)
    if fast is not None:
        _same(fast, full)
    # `validate` is the fast path with the full path behind it: always the full path's result
    assert validator.validate(body, source, received) == full or full != full


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fast_path_accepts_plain_valid_events(data: st.DataObject) -> None:
    """Valid calls with canonical timestamps take the fast path (it is not a no-op)."""
    plan = PLANS["ecommerce"]
    key, spec = data.draw(st.sampled_from(_planned(plan)))
    body = body_for(key, spec, data.draw(properties(spec.properties)))
    body["sentAt"] = format_timestamp(RECEIVED - 1)
    validator = VALIDATORS["ecommerce"]
    full = validator.validate_full(body, spec.sources[0] if spec.sources else None, RECEIVED)
    fast = validator._fast.accepts(body, spec.sources[0] if spec.sources else None, RECEIVED)  # type: ignore[union-attr]
    if full.outcome == "valid" and _no_nested_writes(body, full.event):
        assert fast is not None
        _same(fast, full)


def _no_nested_writes(body: dict[str, Any], event: dict[str, Any] | None) -> bool:
    """Nested values the full path normalised (the fast path leaves those to it)."""
    assert event is not None
    for container in ("properties", "traits"):
        raw, out = body.get(container), event.get(container)
        if isinstance(raw, dict) and isinstance(out, dict):
            for name, value in raw.items():
                if isinstance(value, dict | list) and out.get(name) != value:
                    return False
    return True


def test_fast_path_leaves_violations_to_the_full_path() -> None:
    validator = VALIDATORS["ecommerce"]
    body = {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "context": {"library": {"name": "analytics.js"}, "traits": {"email": "a@b.c"}},
        "properties": {"order_id": "ord_123456", "total": 5, "currency": "eur", "products": []},
    }
    assert validator._fast.accepts(body, "web", RECEIVED) is None  # type: ignore[union-attr]
    result = validator.validate(body, "web", RECEIVED)
    assert {v.code for v in result.violations} >= {"pii_detected"}


def test_pure_mode_turns_the_fast_path_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKWATCH_PURE_VALIDATOR", "1")
    validator = compile_plan(PLANS["ecommerce"])
    assert not validator.compiled
    assert validator.validate == validator.validate_full


def test_fast_false_compiles_the_full_path_alone() -> None:
    assert VALIDATORS["ecommerce"].compiled
    pure = compile_plan(PLANS["ecommerce"], fast=False)
    assert not pure.compiled and pure.validate == pure.validate_full


def _order(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "context": {"library": {"name": "analytics.js"}},
        "timestamp": format_timestamp(RECEIVED - 10),
        "properties": {
            "order_id": "ord_123456",
            "total": 5,
            "currency": "eur",
            "products": [{"product_id": "p_ab12", "price": 5, "quantity": 1}],
        },
    }
    body.update(changes)
    return body


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    for _ in range(depth):
        node = {"a": node}
    return node


class _Text(str):
    """A str subclass: never JSON, but `validate` accepts any value."""


@pytest.mark.parametrize(
    "body",
    [
        _order(),  # valid: the fast path's own result
        _order(context={"library": {"name": "a"}, "deep": _nested(10_000)}),
        _order(properties={"order_id": "ord_123456", "total": 10**400, "currency": "EUR"}),
        _order(properties={"order_id": _Text("ord_123456"), "total": 1, "currency": "EUR"}),
        _order(type=_Text("track")),
        {_Text("type"): "track", "event": "Order Completed", "userId": "u1"},
        _order(timestamp="2026-11-18T11:06:34.123Z\x00"),
        _order(timestamp="２０２６-11-18T11:06:34.123Z"),
    ],
)
def test_hostile_calls_agree(body: dict[str, Any]) -> None:
    """Deep nesting (beyond the fast path's 200 levels), huge integers, str subclasses and
    odd timestamps: whatever the fast path says, `validate` gives the full path's result."""
    validator = VALIDATORS["ecommerce"]
    fast = validator._fast.accepts(body, "web", RECEIVED)  # type: ignore[union-attr]
    full = validator.validate_full(body, "web", RECEIVED)
    if fast is not None:
        _same(fast, full)
    assert validator.validate(body, "web", RECEIVED) == full


def test_a_valid_order_takes_the_fast_path() -> None:
    """(So that `test_hostile_calls_agree` compares both paths on its first case.)"""
    result = VALIDATORS["ecommerce"]._fast.accepts(_order(), "web", RECEIVED)  # type: ignore[union-attr]
    assert result is not None and result.event["properties"]["currency"] == "EUR"


STAMPS = st.one_of(
    st.floats(min_value=0, max_value=253_402_300_799).map(format_timestamp),
    st.datetimes().map(lambda d: d.isoformat(timespec="milliseconds") + "Z"),
    st.text(alphabet="0123456789-T:.Z ", min_size=20, max_size=26),
    st.sampled_from(
        [
            "2026-02-29T00:00:00.000Z",
            "2024-02-29T12:00:00.000Z",
            "2026-11-18T11:06:60.000Z",
            "0000-01-01T00:00:00.000Z",
            "2026-11-18T11:06:34.123+00:00",
            "2026-11-18t11:06:34.123Z",
            "２０２６-11-18T11:06:34.123Z",
        ]
    ),
    JSON,
)


@SETTINGS
@given(STAMPS)
def test_compiled_stamp_parser_agrees_with_received_at_epoch(value: object) -> None:
    """The worker's compiled reception-stamp parser gives `received_at_epoch`'s float, or
    leaves the value to it (None)."""
    parse = fastpath.received_epoch_parser()
    assert parse is not None
    fast = parse(value)
    if fast is None:
        return
    assert type(fast) is float
    assert fast == received_at_epoch(value)  # type: ignore[arg-type]


_ATOM = st.one_of(
    st.sampled_from(list("ab_-@: Z9")),
    st.sampled_from(["[a-c]", "[0-9]", "[A-Z0-9-]", "[-ab]", "[a-f0-9_.]", "[b]"]),
)
_COUNT = st.sampled_from(["", "?", "*", "+", "{2}", "{0,3}", "{1,}", "{2,4}", "{0}"])
PATTERNS = st.lists(st.tuples(_ATOM, _COUNT), max_size=5).map(
    lambda atoms: "^" + "".join(a + c for a, c in atoms) + "$"
)


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(PATTERNS, st.data())
def test_simple_patterns_match_like_re_search(pattern: str, data: st.DataObject) -> None:
    """The fast path's C matcher of simple anchored patterns answers as `re.search` does
    (on matching texts, near misses, trailing newlines and odd characters)."""
    atoms = fastpath.simple_pattern(pattern)
    assert atoms is not None, pattern
    matcher = fastpath._fastcheck.SimplePattern(atoms)
    matching = st.from_regex(re.compile(pattern), fullmatch=True)
    text = data.draw(
        matching
        | matching.map(lambda s: s + "\n")
        | matching.map(lambda s: s[:-1])
        | matching.map(lambda s: s + "a")
        | st.text(alphabet="ab_-@: Z9\n0xé😀.", max_size=12)
    )
    decided = matcher.match(text)
    if decided >= 0:
        assert decided == (re.search(pattern, text) is not None), (pattern, text)


@pytest.mark.parametrize(
    "pattern",
    ["^p_[0-9a-z]{4,12}$", "^ord_[0-9A-Za-z]{6,20}$", "^[A-Z]{2}$", "^a{2,3}b+$", "^a+b?a$"],
)
def test_simple_patterns_on_edge_texts(pattern: str) -> None:
    """Run lengths at and past the counts, trailing newlines, a neighbour's characters (the
    first four patterns take the single-pass matcher: no atom may be empty and neighbours
    share no character; the last one the general matcher)."""
    matcher = fastpath._fastcheck.SimplePattern(fastpath.simple_pattern(pattern))
    texts = [
        "",
        "\n",
        "p_",
        "p_abcd",
        "p_abcd\n",
        "p_abcd\n\n",
        "p_abcdefghijkl",
        "p_abcdefghijklm",
        "p_abc",
        "p__abcd",
        "pp_abcd",
        "p_abcD",
        "ord_ABCdef",
        "ord_ABCde",
        "ord_" + "a" * 21,
        "ord_" + "a" * 20 + "\n",
        "EU",
        "EUR",
        "E",
        "eu",
        "EU\n",
        "aab",
        "aaab",
        "aaaab",
        "aabbb\n",
        "ab",
        "aa",
        "aba",
        "aaba",
        "aa\n",
        "a\na",
        " aab",
    ]
    for text in texts:
        assert matcher.match(text) == (re.search(pattern, text) is not None), (pattern, text)


def test_other_patterns_are_left_to_re() -> None:
    for pattern in ("^a+?$", "^(a|b)$", "^a.$", "^x{,3}$", r"^\d+$", "^[^a]$", "a+", "^a$x"):
        assert fastpath.simple_pattern(pattern) is None, pattern
