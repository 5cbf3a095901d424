"""The validator's inlined fast paths give the same answers as the general code: canonical
timestamps, timestamp formatting, the PII search of context, copy-on-write properties."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_validator_plans import EXAMPLE_PLAN, RECEIVED

from tracking_plan.loader import load_plan
from tracking_plan.normalise import (
    MAX_FUTURE_SECONDS,
    MIN_EPOCH,
    format_timestamp,
    parse_canonical,
    parse_timestamp,
)
from tracking_plan.validator import compile_plan

V = compile_plan(load_plan(EXAMPLE_PLAN))
CANONICAL = "2026-11-18T08:00:00.250Z"


def call(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "track",
        "event": "Product Removed",
        "userId": "u1",
        "context": {"library": {"name": "analytics.js"}},
        "properties": {"cart_id": "c1", "product_id": "p_abcd"},
    }
    body.update(fields)
    return body


# Strings near the canonical form: one character replaced, inserted or removed.
_ALPHABET = "0123456789-:.TZz+ ,x\x00é"
near_canonical = st.one_of(
    st.builds(
        lambda i, c: CANONICAL[:i] + c + CANONICAL[i + 1 :],
        st.integers(0, 23),
        st.sampled_from(_ALPHABET),
    ),
    st.builds(
        lambda i, c: CANONICAL[:i] + c + CANONICAL[i:],
        st.integers(0, 24),
        st.sampled_from(_ALPHABET),
    ),
    st.builds(lambda i: CANONICAL[:i] + CANONICAL[i + 1 :], st.integers(0, 23)),
    st.just(CANONICAL),
)


def _expected_text(raw: str, epoch: float) -> str:
    return raw if parse_canonical(raw) is not None else format_timestamp(epoch)


@settings(max_examples=200, deadline=None)
@given(near_canonical)
def test_inline_timestamp_parse_agrees_with_parse_timestamp(raw: str) -> None:
    result = V.validate(call(timestamp=raw), "web", RECEIVED)
    epoch = parse_timestamp(raw)
    bad = [v for v in result.violations if v.code == "bad_timestamp"]
    if epoch is None:
        assert [v.path for v in bad] == ["$.timestamp"]
        assert result.event_time == RECEIVED
    elif MIN_EPOCH <= epoch <= RECEIVED + MAX_FUTURE_SECONDS:
        assert bad == []
        assert result.event_time == epoch
        assert result.event is not None
        assert result.event["timestamp"] == _expected_text(raw, epoch)
        assert result.event["originalTimestamp"] == _expected_text(raw, epoch)
    else:
        assert [v.path for v in bad] == ["$.timestamp"]


@settings(max_examples=200, deadline=None)
@given(near_canonical, st.floats(0, 5))
def test_clock_skew_correction_with_inline_parse(raw: str, delay: float) -> None:
    sent_at = format_timestamp(RECEIVED - delay)
    result = V.validate(call(timestamp=raw, sentAt=sent_at), "web", RECEIVED)
    client, sent = parse_timestamp(raw), parse_timestamp(sent_at)
    assert sent is not None
    if client is not None:
        moment = RECEIVED - (sent - client)
        if MIN_EPOCH <= moment <= RECEIVED + MAX_FUTURE_SECONDS:
            assert result.event_time == moment
            assert result.event is not None
            assert result.event["timestamp"] == format_timestamp(moment)
            assert result.event["sentAt"] == sent_at


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 253_402_300_799_999))
def test_inline_formatting_matches_format_timestamp(millis: int) -> None:
    received = millis / 1000
    result = V.validate(call(), "web", received)
    assert result.event is not None
    assert result.event["receivedAt"] == format_timestamp(received)
    assert result.event["timestamp"] == format_timestamp(received)  # no client time: reception


def test_pii_deep_in_context_is_found_after_its_keys_were_seen_as_harmless() -> None:
    warm = call(context={"library": {"name": "a"}, "page": {"path": "/", "url": "u"}})
    assert V.validate(warm, "web", RECEIVED).outcome == "valid"
    lib = {"name": "a"}
    hidden = [
        ({"library": {"name": "a", "page": {"email": "x"}}}, "$.context.library.page.email"),
        ({"library": lib, "page": [{"phone": 1}]}, "$.context.page[0].phone"),
        ({"library": lib, "page": {"path": [{"iban": 1}]}}, "$.context.page.path[0].iban"),
        ({"library": lib, "E-Mail": "x"}, "$.context.E-Mail"),
    ]
    for context, path in hidden:
        before = copy.deepcopy(context)
        result = V.validate(call(context=context), "web", RECEIVED)
        assert [(v.code, v.path) for v in result.violations] == [("pii_detected", path)]
        assert result.outcome == "flagged"  # the web source flags; the PII key is removed
        assert result.event is not None
        key = path.rsplit(".", 1)[-1]
        assert key not in str(result.event["context"])
        assert context == before  # removed from a copy


def test_properties_are_copied_only_when_normalised() -> None:
    body = call(
        event="Product Added",
        properties={"cart_id": "c", "product_id": "p_abcd", "price": 3, "quantity": 1},
    )
    original = copy.deepcopy(body)
    result = V.validate(body, "web", RECEIVED)
    assert result.outcome == "valid"
    assert result.event is not None
    assert result.event["properties"]["currency"] == "EUR"  # the plan default, filled in
    assert body == original  # ...in a copy

    body["properties"]["currency"] = "usd"
    original = copy.deepcopy(body)
    result = V.validate(body, "web", RECEIVED)
    assert result.event is not None
    assert result.event["properties"]["currency"] == "USD"
    assert body == original

    body["properties"]["currency"] = "USD"  # nothing to normalise: no copy needed
    result = V.validate(body, "web", RECEIVED)
    assert result.event is not None
    assert result.event["properties"] == body["properties"]


def test_each_event_has_its_generated_function() -> None:
    source = V.generated_source("Order Completed")
    assert source.startswith("def check(body, get, call, name, key, source, received_at, latest)")
    assert "'order_id'" in source and "_MISSING_CONTEXT0" in source
