"""Plan diff: breaking vs compatible changes, and the version rule."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings

from tests.plan_strategies import plans
from tracking_plan.diff import Change, diff_plans, has_breaking
from tracking_plan.loader import load_plan, parse_plan

PLANS = Path(__file__).parent / "plans"
ROOT = Path(__file__).resolve().parents[1]


def plan(events: str, *, version: str = "1", head: str = "") -> object:
    return parse_plan(f'plan: p\nversion: "{version}"\n{head}events:\n{events}')


def kinds(old_events: str, new_events: str, **kw) -> list[tuple[str, str, str]]:
    changes = diff_plans(plan(old_events), plan(new_events, version="2", **kw))
    return [(c.kind, c.path, c.message) for c in changes]


def test_identical_plans_have_no_changes():
    example = load_plan(ROOT / "examples" / "ecommerce.yaml")
    assert diff_plans(example, load_plan(ROOT / "examples" / "ecommerce.yaml")) == []


def test_fixture_versions():
    changes = diff_plans(load_plan(PLANS / "shop_v1.yaml"), load_plan(PLANS / "shop_v2.yaml"))
    got = {(c.kind, c.path, c.message) for c in changes}
    assert got == {
        ("breaking", "defaults.mode", "mode flag → block (stricter)"),
        ("compatible", "sources.android", "source added"),
        ("breaking", "events.Wishlist Viewed", "event removed: senders get unplanned_event"),
        ("compatible", "events.Cart Viewed", "event added"),
        ("compatible", "events.Product Viewed", "description changed"),
        ("breaking", "events.Product Viewed.properties.product_id", "pattern '^p_[0-9]+$' added"),
        ("compatible", "events.Product Viewed.properties.price", "type integer → number (wider)"),
        ("compatible", "events.Product Viewed.properties.category", "optional property added"),
        ("breaking", "events.Order Completed", "no longer from ['ios']"),
        ("breaking", "events.Order Completed.properties.total", "min 0 → 1 (narrower)"),
        ("compatible", "events.Order Completed.properties.total", "max 1000 → 5000 (wider)"),
        (
            "breaking",
            "events.Order Completed.properties.payment",
            "enum narrowed: ['invoice'] no longer allowed",
        ),
        (
            "compatible",
            "events.Order Completed.properties.payment",
            "enum widened: ['apple_pay'] allowed",
        ),
        ("breaking", "events.Order Completed.properties.coupon", "optional → required"),
        ("breaking", "events.Order Completed.properties.items[].sku", "type string → integer"),
    }
    assert has_breaking(changes)
    lines = {c.path: c.line for c in changes}
    assert lines["events.Order Completed.properties.coupon"] == 29  # line in the new plan
    assert lines["events.Wishlist Viewed"] == 34  # removed: line in the old plan


def test_only_compatible_changes_do_not_fail():
    changes = diff_plans(
        plan("  A:\n    properties:\n      x: {type: string, enum: [a]}\n"),
        plan(
            "  A:\n    description: d\n    properties:\n      x: {type: string, enum: [a, b]}\n"
            "      y: {type: integer}\n  B: {}\n",
            version="2",
        ),
    )
    assert {c.kind for c in changes} == {"compatible"}
    assert not has_breaking(changes)


def test_removed_and_required_properties():
    assert kinds("  A:\n    properties:\n      x: {}\n", "  A: {}\n") == [
        ("breaking", "events.A.properties.x", "property removed: senders get unplanned_property")
    ]
    assert kinds("  A: {}\n", "  A:\n    properties:\n      x: {required: true}\n") == [
        ("breaking", "events.A.properties.x", "required property added")
    ]
    assert kinds(
        "  A:\n    properties:\n      x: {required: true}\n",
        "  A:\n    properties:\n      x: {}\n",
    ) == [("compatible", "events.A.properties.x", "required → optional")]


def test_removed_property_is_compatible_when_unplanned_ones_are_allowed():
    changes = kinds(
        "  A:\n    allow_unplanned_properties: true\n    properties:\n      x: {}\n",
        "  A:\n    allow_unplanned_properties: true\n",
    )
    assert [c[0] for c in changes] == ["compatible"]


def test_type_changes():
    def one(old: str, new: str) -> str:
        (change,) = kinds(
            f"  A:\n    properties:\n      x: {old}\n", f"  A:\n    properties:\n      x: {new}\n"
        )
        return change[0]

    assert one("{type: string}", "{type: integer}") == "breaking"
    assert one("{type: number}", "{type: integer}") == "breaking"
    assert one("{type: integer}", "{type: number}") == "compatible"
    assert one("{type: integer}", "{}") == "compatible"
    assert one("{type: string}", "{type: string, nullable: true}") == "compatible"
    assert one("{type: string, nullable: true}", "{type: string}") == "breaking"
    assert one("{type: string}", "{type: string, enum: [a]}") == "breaking"
    assert one("{type: string, enum: [a]}", "{type: string}") == "compatible"
    assert one("{type: string, pattern: '^a'}", "{type: string, pattern: '^b'}") == "breaking"
    assert one("{type: string, pattern: '^a'}", "{type: string}") == "compatible"
    assert one("{type: string}", "{type: string, max_length: 5}") == "breaking"
    assert one("{type: string, max_length: 5}", "{type: string, max_length: 9}") == "compatible"
    assert one("{type: number, max: 9}", "{type: number}") == "compatible"
    assert one("{type: string}", "{type: string, format: email}") == "breaking"
    assert one("{type: string, default: a}", "{type: string, default: b}") == "compatible"
    assert one("{type: object}", "{type: object, additional_properties: false}") == "breaking"


def test_mode_changes():
    assert kinds("  A: {mode: flag}\n", "  A: {mode: block}\n")[0][:2] == ("breaking", "events.A")
    assert kinds("  A: {mode: block}\n", "  A: {mode: omit}\n")[0][0] == "compatible"
    # an explicit mode equal to the default it replaces is no change
    assert kinds("  A: {}\n", "  A: {mode: block}\n") == []


def test_plan_wide_rules():
    old = parse_plan('plan: p\nversion: "1"\ndefaults: {identity: any}\n')
    new = parse_plan(
        'plan: p\nversion: "2"\ndefaults: {identity: userId}\ncontext: {required: [app.version]}\n'
        "pii: [phone]\n"
    )
    assert {(c.kind, c.path) for c in diff_plans(old, new)} == {
        ("breaking", "defaults.identity"),
        ("breaking", "context.required"),
        ("breaking", "pii"),
    }
    assert {c.kind for c in diff_plans(new, parse_plan('plan: p\nversion: "3"\n'))} == {
        "compatible"
    }


def test_deprecation_and_sources():
    assert kinds("  A: {}\n", "  A: {status: deprecated}\n")[0][0] == "breaking"
    assert kinds("  A: {status: draft}\n", "  A: {}\n")[0][0] == "compatible"
    assert kinds("  A: {}\n", "  A: {sources: [web]}\n")[0][0] == "breaking"
    assert kinds("  A: {sources: [web]}\n", "  A: {}\n")[0][0] == "compatible"


def test_version_must_go_up_when_the_plan_changes():
    old = plan("  A: {}\n", version="1.2.0")
    same = plan("  A: {}\n  B: {}\n", version="1.2.0")
    down = plan("  A: {}\n  B: {}\n", version="1.1.9")
    assert diff_plans(old, same)[-1] == Change(
        "version", "version", "plan changed but version is still '1.2.0'"
    )
    assert diff_plans(old, down)[-1].message == "version went down: '1.2.0' → '1.1.9'"
    assert has_breaking(diff_plans(old, same))  # a missing bump fails CI too
    assert diff_plans(old, plan("  A: {}\n", version="1.2.0")) == []


def test_to_dict():
    change = Change("breaking", "events.A", "event removed", 3)
    assert change.to_dict() == {
        "kind": "breaking",
        "path": "events.A",
        "message": "event removed",
        "line": 3,
    }


def test_odd_versions_are_compared_only_when_numeric():
    old = plan("  A: {}\n", version="v1.10")
    assert diff_plans(old, plan("  A: {}\n  B: {}\n", version="v1.9"))[-1].kind == "version"
    assert diff_plans(old, plan("  A: {}\n  B: {}\n", version="v1.11"))[-1].kind == "compatible"
    for odd in ("²", "1." + "9" * 5000, "2026-11", "1..2"):
        changes = diff_plans(old, plan("  A: {}\n  B: {}\n", version=odd))
        assert [c.kind for c in changes] == ["compatible"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(plans(), plans())
def test_fuzz_diff_of_random_plans(old, new):
    assert diff_plans(old, old) == []
    changes = diff_plans(old, new)
    removed = old.events.keys() - new.events.keys()
    breaking_paths = {c.path for c in changes if c.kind == "breaking"}
    assert {f"events.{name}" for name in removed} <= breaking_paths
    assert {f"events.{n}" for n in new.events.keys() - old.events.keys()} <= {
        c.path for c in changes if c.kind == "compatible"
    }
