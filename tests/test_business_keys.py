"""Business keys (plan `unique`): the plan format, the validate stage's duplicate_key violation and
repeat counts, the automatic "same payload" key, restarts, replay, quarantine replay, diff, lint,
metrics, and hostile key values."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from detectors.records import WindowRecord
from streams.merge import merge_records
from streams.pipeline import BatchOutput, BatchProcessor, tally
from streams.plan_sync import ActivePlan, swap_into
from streams.quarantine import ReplayPlanner
from streams.replay import replay
from streams.simulator.traffic import simulate
from streams.windows import WindowAggregator
from streams.worker import _export_validate_metrics
from tracking_plan.business_keys import (
    PAYLOAD_HORIZON,
    BusinessKeys,
    automatic_id,
    rule_values,
)
from tracking_plan.diff import diff_plans
from tracking_plan.lint import lint_plan
from tracking_plan.loader import PlanError, load_plan, parse_plan
from tracking_plan.model import (
    EventSpec,
    Mode,
    PropertySpec,
    PropType,
    UniqueKey,
    format_duration,
    parse_duration,
)
from tracking_plan.normalise import format_timestamp
from tracking_plan.plan_dump import dump_plan
from tracking_plan.validator import compile_plan

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_790_000_040.0
DAY = 86_400.0

PLAN = """\
plan: keys
version: "1"
defaults: {mode: block}
sources:
  web: {platform: web, mode: flag}
  server: {platform: server}
events:
  Order Completed:
    properties:
      order_id: {type: string, required: true, unique: 24h}
      total: {type: number, required: true}
  Order Refunded:
    properties:
      refund_id: {type: integer, unique: {within: 1h, mode: block}}
  Line Shipped:
    unique: {keys: [order_id, line], within: 7d}
    properties:
      order_id: {type: string, required: true}
      line: {type: integer, required: true}
      secret: {type: string, pii: true, unique: 1h}
  Product Viewed:
    properties:
      product_id: string
      tags: {type: array}
  Checkout Step Viewed:
    properties:
      checkoutId: {type: string, required: true}
      step: integer
traits:
  properties:
    account: {type: string, unique: 1h}
"""


@pytest.fixture(scope="module")
def plan():
    return parse_plan(PLAN, "keys.yaml")


def env(name, props, mid, t=T0, source="server", user="u1", call="track"):
    body = {"type": call, "messageId": mid, "anonymousId": user, "properties": props}
    if call == "track":
        body["event"] = name
    elif call == "identify":
        body["traits"] = body.pop("properties")
    body["timestamp"] = format_timestamp(t)
    return {"source": source, "received_at": format_timestamp(t), "body": body}


def run(processor, *envelopes):
    out = BatchOutput()
    for i, item in enumerate(envelopes):
        processor.process_envelope(item, out, i)
    return out


def codes(event_or_record):
    return [v["code"] for v in event_or_record.get("violations", ())]


ORDER = {"order_id": "ord_1", "total": 10}


# ------------------------------------------------------------------------------ the pipeline


def test_a_repeated_order_id_under_another_message_id_is_flagged_not_blocked(plan):
    proc = BatchProcessor(plan)
    out = run(
        proc, env("Order Completed", ORDER, "m1"), env("Order Completed", ORDER, "m2", T0 + 5)
    )
    assert len(out.valid) == 2 and not out.quarantine  # the event's mode is block: not for keys
    first, second = (v["event"] for v in out.valid)
    assert "violations" not in first
    assert second["violations"] == [
        {
            "code": "duplicate_key",
            "path": "$.properties.order_id",
            "expected": "a value not seen in the last 24h",
            "got": "string 'ord_1'",
        }
    ]
    assert [t.repeated for t in out.tallies] == [False, True]
    assert out.tallies[1].codes == ("duplicate_key",)
    assert out.duplicate_keys == {("server", "Order Completed"): 1}
    assert not out.repeated_payloads  # a declared key replaces the automatic one


def test_a_retry_with_the_same_message_id_is_dropped_not_a_duplicate_key(plan):
    proc = BatchProcessor(plan)
    out = run(
        proc, env("Order Completed", ORDER, "m1"), env("Order Completed", ORDER, "m1", T0 + 5)
    )
    assert len(out.valid) == 1 and out.duplicates == {"server": 1}
    assert not out.duplicate_keys and [t.repeated for t in out.tallies] == [False]


def test_a_key_is_unique_again_once_its_horizon_has_passed(plan):
    proc = BatchProcessor(plan)
    out = run(
        proc,
        env("Order Completed", ORDER, "m1"),
        env("Order Completed", ORDER, "m2", T0 + DAY + 1),
        env("Order Completed", ORDER, "m3", T0 + 2 * DAY),  # within a day of the latest
    )
    assert [codes(v["event"]) for v in out.valid] == [[], [], ["duplicate_key"]]


def test_a_blocking_key_quarantines_the_repeat(plan):
    proc = BatchProcessor(plan)
    refund = {"refund_id": 77}
    out = run(proc, env("Order Refunded", refund, "m1"), env("Order Refunded", refund, "m2"))
    assert len(out.valid) == 1 and len(out.quarantine) == 1
    assert codes(out.quarantine[0]) == ["duplicate_key"]
    assert out.quarantine[0]["violations"][0]["got"] == "integer 77"
    assert out.tallies[1].quarantined and out.tallies[1].repeated


def test_a_repeat_of_an_invalid_event_stays_quarantined_with_both_violations(plan):
    proc = BatchProcessor(plan)
    bad = {"order_id": "ord_9"}  # no total: quarantined (mode block)
    out = run(proc, env("Order Completed", bad, "m1"), env("Order Completed", bad, "m2"))
    assert [codes(r) for r in out.quarantine] == [
        ["missing_required"],
        ["missing_required", "duplicate_key"],
    ]
    assert [t.repeated for t in out.tallies] == [False, True]


def test_a_flagged_repeat_keeps_its_other_violations(plan):
    proc = BatchProcessor(plan)
    odd = {**ORDER, "extra": 1}  # web is mode flag: forwarded with unplanned_property
    out = run(
        proc,
        env("Order Completed", odd, "m1", source="web"),
        env("Order Completed", odd, "m2", source="web"),
    )
    assert [codes(v["event"]) for v in out.valid] == [
        ["unplanned_property"],
        ["unplanned_property", "duplicate_key"],
    ]
    assert out.duplicate_keys == {("web", "Order Completed"): 1}


def test_the_same_order_from_another_source_is_a_repeat(plan):
    proc = BatchProcessor(plan)
    out = run(
        proc,
        env("Order Completed", ORDER, "m1", source="server"),
        env("Order Completed", ORDER, "m2", source="web"),
    )
    assert codes(out.valid[1]["event"]) == ["duplicate_key"]


@pytest.mark.parametrize(
    ("value", "violation"),
    [
        ([1, 2], "wrong_type"),
        ({"id": "ord_1"}, "wrong_type"),
        (123, "wrong_type"),
        (True, "wrong_type"),
        ("", None),  # an empty string is no key
        (None, "not_nullable"),
    ],
)
def test_a_value_of_the_wrong_type_carries_no_key(plan, value, violation):
    proc = BatchProcessor(plan)
    props = {"order_id": value, "total": 1}
    out = run(proc, env("Order Completed", props, "m1"), env("Order Completed", props, "m2"))
    events = [*(v["event"] for v in out.valid), *out.quarantine]
    assert all("duplicate_key" not in codes(e) for e in events)
    assert [t.repeated for t in out.tallies] == [False, False]
    if violation:
        assert all(violation in codes(e) for e in events)


def test_a_composite_key_repeats_only_as_a_whole(plan):
    proc = BatchProcessor(plan)
    line = {"order_id": "o1", "line": 2}
    out = run(
        proc,
        env("Line Shipped", line, "m1"),
        env("Line Shipped", {**line, "line": 3}, "m2"),
        env("Line Shipped", {**line, "line": 2.0}, "m3"),  # an integer written as a float
    )
    assert [codes(v["event"]) for v in out.valid] == [[], [], ["duplicate_key"]]
    (problem,) = out.valid[2]["event"]["violations"]
    assert problem["path"] == "$.properties"
    assert problem["expected"] == "order_id, line together not seen in the last 7d"
    assert problem["got"] == "order_id='o1', line=2"


def test_a_pii_key_is_never_echoed(plan):
    proc = BatchProcessor(plan)
    line = {"order_id": "o1", "line": 1, "secret": "jane@example.com"}
    out = run(proc, env("Line Shipped", line, "m1"), env("Line Shipped", {**line, "line": 2}, "m2"))
    (problem,) = out.valid[1]["event"]["violations"]
    assert problem["path"] == "$.properties.secret" and problem["got"] == "<redacted>"
    assert "jane" not in orjson.dumps(out.valid[1]["event"]["violations"]).decode()


def test_identify_keys_are_read_from_traits(plan):
    proc = BatchProcessor(plan)
    out = run(
        proc,
        env("", {"account": "acme"}, "m1", call="identify"),
        env("", {"account": "acme"}, "m2", call="identify", user="u2"),
    )
    (problem,) = out.valid[1]["event"]["violations"]
    assert problem["path"] == "$.traits.account"


# ------------------------------------------------------------------- the automatic payload key


def test_the_same_payload_again_is_counted_but_no_violation(plan):
    proc = BatchProcessor(plan)
    out = run(
        proc,
        env("Product Viewed", {"product_id": "p1", "tags": ["a", {"x": 1, "y": 2}]}, "m1"),
        env("Product Viewed", {"tags": ["a", {"y": 2, "x": 1}], "product_id": "p1"}, "m2"),
        env("Product Viewed", {"product_id": "p2"}, "m3"),  # other properties
        env("Product Viewed", {"product_id": "p1"}, "m4", user="u2"),  # another user
        env("Product Viewed", {"product_id": "p1"}, "m5", user="u2"),  # the same again
        env("Banner Clicked", {}, "m6"),  # unplanned: never
        env("Banner Clicked", {}, "m7"),
    )
    assert [t.repeated for t in out.tallies] == [False, True, False, False, True, False, False]
    assert all("violations" not in v["event"] for v in out.valid[:5])
    assert out.repeated_payloads == {("server", "Product Viewed"): 2}
    assert not out.duplicate_keys


def test_a_required_identifier_keys_an_event_automatically(plan):
    """A tracker firing twice repeats the identifier even when the rest of the payload differs;
    another user's event with the same identifier is not a repeat; an event that does not carry
    it falls back to its payload."""
    proc = BatchProcessor(plan)
    out = run(
        proc,
        env("Checkout Step Viewed", {"checkoutId": "c1", "step": 1}, "m1"),
        env("Checkout Step Viewed", {"checkoutId": "c1", "step": 2}, "m2"),  # fired again
        env("Checkout Step Viewed", {"checkoutId": "c1", "step": 1}, "m3", user="u2"),
        env("Checkout Step Viewed", {"step": 3}, "m4"),  # no identifier: its payload
        env("Checkout Step Viewed", {"step": 3}, "m5"),
    )
    assert [t.repeated for t in out.tallies] == [False, True, False, False, True]
    assert not out.duplicate_keys  # counted, never a violation
    assert "violations" not in out.valid[1]["event"]


@pytest.mark.parametrize(
    ("name", "keyed"),
    [("order_id", True), ("orderId", True), ("id", True), ("transactionID", True),
     ("paid", False), ("guid", False), ("userId", False), ("message_id", False)],
)  # fmt: skip
def test_which_properties_name_an_identifier(name, keyed):
    spec = EventSpec(name="E", properties=(PropertySpec(name, PropType.STRING, required=True),))
    assert (automatic_id(spec) == name) == keyed
    optional = EventSpec(name="E", properties=(PropertySpec(name, PropType.STRING),))
    assert automatic_id(optional) is None


def test_the_payload_key_lasts_an_hour_and_needs_an_id(plan):
    proc = BatchProcessor(plan)
    view = {"product_id": "p1"}
    anonymous = env("Product Viewed", view, "m3")
    del anonymous["body"]["anonymousId"]
    out = run(
        proc,
        env("Product Viewed", view, "m1"),
        env("Product Viewed", view, "m2", T0 + PAYLOAD_HORIZON + 1),
        anonymous,
        {**anonymous, "body": {**anonymous["body"], "messageId": "m4"}},
    )
    assert [t.repeated for t in out.tallies] == [False, False, False, False]


def test_business_keys_can_be_turned_off(plan):
    proc = BatchProcessor(plan, business_keys=False)
    out = run(proc, env("Order Completed", ORDER, "m1"), env("Order Completed", ORDER, "m2"))
    assert [codes(v["event"]) for v in out.valid] == [[], []]


# ---------------------------------------------------------------------- restarts, hot reload


def test_the_keys_seen_survive_a_restart(plan):
    proc = BatchProcessor(plan)
    run(proc, env("Order Completed", ORDER, "m1"), env("Product Viewed", {"product_id": "p"}, "m2"))
    state = orjson.loads(orjson.dumps(proc.keys_state()))
    again = BatchProcessor(plan)
    again.load_keys_state(state)
    out = run(
        again,
        env("Order Completed", ORDER, "m3", T0 + 60),
        env("Product Viewed", {"product_id": "p"}, "m4", T0 + 60),
    )
    assert codes(out.valid[0]["event"]) == ["duplicate_key"]
    assert [t.repeated for t in out.tallies] == [True, True]
    with pytest.raises(ValueError):
        again.load_keys_state([])  # type: ignore[arg-type]


def test_a_plan_published_later_brings_its_keys(plan):
    before = parse_plan(PLAN.replace(", unique: 24h", "").replace('"1"', '"0"'))
    proc = BatchProcessor(before)
    run(proc, env("Order Completed", ORDER, "m1"))
    assert swap_into(proc, ActivePlan(plan, compile_plan(plan)))
    out = run(proc, env("Order Completed", ORDER, "m2"), env("Order Completed", ORDER, "m3"))
    # the first under the new plan is new to its key store; the next repeats it
    assert [codes(v["event"]) for v in out.valid] == [[], ["duplicate_key"]]


# --------------------------------------------------------------------------------- hostile


def test_huge_and_unicode_odd_key_values(plan):
    keys = BusinessKeys(plan)
    (rule,) = keys.rules["Order Completed"]
    huge = "x" * 1_000_000
    odd = ["\u202eord", "ord\u0000", "é", "e\u0301", "🎉" * 10, "\ud800lone"]
    hashes = {rule_values(rule, {"order_id": v})[0] for v in [huge, *odd]}  # type: ignore[index]
    assert len(hashes) == 1 + len(odd)  # NFC and NFD are different keys: no normalisation
    proc = BatchProcessor(plan)
    out = run(
        proc,
        env("Order Completed", {"order_id": huge, "total": 1}, "m1"),
        env("Order Completed", {"order_id": huge, "total": 1}, "m2"),
    )
    (problem,) = out.valid[1]["event"]["violations"]
    assert problem["code"] == "duplicate_key" and len(problem["got"]) <= 80
    (refund,) = keys.rules["Order Refunded"]
    assert rule_values(refund, {"refund_id": 2**300}) is not None
    assert rule_values(refund, {"refund_id": 3.0}) == rule_values(refund, {"refund_id": 3})
    assert rule_values(refund, {"refund_id": 3.5}) is None
    assert rule_values(refund, {"refund_id": float("nan")}) is None
    assert rule_values(refund, {"refund_id": "3"}) is None
    assert rule_values(refund, ["not", "a", "dict"]) is None


def test_payloads_that_cannot_be_written_carry_no_key(plan):
    keys = BusinessKeys(plan)
    deep: object = "leaf"
    for _ in range(300):  # orjson writes at most 254 levels
        deep = [deep]
    assert keys.payload("Product Viewed", {"anonymousId": "a", "properties": deep}) is None
    lone = {"anonymousId": "a", "properties": {"q": "\ud800"}}
    assert keys.payload("Product Viewed", lone) is None
    same = {"anonymousId": "a", "properties": {"q": 1}}
    assert keys.payload("Product Viewed", same) == keys.payload("Product Viewed", dict(same))
    assert keys.payload("Product Viewed", {"anonymousId": 5, "properties": {}}) is None


# ---------------------------------------------------------------------------- windows, replay


def test_repeats_are_summed_into_window_records_and_kept_in_snapshots(plan):
    proc = BatchProcessor(plan, dimensions=("source",))
    out = run(
        proc,
        env("Order Completed", ORDER, "m1"),
        env("Order Completed", ORDER, "m2", T0 + 1),
        env("Order Completed", {"order_id": "ord_1"}, "m3", T0 + 2),  # quarantined, repeated
    )
    agg = WindowAggregator(dimensions=("source",), plan=plan)
    agg.add_tallies(out.tallies, proc.paths)
    restored = WindowAggregator(dimensions=("source",), plan=plan)
    restored.load_state(orjson.loads(orjson.dumps(agg.to_state())))
    for a in (agg, restored):
        (record,) = [
            r
            for r in a.flush_all()
            if r.kind == "volume" and r.series["event"] == "Order Completed"
        ]
        assert (record.count, record.violations, record.repeats) == (2, 2, 2)
        assert WindowRecord.from_dict(orjson.loads(orjson.dumps(record.to_dict()))) == record


def test_an_aggregator_snapshot_from_before_repeats_still_loads(plan):
    agg = WindowAggregator(dimensions=("source",), plan=plan)
    agg.add({"anonymousId": "u"}, "web", event_key="Order Completed", received_at=T0)
    state = agg.to_state()
    for _, series in state["volumes"]:
        for entry in series:
            entry.pop()  # the 6th item, repeats
    agg.load_state(state)
    (record,) = [r for r in agg.flush_all() if r.kind == "volume"]
    assert record.repeats == 0 and record.count == 1
    old = record.to_dict()
    del old["repeats"]
    assert WindowRecord.from_dict(old).repeats == 0


def test_tally_carries_the_repeated_flag(plan):
    result = compile_plan(plan).validate(env("Order Completed", ORDER, "m")["body"], "server", T0)
    assert tally("server", result, T0, {}, ((),) * 2, True).repeated is True
    assert tally("server", result, T0, {}, ((),) * 2).repeated is False


def test_replay_counts_a_double_fired_order_in_its_window_record(plan):
    lines = [
        orjson.dumps(e)
        for e in (
            env("Order Completed", ORDER, "m1", T0 + 1),
            env("Order Completed", ORDER, "m2", T0 + 2),  # double firing
            env("Order Completed", ORDER, "m2", T0 + 3),  # ... and a retry of it
            env("Order Completed", {**ORDER, "order_id": "ord_2"}, "m4", T0 + 4),
        )
    ]
    records: list[WindowRecord] = []
    stats = replay(plan, lines, on_window=records.append)
    assert (stats.duplicates, stats.duplicate_keys, stats.repeated_payloads) == (1, 1, 0)
    orders = [r for r in records if r.series.get("event") == "Order Completed"]
    assert sum(r.count for r in orders) == 3 and sum(r.repeats for r in orders) == 1


def test_simulated_normal_traffic_repeats_no_order_id():
    plan = load_plan(ROOT / "examples" / "ecommerce.yaml")
    assert plan.events["Order Completed"].business_keys()
    start = datetime(2026, 11, 2, tzinfo=UTC)
    lines = [orjson.dumps(e) for e in simulate(plan, start, 0.5, 4000, 5)]
    records: list[WindowRecord] = []
    stats = replay(plan, lines, on_window=records.append)
    orders = sum(r.count for r in records if r.series.get("event") == "Order Completed")
    assert orders > 10 and stats.duplicates > 0  # retries there are, with their messageId
    assert stats.duplicate_keys == 0
    assert not any(r.violation_codes.get("duplicate_key") for r in records)
    assert stats.repeated_payloads > 0  # people look at a product twice


# ------------------------------------------------------------------------- quarantine replay


def _record(plan, mode_block: bool):
    text = PLAN if mode_block else PLAN.replace("{within: 1h, mode: block}", "1h")
    current = parse_plan(text)
    proc = BatchProcessor(parse_plan(PLAN))
    refund = {"refund_id": 5}
    out = run(proc, env("Order Refunded", refund, "m1"), env("Order Refunded", refund, "m2"))
    (record,) = out.quarantine
    return current, orjson.dumps([record])


def test_quarantine_replay_keeps_a_blocked_repeat_while_the_plan_blocks_it(plan):
    current, message = _record(plan, mode_block=True)
    planner = ReplayPlanner(compile_plan(current), 4)
    assert planner.message(0, 0, message) == []
    assert planner.summary.still_invalid == {"duplicate_key": 1}


def test_quarantine_replay_forwards_it_flagged_once_the_key_only_flags(plan):
    current, message = _record(plan, mode_block=False)
    planner = ReplayPlanner(compile_plan(current), 4)
    (item,) = planner.message(0, 0, message)
    assert codes(item.event) == ["duplicate_key"] and planner.summary.flagged == 1


# ------------------------------------------------------------------------------ metrics


def test_the_worker_exports_duplicate_keys_and_repeated_payloads(plan):
    def value(name):
        labels = {"source": "server", "event": "Order Completed"}
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = value("trackwatch_duplicate_keys_total")
    proc = BatchProcessor(plan)
    _export_validate_metrics(
        run(proc, env("Order Completed", ORDER, "m1"), env("Order Completed", ORDER, "m2"))
    )
    assert value("trackwatch_duplicate_keys_total") == before + 1
    flagged = REGISTRY.get_sample_value(
        "trackwatch_events_flagged_total",
        {"source": "server", "event": "Order Completed", "code": "duplicate_key"},
    )
    assert flagged and flagged >= 1
    views = {"source": "server", "event": "Product Viewed"}
    before = REGISTRY.get_sample_value("trackwatch_repeated_payloads_total", views) or 0.0
    v = {"product_id": "p"}
    _export_validate_metrics(
        run(proc, env("Product Viewed", v, "m3"), env("Product Viewed", v, "m4"))
    )
    assert REGISTRY.get_sample_value("trackwatch_repeated_payloads_total", views) == before + 1


# ------------------------------------------------------------------------------ plan format


def test_both_forms_load_and_round_trip(plan):
    order = plan.events["Order Completed"]
    assert order.business_keys() == (UniqueKey(("order_id",), DAY, Mode.FLAG, 10),)
    line = plan.events["Line Shipped"]
    assert [k.properties for k in line.business_keys()] == [("secret",), ("order_id", "line")]
    assert line.unique == UniqueKey(("order_id", "line"), 7 * DAY, Mode.FLAG, 16)
    assert plan.events["Order Refunded"].business_keys()[0].mode is Mode.BLOCK
    again = parse_plan(dump_plan(plan))
    for key, event in plan.events.items():
        keys = [(k.properties, k.within_seconds, k.mode) for k in event.business_keys()]
        assert keys == [
            (k.properties, k.within_seconds, k.mode) for k in again.events[key].business_keys()
        ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1), ("90m", 5400), ("24h", DAY), ("7d", 7 * DAY), (" 2h ", 7200)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "h", "0h", "1.5h", "1h30m", "-1h", "24 h", "24H", "1w", 5])
def test_not_durations(text):
    assert parse_duration(text) is None  # type: ignore[arg-type]


def _event(props: str, unique: str = "") -> str:
    head = f'plan: p\nversion: "1"\nevents:\n  A:\n{unique}    properties:\n'
    return head + props


ERRORS = [
    (
        _event("      x: {type: string, unique: 24}\n"),
        "6:33: `unique` of property `x` of event `A` must be a duration, found `24` "
        "(write e.g. 24h, 24m or 24s)",
    ),
    (
        _event("      x: {type: string, unique: forever}\n"),
        "6:33: `unique` of property `x` of event `A` is `forever`, which is not a duration "
        "(write a whole number and a unit (s, m, h or d), e.g. 24h)",
    ),
    (
        _event("      x: {type: string, unique: 31d}\n"),
        "6:33: `unique` of property `x` of event `A` is 31d, longer than the 30d a key is "
        "remembered (write at most 30d)",
    ),
    (
        _event("      x: {type: string, unique: true}\n"),
        "must be a duration, found `true`",
    ),
    (
        _event("      x: {type: string, unique: }\n"),
        "6:33: `unique` of property `x` of event `A` is empty",
    ),
    (
        _event("      x: {type: number, unique: 1h}\n"),
        "6:33: `unique` needs type string or integer, property `x` of event `A` is number "
        "(set type: string or type: integer)",
    ),
    (_event("      x: {unique: 1h}\n"), "needs type string or integer"),
    (
        _event("      x: {type: string, default: a, unique: 1h}\n"),
        "`unique` and `default` together make every event without property `x` of event `A` "
        "a repeat (remove the default)",
    ),
    (
        _event(
            "      o:\n        type: object\n        properties:\n"
            "          x: {type: string, unique: 1h}\n"
        ),
        "9:37: `unique` only applies to a top-level property of an event",
    ),
    (
        _event("      l:\n        type: array\n        items: {type: string, unique: 1h}\n"),
        "`unique` only applies to a top-level property of an event",
    ),
    (
        _event("      x: {type: string, unique: {within: 1h, mode: omit}}\n"),
        "mode of `unique` of property `x` of event `A` is `omit`, which does not apply to keys",
    ),
    (
        _event("      x: {type: string, unique: {mode: block}}\n"),
        "`unique` of property `x` of event `A` has no `within` (add e.g. `within: 24h`)",
    ),
    (
        _event("      x: {type: string, unique: {within: 1h, horizon: 2h}}\n"),
        "unknown key `horizon` in `unique` of property `x` of event `A`",
    ),
    (
        _event("      x: string\n", "    unique: {keys: [y], within: 1h}\n"),
        "5:21: key `y` of event `A` is not a planned property",
    ),
    (
        _event("      x: {type: array}\n", "    unique: {keys: [x], within: 1h}\n"),
        "5:21: key `x` of event `A` is array: keys are strings or integers",
    ),
    (
        _event("      x: string\n", "    unique: {keys: [x, x], within: 1h}\n"),
        "5:24: `x` is listed twice in keys of `unique` of event `A`",
    ),
    (
        _event("      x: string\n", "    unique: {keys: [], within: 1h}\n"),
        "keys of `unique` of event `A` is empty",
    ),
    (
        _event("      x: string\n", "    unique: {keys: [x]}\n"),
        "`unique` of event `A` has no `within`",
    ),
    (
        _event("      x: string\n", "    unique: 24h\n"),
        "`unique` of event `A` must be a mapping",
    ),
    (
        _event("      x: {type: string, unique: 1h}\n", "    unique: {keys: [x], within: 2h}\n"),
        "`x` of event `A` is already unique on its own (keep one of the two declarations)",
    ),
    (
        _event("      x: {type: string, default: a}\n", "    unique: {keys: [x], within: 2h}\n"),
        "key `x` of event `A` has a default",
    ),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_loading_errors_name_the_line_and_the_fix(text, message):
    with pytest.raises(PlanError) as info:
        parse_plan(text, "plan.yaml")
    assert message in str(info.value), str(info.value)
    assert all(p.hint and p.line for p in info.value.problems)


def test_a_key_over_a_property_with_its_own_error_is_not_reported_twice():
    text = _event("      x: {type: strin}\n", "    unique: {keys: [x], within: 1h}\n")
    with pytest.raises(PlanError) as info:
        parse_plan(text, "plan.yaml")
    assert len(info.value.problems) == 1 and "strin" in str(info.value)


# ------------------------------------------------------------------------------ diff, lint


def _with(key: str) -> str:
    return PLAN.replace("order_id: {type: string, required: true, unique: 24h}", key)


@pytest.mark.parametrize(
    ("old", "new", "kind", "message"),
    [
        ("order_id: string", "order_id: {type: string, unique: 24h}", "compatible", "added (24h)"),
        (
            "order_id: string",
            "order_id: {type: string, unique: {within: 24h, mode: block}}",
            "breaking",
            "added (24h, block)",
        ),
        ("order_id: {type: string, unique: 24h}", "order_id: string", "compatible", "removed"),
        (
            "order_id: {type: string, unique: 1h}",
            "order_id: {type: string, unique: 2d}",
            "compatible",
            "within 1h → 2d",
        ),
        (
            "order_id: {type: string, unique: {within: 1h, mode: block}}",
            "order_id: {type: string, unique: {within: 2h, mode: block}}",
            "breaking",
            "more repeats quarantined",
        ),
        (
            "order_id: {type: string, unique: 1h}",
            "order_id: {type: string, unique: {within: 1h, mode: block}}",
            "breaking",
            "mode flag → block",
        ),
    ],
)
def test_diff_tells_blocking_keys_from_flagging_ones(old, new, kind, message):
    changes = diff_plans(parse_plan(_with(old)), parse_plan(_with(new).replace('"1"', '"2"')))
    (change,) = changes
    assert change.kind == kind and message in change.message
    assert change.path == "events.Order Completed.properties.order_id"


def test_diff_of_an_event_level_key():
    old = parse_plan(PLAN)
    new = parse_plan(PLAN.replace("keys: [order_id, line]", "keys: [order_id]").replace("1", "2"))
    (change,) = [c for c in diff_plans(old, new) if c.path.endswith(".unique")]
    assert change.kind == "compatible" and "['order_id', 'line'] → ['order_id']" in change.message


def test_lint_warns_about_keys_with_few_values_and_hints_at_optional_ones(plan):
    text = PLAN.replace(
        "order_id: {type: string, required: true, unique: 24h}",
        "order_id: {type: string, enum: [a, b], unique: 24h}",
    )
    findings = {(f.rule, f.path) for f in lint_plan(parse_plan(text))}
    assert ("key-enum", "events.Order Completed.properties.order_id") in findings
    assert ("key-optional", "events.Order Completed.properties.order_id") in findings
    assert not {r for r, _ in findings if r.startswith("key-")} - {"key-enum", "key-optional"}
    clean = {f.rule for f in lint_plan(plan) if f.path.startswith("events.Order Completed")}
    assert not clean & {"key-enum", "key-optional"}


def test_partial_records_of_partitions_add_up_their_repeats():
    part = {"series": {"event": "A"}, "window_start": T0, "window_end": T0 + 60, "count": 3}
    merged = merge_records(
        [WindowRecord(**part, repeats=1), WindowRecord(**part, repeats=2), WindowRecord(**part)]
    )
    assert [(r.count, r.repeats) for r in merged] == [(9, 3)]


def test_the_documented_business_keys_example_loads():
    doc = (ROOT / "docs" / "tracking-plan.md").read_text()
    example = doc.split("## Business keys", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    plan = parse_plan('plan: p\nversion: "1"\n' + example, "docs/tracking-plan.md")
    keys = {k: [key.properties for key in e.business_keys()] for k, e in plan.events.items()}
    assert keys == {
        "Order Completed": [("order_id",)],
        "Order Line Shipped": [("order_id", "line")],
        "Refund Issued": [("refund_id",)],
    }
    assert plan.events["Refund Issued"].business_keys()[0].mode is Mode.BLOCK


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["m1", "m2", "m3"]), _JSON, _JSON), max_size=6))
def test_any_key_values_never_break_the_stage_and_only_valid_ones_repeat(plan, calls):
    proc = BatchProcessor(plan)
    out = BatchOutput()
    seen: set[str] = set()
    for i, (mid, order_id, other) in enumerate(calls):
        props = {"order_id": order_id, "total": 1, "refund_id": other}
        proc.process_envelope(env("Order Completed", props, f"{mid}-{i % 2}"), out, i)
        proc.process_envelope(env("Order Refunded", {"refund_id": other}, f"r{mid}-{i}"), out, i)
        for item in (*(v["event"] for v in out.valid), *out.quarantine):
            for v in item.get("violations", ()):
                if v["code"] == "duplicate_key":
                    seen.add(v["path"])
    assert out.received == 2 * len(calls) == len(out.tallies) + sum(out.duplicates.values())
    assert seen <= {"$.properties.order_id", "$.properties.refund_id"}
    repeated_orders = sum(t.repeated for t in out.tallies if t.key == "Order Completed")
    strings = [o for _, o, _ in calls if type(o) is str and o]
    assert repeated_orders <= max(0, len(strings) - len(set(strings)))
