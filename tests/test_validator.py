"""Unit tests of the compiled validator: each code with its exact path and expectation, modes,
normalisation, and the example plan."""

from __future__ import annotations

import copy
import time
from typing import Any

import orjson
import pytest
from test_validator_plans import EXAMPLE_PLAN, RECEIVED, make_plan, order

from tracking_plan.loader import load_plan
from tracking_plan.model import Identity, Mode
from tracking_plan.normalise import format_timestamp
from tracking_plan.validator import Result, compile_plan

V = compile_plan(make_plan())


def check(body: Any, source: str | None = "server", **kw: Any) -> Result:
    return V.validate(body, source, kw.pop("received_at", RECEIVED), **kw)


def triples(result: Result) -> list[tuple[str, str, str]]:
    return [(v.code, v.path, v.expected) for v in result.violations]


def codes(result: Result) -> list[tuple[str, str]]:
    return [(v.code, v.path) for v in result.violations]


# ---------------------------------------------------------------------------- valid events


def test_valid_event_is_normalised() -> None:
    body = order(paid_at="2026-11-18T09:00:00+02:00")
    original = copy.deepcopy(body)
    result = check(body)
    assert result.outcome == "valid", result.violations
    assert result.violations == []
    assert (result.event_key, result.event_name, result.planned) == (
        "Order Completed",
        "Order Completed",
        True,
    )
    event = result.event
    assert event is not None
    assert event["planVersion"] == "7.1"
    assert event["properties"]["currency"] == "USD"  # upper-cased
    assert event["properties"]["paid_at"] == "2026-11-18T07:00:00.000Z"  # UTC
    assert event["timestamp"] == "2026-11-18T08:00:00.000Z"
    assert event["receivedAt"] == "2026-11-18T11:06:40.000Z"
    assert "violations" not in event
    assert body == original  # the input is never modified


def test_default_is_filled_when_absent() -> None:
    result = check(order(currency=None))
    assert result.outcome == "valid"
    assert result.event["properties"]["currency"] == "EUR"  # type: ignore[index]


def test_nested_normalisation_copies_nested_containers() -> None:
    body = order(items=[{"sku": "a", "currency": "gbp"}])
    result = check(body)
    assert result.outcome == "valid"
    assert result.event["properties"]["items"][0]["currency"] == "GBP"  # type: ignore[index]
    assert body["properties"]["items"][0]["currency"] == "gbp"


def test_integral_float_is_an_integer_and_bool_is_not_a_number() -> None:
    assert check(order(items=[{"sku": "a", "qty": 2.0}])).outcome == "valid"
    result = check(order(total=True, items=[{"sku": "a", "qty": True}]))
    assert triples(result) == [
        ("wrong_type", "$.properties.total", "number"),
        ("wrong_type", "$.properties.items[0].qty", "integer"),
    ]


def test_nullable_property_accepts_null() -> None:
    assert check(order(coupon=None)).outcome == "valid"
    body = order()
    body["properties"]["coupon"] = None
    assert check(body).outcome == "valid"


def test_pattern_uses_search_semantics() -> None:
    assert check(order(code="abc42def")).outcome == "valid"
    assert codes(check(order(code="abc4d"))) == [("pattern_mismatch", "$.properties.code")]


# ---------------------------------------------------------------------------- each code


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        ({"order_id": None}, ("missing_required", "$.properties.order_id", "string (required)")),
        ({"total": "12"}, ("wrong_type", "$.properties.total", "number")),
        ({"total": float("nan")}, ("wrong_type", "$.properties.total", "number")),
        ({"order_id": 123}, ("wrong_type", "$.properties.order_id", "string")),
        ({"gift": "yes"}, ("wrong_type", "$.properties.gift", "boolean")),
        ({"meta": []}, ("wrong_type", "$.properties.meta", "object")),
        ({"tags": "a,b"}, ("wrong_type", "$.properties.tags", "array")),
        ({"tags": ["a", 1]}, ("wrong_type", "$.properties.tags[1]", "string")),
        ({"method": "cash"}, ("not_in_enum", "$.properties.method", "one of: card, paypal")),
        (
            {"order_id": "ord_12"},
            ("pattern_mismatch", "$.properties.order_id", "matches ^ord_[0-9]{3}$"),
        ),
        ({"total": -0.01}, ("out_of_range", "$.properties.total", "between 0 and 1000")),
        ({"total": 1000.5}, ("out_of_range", "$.properties.total", "between 0 and 1000")),
        ({"items": []}, ("out_of_range", "$.properties.items", "at least 1 items")),
        (
            {"items": [{"sku": "a"}] * 4},
            ("out_of_range", "$.properties.items", "at most 3 items"),
        ),
        ({"note": "x"}, ("out_of_range", "$.properties.note", "at least 2 characters")),
        ({"coupon": "x" * 11}, ("too_long", "$.properties.coupon", "at most 10 characters")),
        (
            {"currency": "EURO"},
            ("bad_currency", "$.properties.currency", "an ISO 4217 currency code"),
        ),
        (
            {"paid_at": "yesterday"},
            ("bad_timestamp", "$.properties.paid_at", "ISO-8601 date-time or epoch s/ms"),
        ),
        (
            {"paid_at": "1999-12-31T23:59:59Z"},
            ("bad_timestamp", "$.properties.paid_at", "a date after 2000, at most 1 day ahead"),
        ),
        ({"paid_at": [1]}, ("wrong_type", "$.properties.paid_at", "timestamp")),
        (
            {"items": [{"sku": "a", "price": -1}]},
            ("out_of_range", "$.properties.items[0].price", "≥ 0"),
        ),
        (
            {"items": [{"price": 1}]},
            ("missing_required", "$.properties.items[0].sku", "string (required)"),
        ),
        ({"items": [None]}, ("not_nullable", "$.properties.items[0]", "object, not null")),
        ({"items": [{"sku": "a"}, 5]}, ("wrong_type", "$.properties.items[1]", "object")),
    ],
)
def test_one_violation(props: dict[str, Any], expected: tuple[str, str, str]) -> None:
    body = order()
    body["properties"].update(props)
    if props.get("order_id", 0) is None:
        del body["properties"]["order_id"]
    result = check(body)
    assert triples(result) == [expected]
    assert result.outcome == "quarantined"  # server: plan default mode, block
    assert result.event is None


def test_not_nullable() -> None:
    body = order()
    body["properties"]["total"] = None
    assert triples(check(body)) == [("not_nullable", "$.properties.total", "number, not null")]


def test_got_is_short_and_typed() -> None:
    result = check(order(order_id="x" * 5000))
    (problem,) = result.violations
    assert problem.got.startswith("string 'xxx")
    assert len(problem.got) <= 80
    assert check(order(total="12")).violations[0].got == "string '12'"
    assert check(order(total=[1, 2])).violations[0].got == "array of 2 items"
    assert check(order(gift=0)).violations[0].got == "integer 0"


def test_unplanned_property_top_level_and_nested() -> None:
    result = check(order(colour="red", items=[{"sku": "a"}, {"sku": "b", "size": 3}]))
    assert codes(result) == [
        ("unplanned_property", "$.properties.colour"),
        ("unplanned_property", "$.properties.items[1].size"),
    ]
    assert result.violations[0].got == "string 'red'"
    assert result.violations[0].expected.startswith("a planned property: code, coupon")


def test_allow_unplanned_properties() -> None:
    body = {**order(), "event": "Loose", "properties": {"a": 1, "b": 2}}
    assert check(body).outcome == "valid"


def test_odd_keys_are_quoted_in_paths() -> None:
    result = check(order(**{"a b": 1, "x.y": 2}))
    assert [v.path for v in result.violations] == [
        '$.properties["a b"]',
        '$.properties["x.y"]',
    ]


def test_pii_at_any_depth_is_redacted() -> None:
    body = order(meta={"deep": [{"Email": "a@b.c"}]}, creditCardNumber="4111")
    body["context"]["traits"] = {"e_mail": "x", "mail": "a@b.c"}  # separators are ignored
    result = check(body)
    assert sorted(codes(result)) == [
        ("pii_detected", "$.context.traits.e_mail"),
        ("pii_detected", "$.properties.creditCardNumber"),
        ("pii_detected", "$.properties.meta.deep[0].Email"),
    ]
    assert {v.got for v in result.violations} == {"<redacted>"}
    assert all("a@b.c" not in str(v) and "4111" not in str(v) for v in result.violations)


def test_pii_is_removed_from_forwarded_events() -> None:
    body = order(meta={"deep": [{"email": "a@b.c"}]}, email="a@b.c")
    result = check(body, source="web")  # flag mode: forwarded
    assert result.outcome == "flagged"
    assert b"a@b.c" not in orjson.dumps(result.event)
    assert result.event["properties"]["meta"] == {"deep": [{}]}  # type: ignore[index]
    assert body["properties"]["email"] == "a@b.c"  # the input is untouched


def test_unplanned_deprecated_and_wrong_source() -> None:
    result = check({**order(), "event": "Nope"})
    assert triples(result) == [("unplanned_event", "$", "an event of plan 'Test Shop'")]
    assert (result.planned, result.event_key) == (False, "Nope")
    assert codes(check({**order(), "event": "Old Event", "properties": {}})) == [
        ("deprecated_event", "$")
    ]
    result = check({**order(), "event": "Server Only", "properties": {}}, source="web")
    assert triples(result) == [("wrong_source", "$", "sent by server")]
    assert result.violations[0].got == "source 'web'"
    assert check({**order(), "event": "Server Only", "properties": {}}, source=None).outcome == (
        "valid"
    )


@pytest.mark.parametrize(
    ("identity", "ids", "expected"),
    [
        (Identity.ANY, {}, [("missing_identity", "$")]),
        (Identity.ANY, {"anonymousId": "a"}, []),
        (Identity.ANY, {"userId": ""}, [("missing_identity", "$")]),
        (Identity.USER_ID, {"anonymousId": "a"}, [("missing_identity", "$.userId")]),
        (Identity.ANONYMOUS_ID, {"userId": "u"}, [("missing_identity", "$.anonymousId")]),
        (Identity.ANY, {"userId": 42}, [("wrong_type", "$.userId"), ("missing_identity", "$")]),
    ],
)
def test_identity_rules(identity: Identity, ids: dict[str, Any], expected: list[Any]) -> None:
    validator = compile_plan(make_plan(identity=identity))
    body = order()
    del body["userId"]
    body.update(ids)
    assert codes(validator.validate(body, "server", RECEIVED)) == expected


def test_missing_context() -> None:
    body = order()
    body["context"] = {"library": {"version": "1"}}
    assert triples(check(body)) == [
        ("missing_context", "$.context.library.name", "present (plan context rule)")
    ]
    del body["context"]
    assert codes(check(body)) == [("missing_context", "$.context.library.name")]
    body["context"] = "web"
    assert codes(check(body)) == [
        ("wrong_type", "$.context"),
        ("missing_context", "$.context.library.name"),
    ]


def test_all_violations_are_reported() -> None:
    body = order(order_id=7, total=-1, method="cash", colour="red", email="x")
    del body["userId"]
    body["timestamp"] = "not a date"
    result = check(body)
    assert sorted(v.code for v in result.violations) == [
        "bad_timestamp",
        "missing_identity",
        "not_in_enum",
        "out_of_range",
        "pii_detected",
        "unplanned_property",
        "wrong_type",
    ]


# ---------------------------------------------------------------------------- timestamps


def test_clock_skew_is_corrected() -> None:
    body = order()
    body["timestamp"] = "2001-01-01T00:00:00.000Z"  # device clock 26 years late...
    body["sentAt"] = "2001-01-01T00:00:05.000Z"  # ...sent 5 s later by the same clock
    result = check(body)
    assert result.outcome == "valid"
    assert result.event["timestamp"] == "2026-11-18T11:06:35.000Z"  # type: ignore[index]
    assert result.event["originalTimestamp"] == "2001-01-01T00:00:00.000Z"  # type: ignore[index]
    assert result.event_time == RECEIVED - 5


def test_epoch_timestamps_and_future_limit() -> None:
    body = order()
    body["timestamp"] = int(RECEIVED * 1000)  # epoch milliseconds
    result = check(body)
    assert result.event["timestamp"] == "2026-11-18T11:06:40.000Z"  # type: ignore[index]
    body["timestamp"] = RECEIVED + 2 * 86400
    assert triples(check(body)) == [
        (
            "bad_timestamp",
            "$.timestamp",
            "an event time after 2000 and at most 1 day after reception",
        )
    ]
    body["timestamp"] = "1999-06-01T00:00:00Z"
    assert codes(check(body)) == [("bad_timestamp", "$.timestamp")]
    body["timestamp"] = "2026-02-30T00:00:00Z"
    assert codes(check(body)) == [("bad_timestamp", "$.timestamp")]


# ---------------------------------------------------------------------------- modes


def test_modes() -> None:
    body = order(colour="red")
    assert check(body, source="server").outcome == "quarantined"  # plan default: block
    flagged = check(body, source="web")  # source mode: flag
    assert flagged.outcome == "flagged"
    assert flagged.event["properties"]["colour"] == "red"  # type: ignore[index]
    assert flagged.event["violations"] == [  # type: ignore[index]
        {
            "code": "unplanned_property",
            "path": "$.properties.colour",
            "expected": flagged.violations[0].expected,
            "got": "string 'red'",
        }
    ]
    omitted = check(body, source="app")  # source mode: omit
    assert omitted.outcome == "flagged"
    assert "colour" not in omitted.event["properties"]  # type: ignore[index]
    assert [v["code"] for v in omitted.event["violations"]] == ["unplanned_property"]  # type: ignore[index]
    nested = check(order(items=[{"sku": "a", "size": 1}]), source="app")
    assert nested.event["properties"]["items"] == [{"sku": "a"}]  # type: ignore[index]
    other = check(order(colour="red", total=-1), source="app")
    assert other.outcome == "quarantined"  # omit quarantines other violations
    assert [v.code for v in other.violations] == ["unplanned_property", "out_of_range"]


def test_unknown_source_uses_plan_default() -> None:
    assert check(order(colour="red"), source="tv").outcome == "quarantined"
    assert compile_plan(make_plan(Mode.FLAG)).validate(order(colour=1)).outcome == "flagged"


# ---------------------------------------------------------------------------- envelopes


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, ("bad_envelope", "$")),
        ([order()], ("bad_envelope", "$")),
        ({"type": "merge", "userId": "u"}, ("bad_envelope", "$.type")),
        ({"userId": "u"}, ("bad_envelope", "$.type")),
        ({"type": "track", "userId": "u"}, ("missing_required", "$.event")),
        ({"type": "track", "event": ["x"]}, ("wrong_type", "$.event")),
        ({"type": "page", "name": 3}, ("wrong_type", "$.name")),
    ],
)
def test_broken_envelopes_are_quarantined(body: Any, expected: tuple[str, str]) -> None:
    result = V.validate(body, "web", RECEIVED)  # even in flag mode
    assert result.outcome == "quarantined"
    assert codes(result) == [expected]
    assert result.planned is False


def test_call_types_and_keys() -> None:
    base = {"userId": "u", "context": {"library": {"name": "x"}}}
    identify = check({**base, "type": "identify", "traits": {"plan": "pro"}})
    assert (identify.outcome, identify.event_key, identify.event_name) == (
        "valid",
        "identify",
        None,
    )
    bad = check({**base, "type": "identify", "traits": {"plan": "gold"}})
    assert codes(bad) == [("not_in_enum", "$.traits.plan")]
    page = check({**base, "type": "page", "name": "Home"})
    assert (page.outcome, page.event_key, page.event_name) == ("valid", "page:Home", "Home")
    unnamed = check({**base, "type": "page"})
    assert (unnamed.event_key, codes(unnamed)) == ("page", [("unplanned_event", "$")])
    implicit = check({**base, "event": "Old Event"})  # no type but an event: a track call
    assert implicit.event_key == "Old Event"


# ---------------------------------------------------------------------------- example plan


@pytest.fixture(scope="module")
def example() -> Any:
    return compile_plan(load_plan(EXAMPLE_PLAN))


def test_example_plan_events(example: Any) -> None:
    ctx = {"library": {"name": "analytics-ios"}}
    calls = [
        (
            "ios",
            {
                "type": "track",
                "event": "Product Added",
                "anonymousId": "a",
                "context": ctx,
                "properties": {
                    "cart_id": "c1",
                    "product_id": "p_ab12",
                    "price": 9.9,
                    "quantity": 1,
                },
            },
        ),
        (
            "server",
            {
                "type": "track",
                "event": "Order Completed",
                "userId": "u",
                "context": ctx,
                "properties": {
                    "order_id": "ord_A1B2C3",
                    "total": 20,
                    "currency": "eur",
                    "products": [{"product_id": "p", "price": 20, "quantity": 1}],
                },
            },
        ),
        ("ios", {"type": "screen", "name": "Cart", "anonymousId": "a", "context": ctx}),
        (
            "web",
            {
                "type": "identify",
                "userId": "u",
                "context": ctx,
                "traits": {"plan": "pro", "country": "FR", "created_at": 1_700_000_000},
            },
        ),
    ]
    for source, body in calls:
        result = example.validate(body, source, RECEIVED)
        assert result.outcome == "valid", (body, result.violations)
    added = example.validate(calls[0][1], "ios", RECEIVED).event
    assert added["properties"]["currency"] == "EUR"  # the plan's default
    bad = {**calls[1][1], "properties": {**calls[1][1]["properties"], "products": [{"price": "1"}]}}
    result = example.validate(bad, "server", RECEIVED)
    assert codes(result) == [
        ("missing_required", "$.properties.products[0].product_id"),
        ("wrong_type", "$.properties.products[0].price"),
        ("missing_required", "$.properties.products[0].quantity"),
    ]
    refund = {
        "type": "track",
        "event": "Order Refunded",
        "userId": "u",
        "context": ctx,
        "properties": {"order_id": "ord_A1B2C3", "amount": 1, "currency": "EUR"},
    }
    assert codes(example.validate(refund, "web", RECEIVED)) == [("wrong_source", "$")]


def test_event_time_and_mode_in_result() -> None:
    body = order()
    del body["timestamp"]
    result = check(body)
    assert result.event_time == RECEIVED  # no client time: the reception time
    assert result.event["timestamp"] == "2026-11-18T11:06:40.000Z"  # type: ignore[index]
    assert result.mode == "block"
    body["timestamp"] = format_timestamp(time.time() - 60)
    result = check(body, received_at=None)  # reception unknown: no correction, limit is now
    assert (result.outcome, result.event_time) == ("valid", pytest.approx(time.time() - 60, abs=5))
    assert "receivedAt" not in result.event  # type: ignore[operator]


def test_unplanned_event_in_flag_mode_is_forwarded_and_marked() -> None:
    result = check({**order(), "event": "Brand New"}, source="web")
    assert (result.outcome, result.planned, result.mode) == ("flagged", False, "flag")
    assert result.event["violations"][0]["code"] == "unplanned_event"  # type: ignore[index]


def test_stripping_never_touches_the_input_of_events_without_normalisation() -> None:
    body = {
        **order(),
        "event": "Loose",
        "properties": {"a": 1, "email": "a@b.c", "x": {"phone": 1}},
    }
    original = copy.deepcopy(body)
    result = check(body, source="web")  # "Loose" writes nothing: its properties are not copied
    assert result.outcome == "flagged"
    assert result.event["properties"] == {"a": 1, "x": {"phone": 1}}  # type: ignore[index]
    assert body == original
    omitted = compile_plan(make_plan(Mode.OMIT)).validate(
        {**order(), "event": "Server Only", "properties": {"extra": {"k": 1}}}, None, RECEIVED
    )
    assert omitted.outcome == "flagged" and omitted.event["properties"] == {}  # type: ignore[index]
