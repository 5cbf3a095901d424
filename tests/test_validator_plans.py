"""Plans built directly from the model dataclasses, shared by the validator tests, and a check
that they and the example plan compile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tracking_plan.model import (
    CallType,
    EventSpec,
    Identity,
    Mode,
    Plan,
    PropertySpec,
    PropType,
    SourceSpec,
    Status,
)
from tracking_plan.validator import compile_plan

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PLAN = ROOT / "examples" / "ecommerce.yaml"
RECEIVED = 1_795_000_000.0  # 2026-11-18T11:06:40.000Z

P = PropertySpec

ORDER_PROPS = (
    P("order_id", PropType.STRING, required=True, pattern="^ord_[0-9]{3}$"),
    P("total", PropType.NUMBER, required=True, minimum=0, maximum=1000),
    P("currency", PropType.STRING, format="currency", default="EUR", has_default=True),
    P("coupon", PropType.STRING, nullable=True, max_length=10),
    P("method", PropType.STRING, enum=("card", "paypal")),
    P(
        "items",
        PropType.ARRAY,
        minimum=1,
        maximum=3,
        items=P(
            "item",
            PropType.OBJECT,
            properties=(
                P("sku", PropType.STRING, required=True),
                P("price", PropType.NUMBER, minimum=0),
                P("qty", PropType.INTEGER, minimum=1),
                P("currency", PropType.STRING, format="currency"),
            ),
            additional_properties=False,
        ),
    ),
    P("paid_at", PropType.TIMESTAMP),
    P("gift", PropType.BOOLEAN),
    P("meta", PropType.OBJECT),
    P("tags", PropType.ARRAY, items=P("tag", PropType.STRING)),
    P("code", PropType.STRING, pattern="[0-9]{2}"),  # unanchored: search semantics
    P("note", PropType.STRING, minimum=2),
    P("email_hint", PropType.ANY),
)


def make_plan(
    default_mode: Mode = Mode.BLOCK, identity: Identity = Identity.ANY, **extra: Any
) -> Plan:
    return Plan(
        name="Test Shop",
        version="7.1",
        default_mode=default_mode,
        identity=identity,
        required_context=("library.name",),
        pii=("email", "credit_card_number"),
        sources={
            "web": SourceSpec("web", platform="web", mode=Mode.FLAG),
            "server": SourceSpec("server", platform="server"),
            "app": SourceSpec("app", platform="ios", mode=Mode.OMIT),
        },
        events={
            "Order Completed": EventSpec(
                "Order Completed", sources=("server", "web", "app"), properties=ORDER_PROPS
            ),
            "Old Event": EventSpec("Old Event", status=Status.DEPRECATED),
            "Server Only": EventSpec("Server Only", sources=("server",)),
            "Loose": EventSpec(
                "Loose", allow_unplanned_properties=True, properties=(P("a", PropType.INTEGER),)
            ),
            "identify": EventSpec(
                "identify",
                call=CallType.IDENTIFY,
                properties=(P("plan", PropType.STRING, enum=("free", "pro")),),
            ),
            "page:Home": EventSpec("Home", call=CallType.PAGE),
        },
        **extra,
    )


def order(**props: Any) -> dict[str, Any]:
    """A valid `Order Completed` call; keyword arguments replace properties (None removes)."""
    properties: dict[str, Any] = {
        "order_id": "ord_123",
        "total": 99.5,
        "currency": "usd",
        "items": [{"sku": "a", "price": 10, "qty": 2}],
    }
    for key, value in props.items():
        if value is None:
            properties.pop(key, None)
        else:
            properties[key] = value
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "messageId": "m1",
        "context": {"library": {"name": "analytics.js"}},
        "properties": properties,
        "timestamp": "2026-11-18T08:00:00.000Z",
    }


def test_plans_compile() -> None:
    from tracking_plan.loader import load_plan

    for plan in (make_plan(), load_plan(EXAMPLE_PLAN)):
        validator = compile_plan(plan)
        assert validator.plan_version == plan.version
        for key in plan.events:
            assert "def check(" in validator.generated_source(key)
