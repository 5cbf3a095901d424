"""Segment call semantics found with real trackers (issue 17): group and alias calls, the spec's
standard page/screen properties and reserved traits as built-ins, identify traits sent in
`context.traits`, the plan keys that govern them, and PII tokens."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import EXAMPLE_PLAN
from tracking_plan.builtins import BUILTINS
from tracking_plan.diff import diff_plans
from tracking_plan.lint import lint_plan
from tracking_plan.loader import PlanError, load_plan, parse_plan
from tracking_plan.model import CallType
from tracking_plan.pii import PiiMasker, is_pii_token, pii_token
from tracking_plan.plan_dump import dump_plan
from tracking_plan.validator import compile_plan

NOW = time.time()
PLAN = load_plan(EXAMPLE_PLAN)
V = compile_plan(PLAN)
CONTEXT = {"library": {"name": "analytics-python"}}

BASE = """\
plan: P
version: "1"
context: {required: [library.name]}
pii: [password]
traits:
  properties:
    plan: {type: string, enum: [free, pro]}
    email: {type: string, format: email, pii: true}
"""


def check(body: dict[str, Any], validator: Any = V, source: str = "server") -> Any:
    return validator.validate({"context": CONTEXT, **body}, source, NOW)


def codes(result: Any) -> list[tuple[str, str]]:
    return [(v.code, v.path) for v in result.violations]


# ------------------------------------------------------------------------------- group / alias


def test_group_call_is_checked_against_the_plans_group_traits() -> None:
    ok = check({"type": "group", "userId": "u1", "groupId": "acme", "traits": {"plan": "free"}})
    assert (ok.outcome, ok.event_key, ok.planned, ok.violations) == ("valid", "group", True, [])
    assert ok.event["traits"] == {"plan": "free"} and ok.event["groupId"] == "acme"
    bad = check(
        {"type": "group", "userId": "u1", "groupId": "acme", "traits": {"plan": "gold", "x": 1}}
    )
    assert codes(bad) == [
        ("unplanned_property", "$.traits.x"),
        ("not_in_enum", "$.traits.plan"),
    ]
    assert bad.outcome == "quarantined"  # source server: block


@pytest.mark.parametrize(
    ("group_id", "expected"),
    [(None, "missing_required"), ("", "missing_required"), (42, "wrong_type")],
)
def test_group_call_needs_a_string_group_id(group_id: Any, expected: str) -> None:
    body = {"type": "group", "userId": "u1", "traits": {}}
    if group_id is not None:
        body["groupId"] = group_id
    assert codes(check(body)) == [(expected, "$.groupId")]


def test_alias_call_needs_previous_and_user_id() -> None:
    ok = check({"type": "alias", "previousId": "anon-1", "userId": "u1"})
    assert (ok.outcome, ok.event_key, ok.violations) == ("valid", "alias", [])
    assert codes(check({"type": "alias", "userId": "u1"})) == [("missing_required", "$.previousId")]
    assert codes(check({"type": "alias", "previousId": "a", "anonymousId": "a"})) == [
        ("missing_required", "$.userId")
    ]


def test_group_and_alias_unplanned_when_the_plan_has_no_section() -> None:
    plan = parse_plan(BASE)
    validator = compile_plan(plan)
    for body in (
        {"type": "group", "userId": "u", "groupId": "g"},
        {"type": "alias", "userId": "u", "previousId": "a"},
    ):
        result = check(body, validator)
        assert codes(result) == [("unplanned_event", "$")]
        assert result.event_key == body["type"]  # counted under its own name, not "(broken)"


def test_unknown_call_type_is_still_a_bad_envelope() -> None:
    result = check({"type": "merge", "userId": "u"})
    assert codes(result) == [("bad_envelope", "$.type")]
    assert "group or alias" in result.violations[0].expected


def test_group_and_alias_sections_load_dump_and_lint() -> None:
    text = BASE + (
        "group:\n  description: Accounts.\n  owner: sales\n"
        "  properties:\n    seats: {type: integer, min: 1}\n"
        "alias:\n  description: Logins.\n  owner: identity\n  mode: flag\n"
    )
    plan = parse_plan(text)
    assert plan.events["group"].call is CallType.GROUP
    assert plan.events["alias"].call is CallType.ALIAS
    assert parse_plan(dump_plan(plan)).events.keys() == plan.events.keys()
    paths = {f.path for f in lint_plan(plan)}
    assert not any(p.startswith(("events.", "pages.")) and "group" in p for p in paths)
    with pytest.raises(PlanError, match=r"properties.*alias|alias.*properties"):
        parse_plan(BASE + "alias:\n  properties: {a: string}\n")


# ------------------------------------------------------------------------------- built-ins


ANALYTICS_JS_PAGE = {
    "path": "/shop",
    "referrer": "",
    "search": "?q=1",
    "title": "Shop",
    "url": "https://example.com/shop?q=1",
    "name": "Home",
}


def test_standard_page_properties_are_built_in() -> None:
    page = {"type": "page", "name": "Home", "anonymousId": "a", "properties": ANALYTICS_JS_PAGE}
    result = check(page, source="web")
    assert (result.outcome, result.violations) == ("valid", [])
    wrong = check({**page, "properties": {**ANALYTICS_JS_PAGE, "url": 5}}, source="web")
    assert codes(wrong) == [("wrong_type", "$.properties.url")]


def test_unnamed_page_and_screen_are_planned_with_the_builtins_when_the_plan_has_views() -> None:
    """analytics.js's snippet calls `analytics.page()` without a name on every page load (found
    in Chromium: it was `unplanned_event`). A plan with `pages:` takes it, checked against the
    built-in page properties; `screens:` likewise for screen calls."""
    bare = {"type": "page", "anonymousId": "a", "properties": {**ANALYTICS_JS_PAGE}}
    del bare["properties"]["name"]
    result = check(bare, source="web")
    assert (result.outcome, result.violations, result.event_key) == ("valid", [], "page")
    assert check({**bare, "name": ""}, source="web").violations == []
    extra = check({**bare, "properties": {"path": "/", "product_id": "p_1234"}}, source="web")
    assert codes(extra) == [("unplanned_property", "$.properties.product_id")]
    wrong = check({**bare, "properties": {"url": 5}}, source="web")
    assert codes(wrong) == [("wrong_type", "$.properties.url")]
    screen = check(
        {"type": "screen", "anonymousId": "a", "properties": {"name": "X"}}, source="ios"
    )
    assert screen.violations == []
    # named pages the plan does not list stay unplanned
    assert codes(check({**bare, "name": "Nowhere"}, source="web")) == [("unplanned_event", "$")]


def test_unnamed_views_follow_their_section_and_stay_out_of_the_plan_file() -> None:
    without = compile_plan(parse_plan(BASE))
    bare = {"type": "page", "anonymousId": "a", "properties": {"path": "/"}}
    assert codes(check(bare, without)) == [("unplanned_event", "$")]
    plan = parse_plan(BASE + "pages:\n  Home: {}\nscreens:\n")
    assert set(plan.events) >= {"page", "page:Home", "screen"}
    assert check(bare, compile_plan(plan)).violations == []
    dumped = dump_plan(plan)
    assert "''" not in dumped and '""' not in dumped  # implied, never written out
    assert parse_plan(dumped).events.keys() == plan.events.keys()
    assert not [f for f in lint_plan(plan) if f.path in ("pages.", "screens.")]
    # adding a `pages:` section plans unnamed pages too, and a diff says so
    changes = diff_plans(parse_plan(BASE), plan)
    assert any("page" in str(c) for c in changes)


def test_reserved_traits_are_built_in_and_a_planned_trait_overrides() -> None:
    plan = parse_plan(BASE)
    validator = compile_plan(plan)
    body = {"type": "identify", "userId": "u", "traits": {"firstName": "Ada", "age": 36}}
    assert check(body, validator).violations == []
    # `email` is planned with format email: the plan's definition wins over the built-in one
    bad = check({**body, "traits": {"email": "not-an-address"}}, validator)
    assert codes(bad) == [("pattern_mismatch", "$.traits.email")]


def test_builtins_can_be_turned_off_per_set_or_all() -> None:
    page = {"type": "page", "anonymousId": "a", "properties": {"path": "/"}}
    plan_text = BASE + "pages: {}\n"
    on = compile_plan(parse_plan(plan_text.replace("pages: {}", "pages:\n  Home: {}")))
    assert check({**page, "name": "Home"}, on).violations == []
    for switch in ("builtins: false\n", "builtins: {page: false}\n"):
        plan = parse_plan(plan_text.replace("pages: {}", "pages:\n  Home: {}") + switch)
        assert "page" not in plan.builtins
        assert codes(check({**page, "name": "Home"}, compile_plan(plan))) == [
            ("unplanned_property", "$.properties.path")
        ]
        assert parse_plan(dump_plan(plan)).builtins == plan.builtins
    off = parse_plan(BASE + "builtins: {screen: false}\n")
    assert off.builtins == frozenset(BUILTINS) - {"screen"}
    changes = diff_plans(parse_plan(BASE), off)
    assert [(c.kind, c.path) for c in changes if c.path.startswith("builtins")] == [
        ("breaking", "builtins.screen")
    ]


@pytest.mark.parametrize(
    "bad",
    ["builtins: yes please\n", "builtins: {pages: false}\n", "builtins: {page: 3}\n"],
)
def test_bad_builtins_key_is_a_plan_error_with_a_line(bad: str) -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(BASE + bad)
    assert ":9:" in str(caught.value)


# ------------------------------------------------------------------------------- context.traits


def test_identify_traits_in_context_are_checked_there() -> None:
    """rudder-sdk-python sends identify traits only in context.traits."""
    body = {"type": "identify", "userId": "u", "context": {**CONTEXT, "traits": {"plan": "gold"}}}
    result = V.validate(body, "server", NOW)
    assert codes(result) == [("not_in_enum", "$.context.traits.plan")]
    ok = V.validate({**body, "context": {**CONTEXT, "traits": {"plan": "pro"}}}, "server", NOW)
    assert (ok.outcome, ok.violations) == ("valid", [])
    assert ok.event["context"]["traits"] == {"plan": "pro"}


def test_root_traits_win_over_context_traits() -> None:
    body = {
        "type": "identify",
        "userId": "u",
        "traits": {"plan": "pro"},
        "context": {**CONTEXT, "traits": {"plan": "gold"}},
    }
    assert V.validate(body, "server", NOW).violations == []


def test_pii_in_context_traits_is_reported_once_and_stripped_when_forwarded() -> None:
    plan = parse_plan(BASE.replace("pii: [password]", "pii: [password]\ndefaults: {mode: flag}"))
    validator = compile_plan(plan)
    body = {
        "type": "identify",
        "userId": "u",
        "context": {**CONTEXT, "traits": {"plan": "pro", "password": "hunter2"}},
    }
    result = validator.validate(body, "server", NOW)
    assert codes(result) == [("pii_detected", "$.context.traits.password")]
    assert result.outcome == "flagged"
    assert "password" not in result.event["context"]["traits"]
    assert body["context"]["traits"]["password"] == "hunter2"  # the input is not modified


def test_context_traits_defaults_are_written_back_into_context() -> None:
    plan = parse_plan(BASE.replace("enum: [free, pro]}", "enum: [free, pro], default: free}"))
    body = {"type": "identify", "userId": "u", "context": {**CONTEXT, "traits": {"x": 1}}}
    result = compile_plan(plan).validate(body, "server", NOW)
    assert codes(result) == [("unplanned_property", "$.context.traits.x")]
    flagged = compile_plan(parse_plan(dump_plan(plan).replace("mode: block", "mode: flag")))
    event = flagged.validate(body, "server", NOW).event
    assert event["context"]["traits"]["plan"] == "free" and "traits" not in event
    assert body["context"]["traits"] == {"x": 1}


# ------------------------------------------------------------------------------- PII masking


MASK_PLAN = parse_plan(
    BASE
    + """\
events:
  Signed Up:
    properties:
      contact:
        type: object
        properties:
          phone: {type: string, pii: true}
      guests:
        type: array
        items: {type: object, properties: {email: {type: string, pii: true}}}
"""
)


def test_masker_redacts_forbidden_names_anywhere_and_hashes_declared_pii() -> None:
    masker = PiiMasker(MASK_PLAN, b"k")
    body = {
        "type": "track",
        "event": "Signed Up",
        "properties": {
            "contact": {"phone": "+33 6 12 34 56 78"},
            "guests": [{"email": "a@b.c"}, {"email": None}, "odd"],
            "Pass-Word": "hunter2",
        },
        "context": {"device": [{"password": "x"}]},
    }
    assert masker.mask(body) == 4
    props = body["properties"]
    assert props["Pass-Word"] == "<redacted>"
    assert body["context"]["device"][0]["password"] == "<redacted>"
    assert props["contact"]["phone"] == pii_token("+33 6 12 34 56 78", b"k")
    assert is_pii_token(props["guests"][0]["email"]) and props["guests"][1]["email"] is None
    again = {**body}
    assert masker.mask(again) == 0  # idempotent: tokens and redactions stay as they are


def test_identify_pii_traits_masked_in_traits_and_context_traits() -> None:
    masker = PiiMasker(MASK_PLAN, None)
    body = {"type": "identify", "traits": {"email": "a@b.c"}, "context": {"traits": {}}}
    body["context"]["traits"]["email"] = "a@b.c"
    assert masker.mask(body) == 2
    assert body["traits"]["email"] == body["context"]["traits"]["email"] == "<redacted>"


def test_tokens_join_but_never_reveal() -> None:
    assert pii_token("a@b.c", b"k") == pii_token("a@b.c", b"k")
    assert pii_token("a@b.c", b"k") != pii_token("a@b.c", b"other key")
    assert pii_token("a@b.c", b"k") != pii_token("A@b.c", b"k")
    assert "a@b.c" not in pii_token("a@b.c", b"k")
    assert pii_token(12, b"k") == pii_token("12", b"k")  # SDKs stringify ids: still joins
    assert pii_token({"a": 1}, b"k") != pii_token({"a": 2}, b"k")


def test_a_token_is_not_checked_against_the_planned_format() -> None:
    validator = compile_plan(parse_plan(BASE))
    token = pii_token("a@b.c", b"k")
    body = {"type": "identify", "userId": "u", "traits": {"email": token}}
    assert check(body, validator).violations == []
    body = {"type": "identify", "userId": "u", "traits": {"email": "not-an-address"}}
    assert codes(check(body, validator)) == [("pattern_mismatch", "$.traits.email")]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["email", "phone", "password", "x", "traits", "contact", "é\u200f"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["track", "identify", "group", "page", "alias", None, 3]),
    st.sampled_from(["Signed Up", "", None]),
    JSON,
    JSON,
    st.sampled_from([None, b"k"]),
)
def test_masking_any_call_never_raises_and_leaves_no_forbidden_value(
    call: Any, event: Any, props: Any, context: Any, key: bytes | None
) -> None:
    body = {"type": call, "event": event, "properties": props, "traits": props, "context": context}
    PiiMasker(MASK_PLAN, key).mask(body)

    def forbidden_values(node: Any) -> list[Any]:
        found = []
        stack = [node]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                for k, v in item.items():
                    if k == "password" and v is not None:
                        found.append(v)
                    stack.append(v)
            elif isinstance(item, list):
                stack.extend(item)
        return found

    assert all(v == "<redacted>" for v in forbidden_values(body))
