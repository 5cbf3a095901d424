"""Plan lint: each rule fires on the line it should, and a clean plan has no warnings."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tracking_plan.lint import LintFinding, event_name_style, lint_plan, name_style
from tracking_plan.loader import load_plan, parse_plan

ROOT = Path(__file__).resolve().parents[1]
PLANS = Path(__file__).parent / "plans"


def by_rule(findings: list[LintFinding]) -> dict[str, list[tuple[str, str, int | None]]]:
    out: dict[str, list[tuple[str, str, int | None]]] = {}
    for f in findings:
        out.setdefault(f.rule, []).append((f.severity, f.path, f.line))
    return out


def test_every_smell_of_the_fixture_is_found_on_its_line():
    rules = by_rule(lint_plan(load_plan(PLANS / "lint_smells.yaml")))
    assert rules == {
        "deprecated-in-funnel": [("error", "funnels.buy", 10)],
        "funnel-sources": [("error", "funnels.buy", 10)],
        "pii-property": [("error", "events.Order Completed.properties.email", 27)],
        "unused-source": [("warning", "sources.kiosk", 8)],
        "missing-owner": [("warning", "events.Order Completed", 20)],
        "inconsistent-name": [("warning", "events.Order Completed.properties.productId", 24)],
        "name-style": [("warning", "events.Order Completed.properties.productId", 24)],
        "type-conflict": [("warning", "events.Order Completed.properties.price", 26)],
        "enum-duplicate": [("warning", "events.Order Completed.properties.status", 28)],
        "missing-description": [("warning", "events.Newsletter Subscribed", 29)],
        "unanchored-pattern": [("info", "events.Order Completed.properties.order_id", 25)],
        "required-default": [("info", "events.Newsletter Subscribed.properties.list_name", 34)],
        "event-style": [("warning", "events.order_refunded", 35)],
    }


def test_findings_are_sorted_errors_first():
    findings = lint_plan(load_plan(PLANS / "lint_smells.yaml"))
    order = {"error": 0, "warning": 1, "info": 2}
    assert [order[f.severity] for f in findings] == sorted(order[f.severity] for f in findings)


def test_messages_say_what_to_do():
    findings = {f.rule: f.message for f in lint_plan(load_plan(PLANS / "lint_smells.yaml"))}
    assert "`product_id`" in findings["name-style"]
    assert "number" in findings["type-conflict"] and "string" in findings["type-conflict"]
    assert "'paid'" in findings["enum-duplicate"]


def test_example_plan_has_no_errors():
    findings = lint_plan(load_plan(ROOT / "examples" / "ecommerce.yaml"))
    assert [f for f in findings if f.severity == "error"] == []


def test_clean_plan_has_no_findings():
    plan = parse_plan(
        textwrap.dedent("""\
        plan: Clean
        version: "1"
        sources: {web: {}}
        funnels:
          - {name: f, steps: [Viewed, Bought]}
        events:
          Viewed:
            description: Seen.
            owner: team
            properties:
              item_id: {type: string, pattern: "^i_[0-9]+$"}
          Bought:
            description: Bought.
            owner: team
            sources: [web]
            properties:
              item_id: {type: string}
              unit_price: {type: number}
        """)
    )
    assert lint_plan(plan) == []


def test_nested_properties_are_linted_too():
    plan = parse_plan(
        textwrap.dedent("""\
        plan: Nested
        version: "1"
        pii: [email]
        events:
          A:
            description: a
            owner: o
            properties:
              buyer:
                type: object
                properties:
                  email: {type: string}
              items:
                type: array
                items:
                  type: object
                  properties:
                    item_id: {type: string}
                    itemId: {type: string}
        """)
    )
    rules = by_rule(lint_plan(plan))
    assert rules["pii-property"] == [("error", "events.A.properties.buyer.email", 12)]
    assert ("warning", "events.A.properties.items[].itemId", 19) in rules["inconsistent-name"]


def test_pii_lookalike_is_a_warning():
    plan = parse_plan(
        'plan: p\nversion: "1"\npii: [email]\nevents:\n  A:\n    properties:\n'
        "      Email: {type: string}\n"
    )
    (finding,) = [f for f in lint_plan(plan) if f.rule == "pii-property"]
    assert finding.severity == "warning" and finding.line == 7


def test_draft_in_funnel_and_repeated_step():
    plan = parse_plan(
        'plan: p\nversion: "1"\nfunnels:\n  - {name: f, steps: [A, B, A]}\n'
        "events:\n  A: {}\n  B: {status: draft}\n"
    )
    rules = by_rule(lint_plan(plan))
    assert rules["draft-in-funnel"] == [("warning", "funnels.f", 4)]
    assert rules["funnel-repeat"] == [("warning", "funnels.f", 4)]


def test_sources_named_without_a_sources_section():
    plan = parse_plan('plan: p\nversion: "1"\nevents:\n  A: {sources: [web]}\n')
    assert by_rule(lint_plan(plan))["undeclared-sources"] == [("warning", "sources", None)]


def test_event_name_styles():
    assert event_name_style("Order Completed") == "Title Case"
    assert event_name_style("Checkout") == "Title Case"
    assert event_name_style("order completed") == "lower case"
    assert event_name_style("order_completed") == "snake_case"
    assert event_name_style("orderCompleted") == "camelCase"


def test_name_styles():
    assert name_style("product_id") == "snake_case"
    assert name_style("productId") == "camelCase"
    assert name_style("ProductId") == "PascalCase"
    assert name_style("product-id") == "kebab-case"
    assert name_style("price") == "single"
    assert name_style("Product ID") == "other"
