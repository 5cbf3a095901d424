"""JSON Schema import: keyword mapping, bundles, warnings for what is not supported, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracking_plan.jsonschema_import import (
    import_json_schema,
    load_json_schema,
    load_json_schemas,
    parse_json_schema,
)
from tracking_plan.loader import PlanError, parse_plan
from tracking_plan.model import CallType, PropType

PLANS = Path(__file__).parent / "plans"


def props_of(result, event: str = "E") -> dict:
    return {p.name: p for p in result.plan.events[event].properties}


def one_event(properties: dict, required: list[str] | None = None, **extra) -> dict:
    return {
        "title": "E",
        "type": "object",
        "properties": properties,
        "required": required or [],
        **extra,
    }


def test_single_event_schema_file():
    result = load_json_schema(PLANS / "order_completed.schema.json")
    event = result.plan.events["Order Completed"]
    assert event.description == "An order was placed and paid."
    assert event.allow_unplanned_properties  # JSON Schema allows extra fields unless told
    props = props_of(result, "Order Completed")
    assert props["order_id"].required and props["order_id"].max_length == 24
    assert props["order_id"].pattern == "^ord_[0-9A-Za-z]{6,20}$"
    assert props["total"].type is PropType.NUMBER and props["total"].minimum == 0
    assert props["total"].description == "Order value incl. tax."
    assert props["currency"].enum == ("EUR", "USD", "GBP") and props["currency"].default == "EUR"
    assert props["coupon"].type is PropType.STRING and props["coupon"].nullable
    assert props["placed_at"].type is PropType.TIMESTAMP
    assert props["channel"].enum == ("web",)
    assert props["items_count"].type is PropType.INTEGER and props["items_count"].minimum == 1
    products = props["products"]
    assert products.type is PropType.ARRAY and products.required and products.minimum == 1
    item = products.items
    assert item is not None and not item.additional_properties
    assert {p.name: p.required for p in item.properties} == {
        "product_id": True,
        "price": False,
        "quantity": False,
    }
    assert props["gift"].type is PropType.BOOLEAN and props["gift"].nullable
    assert props["note"].type is PropType.ANY
    assert sorted(result.warnings) == [
        "/properties/context: envelope field 'context' is not imported",
        "/properties/properties/properties/note/oneOf: oneOf is not supported; imported as any",
        "/properties/properties/properties/products/uniqueItems: keyword 'uniqueItems' is not"
        " supported; dropped",
    ]


def test_imported_plan_round_trips_through_yaml():
    result = load_json_schema(PLANS / "order_completed.schema.json")
    again = parse_plan(result.to_yaml())
    assert again.events.keys() == result.plan.events.keys()
    names = [p.name for p in result.plan.events["Order Completed"].properties]
    assert [p.name for p in again.events["Order Completed"].properties] == names


def test_bundle_with_identify():
    result = load_json_schema(PLANS / "protocols_bundle.json", version="7")
    plan = result.plan
    assert plan.name == "Imported Shop" and plan.version == "7"
    assert list(plan.events) == ["Product Viewed", "Signed Up", "identify"]
    assert plan.events["Product Viewed"].description == "A product page was shown."
    assert plan.events["identify"].call is CallType.IDENTIFY
    assert plan.events["identify"].properties[0].enum == ("free", "pro")
    assert result.warnings == ["/rules/global: global rules are not supported; dropped"]


def test_bundle_as_mapping_of_schemas():
    doc = {"events": {"A": {"type": "object", "properties": {"x": {"type": "integer"}}}, "B": {}}}
    plan = import_json_schema(doc).plan
    assert list(plan.events) == ["A", "B"]
    assert plan.events["A"].properties[0].type is PropType.INTEGER


def test_plain_schema_without_envelope():
    result = import_json_schema(
        one_event({"a": {"type": "string", "minLength": 2}}, ["a"], additionalProperties=False)
    )
    (a,) = result.plan.events["E"].properties
    assert a.required and a.minimum == 2
    assert not result.plan.events["E"].allow_unplanned_properties


def test_unsupported_keywords_are_warnings_with_pointers():
    result = import_json_schema(
        one_event(
            {
                "a": {"type": "string", "format": "uuid", "contentEncoding": "base64"},
                "b": {"type": "array", "items": [{"type": "string"}]},
                "c": {"type": "object", "additionalProperties": {"type": "string"}},
                "d": {"type": "number", "exclusiveMaximum": 5},
                "e": {"type": ["string", "integer"]},
            },
            if_={"x": 1},
        )
    )
    assert sorted(result.warnings) == [
        "/if_: keyword 'if_' on an event is not supported; dropped",
        "/properties/a/contentEncoding: keyword 'contentEncoding' is not supported; dropped",
        "/properties/a/format: format 'uuid' is not supported; dropped",
        "/properties/b/items: tuple validation (a list of schemas) is not supported",
        "/properties/c/additionalProperties: a schema for extra fields is not supported",
        "/properties/d/exclusiveMaximum: exclusiveMaximum 5 imported as inclusive",
        "/properties/e/type: union type ['string', 'integer'] imported as any",
    ]


def test_exclusive_bounds_on_integers_are_exact():
    props = props_of(
        import_json_schema(
            one_event({"n": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}})
        )
    )
    assert (props["n"].minimum, props["n"].maximum) == (1, 9)
    draft4 = props_of(
        import_json_schema(
            one_event({"n": {"type": "integer", "minimum": 0, "exclusiveMinimum": True}})
        )
    )
    assert draft4["n"].minimum == 1


def test_refs_local_recursive_and_external():
    doc = one_event(
        {
            "a": {"$ref": "#/definitions/name"},
            "tree": {"$ref": "#/definitions/node"},
            "ext": {"$ref": "https://example.com/x.json"},
        },
        definitions={
            "name": {"type": "string", "maxLength": 5},
            "node": {"type": "object", "properties": {"child": {"$ref": "#/definitions/node"}}},
        },
    )
    result = import_json_schema(doc)
    props = props_of(result)
    assert props["a"].type is PropType.STRING and props["a"].max_length == 5
    (child,) = props["tree"].properties
    assert child.name == "child" and child.type is PropType.ANY
    assert any("recursive" in w for w in result.warnings)
    assert any("not local" in w for w in result.warnings)


def test_errors_name_the_json_pointer():
    with pytest.raises(PlanError) as info:
        import_json_schema(
            one_event(
                {
                    "a": {"$ref": "#/$defs/missing"},
                    "b": {"type": "strnig"},
                    "c": {"type": "integer", "minimum": 5, "maximum": 1},
                    "d": {"type": "string", "enum": ["x", 3]},
                    "e": {"type": "integer", "default": "x"},
                }
            )
        )
    messages = [p.message for p in info.value.problems]
    assert messages == [
        "/properties/a: $ref '#/$defs/missing' points nowhere",
        "/properties/b/type: unknown type 'strnig'",
        "/properties/c: lower bound 5 is above upper bound 1",
        "/properties/d/enum: enum value 3 is not of type string",
        "/properties/e/default: default is not of type integer",
    ]


def test_documents_that_are_not_plans():
    for doc, message in (
        ([], "must be an object"),
        ({"type": "object"}, "event has no name"),
        ({"events": 3}, "events must be a list or an object"),
        ({"events": []}, "no event found"),
        ({"events": [{"name": "A"}, {"name": "A"}]}, "defined twice"),
        ({"events": {"A\u200f": {}}}, "invisible character"),
    ):
        with pytest.raises(PlanError) as info:
            import_json_schema(doc)
        assert message in str(info.value), doc


def test_json_syntax_errors_have_positions():
    with pytest.raises(PlanError) as info:
        parse_json_schema('{\n  "title": "A",\n  "type": object\n}', "s.json")
    (p,) = info.value.problems
    assert (p.file, p.line, p.column) == ("s.json", 3, 11)


def test_hostile_json():
    for text in (
        "[" * 100_000 + "]" * 100_000,
        '{"title": "' + "x" * (6 * 1024 * 1024) + '"}',
        b"\xff\xfe{}",
        '{"title": "A", "properties": {"n": {"type": "integer", "minimum": 1' + "0" * 5000 + "}}}",
        '{"title": "\\ud800"}',
        '{"title": "A", "properties": {"\\u0000": {}}}',
        json.dumps({"title": "A", "properties": {"p": {"type": "number", "maximum": 1e400}}}),
        '{"title": "A", "properties": '
        + '{"a": {"type": "object", "properties": ' * 40
        + "{}"
        + "}}" * 40
        + "}",
    ):
        try:
            parse_json_schema(text)
        except PlanError as exc:
            assert exc.problems
            str(exc).encode("utf-8")


_JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(
                ["type", "properties", "items", "enum", "const", "minimum", "maximum", "required",
                 "pattern", "$ref", "format", "title", "events", "rules", "anyOf", "default",
                 "string", "integer", "object", "array", "null", "x", "minLength", "maxLength",
                 "exclusiveMinimum", "additionalProperties", "$defs", "description", "oneOf"]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=25,
)  # fmt: skip


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(_JSONISH)
def test_fuzz_only_plan_errors_escape(document):
    try:
        result = import_json_schema(
            {"title": "E", **document} if isinstance(document, dict) else document
        )
    except PlanError as exc:
        assert exc.problems
        assert all("\n" not in str(p) for p in exc.problems)
    else:
        assert all("\n" not in w for w in result.warnings)
        parse_plan(result.to_yaml())  # whatever is imported is a valid plan


def test_several_files_and_a_directory(tmp_path):
    (tmp_path / "signed_up.json").write_text(
        json.dumps({"type": "object", "properties": {"method": {"type": "string"}}})
    )
    result = load_json_schemas([PLANS / "order_completed.schema.json", tmp_path], version="2")
    assert list(result.plan.events) == ["Order Completed", "signed_up"]  # untitled: file name
    assert all(w.startswith(str(PLANS / "order_completed.schema.json")) for w in result.warnings)
    parse_plan(result.to_yaml())


def test_an_event_in_two_files_is_an_error(tmp_path):
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(json.dumps({"title": "Same", "type": "object"}))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(PlanError) as info:
        load_json_schemas([tmp_path])
    messages = sorted(str(p) for p in info.value.problems)
    assert messages[0].startswith(f"{tmp_path / 'b.json'}: event 'Same' is also defined in")
    assert messages[1].startswith(f"{tmp_path / 'broken.json'}:1:2: invalid JSON")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PlanError, match=r"no \.json files"):
        load_json_schemas([tmp_path / "empty"])
    with pytest.raises(PlanError, match="cannot read schema"):
        load_json_schemas([tmp_path / "missing.json"])
