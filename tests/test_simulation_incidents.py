"""Each incident of the independent generator changes the traffic in its scope and nowhere
else: the same seed generated with and without it (clean twins) differ only there. And every
profile's labels are fair ground truth for `detectors.backtest`."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from detectors.annotations import parse_annotations
from detectors.backtest import Label
from simulation.generator import generate
from simulation.incidents import (
    CLASSES,
    BotFlood,
    Campaign,
    ConversionFalls,
    DoubleFiring,
    EventsLost,
    LeakedCoupon,
    ReleaseStopsEvent,
    RenamedProperty,
    SparseEventStops,
)
from simulation.journeys import LEAKED_CODE
from simulation.profiles import PROFILES, Planned, ProfileError, scenario
from streams.envelope import received_at_epoch
from tracking_plan.loader import load_plan
from tracking_plan.normalise import parse_timestamp

BASE = PROFILES["fast-releases-5k"]  # forced updates: a release is everywhere within hours
RELEASES = (
    ("ios", "12.2.0", "day -6 08:00"),
    ("ios", "12.3.0", "day 0 09:00"),
    ("android", "12.2.0", "day -6 08:00"),
    ("android", "12.3.0", "day 0 09:00"),
)
PLAN = load_plan(BASE.plan_path())
ENGINE_KINDS = {"spike", "drop", "disappeared", "new_event", "conversion_up", "conversion_down",
                "violation_surge", "campaign"}  # fmt: skip
SERIES_KEYS = {"event", "source", "platform", "app_version", "from_event", "to_event"}


def twins(planned: Planned, users: int = 2500, days: float = 0.8, seed: int = 5):
    """The envelopes by messageId with the incident and without, and the incident."""
    profile = replace(BASE, releases=RELEASES, incidents=(planned,))
    run = scenario(profile, days=days, users_per_day=users)
    clean = scenario(profile, days=days, users_per_day=users, incidents=False)
    with_it = {e["body"]["messageId"]: e for e in generate(run, seed)}
    without = {e["body"]["messageId"]: e for e in generate(clean, seed)}
    removed = [without[m] for m in without.keys() - with_it.keys()]
    added = [with_it[m] for m in with_it.keys() - without.keys()]
    changed = [
        (without[m], with_it[m])
        for m in with_it.keys() & without.keys()
        if orjson.dumps(with_it[m]) != orjson.dumps(without[m])
    ]
    return removed, added, changed, run.incidents[0], with_it


def version(envelope) -> str | None:
    return ((envelope["body"].get("context") or {}).get("app") or {}).get("version")


def event_time(envelope) -> float:
    return parse_timestamp(envelope["body"]["timestamp"])


def test_a_release_that_stops_sending_an_event_removes_only_that_versions_events():
    planned = Planned(ReleaseStopsEvent, "stops", "release", 10,
                      {"source": "ios_app", "app_version": "12.3.0"})  # fmt: skip
    removed, added, changed, incident, _ = twins(planned)
    assert len(removed) >= 3 and not added and not changed
    for envelope in removed:
        assert envelope["source"] == "ios_app" and version(envelope) == "12.3.0"
        assert envelope["body"]["event"] == "Order Placed"
        assert incident.start <= event_time(envelope) < incident.end


def test_a_renamed_property_changes_only_that_versions_events():
    planned = Planned(RenamedProperty, "renames", "release", 10,
                      {"source": "android_app", "app_version": "12.3.0"})  # fmt: skip
    removed, added, changed, _, _ = twins(planned)
    assert len(changed) >= 3 and not removed and not added
    for before, after in changed:
        assert after["source"] == "android_app" and version(after) == "12.3.0"
        assert after["body"]["event"] == "Order Placed"
        assert "orderId" in after["body"]["properties"]
        assert "order_id" not in after["body"]["properties"]
        assert after["body"]["properties"]["orderId"] == before["body"]["properties"]["order_id"]


def test_double_firing_adds_copies_with_new_message_ids_and_the_same_order_ids():
    planned = Planned(DoubleFiring, "twice", "day 0 10:00", 6, {"source": "storefront"})
    removed, added, changed, incident, everything = twins(planned)
    assert len(added) >= 3 and not removed and not changed
    orders = {}
    for envelope in everything.values():
        if envelope["body"].get("event") == "Order Placed":
            order = envelope["body"]["properties"]["order_id"]
            orders[order] = orders.get(order, 0) + 1
    for envelope in added:
        assert envelope["source"] == "storefront"
        assert envelope["body"]["event"] == "Order Placed"
        assert orders[envelope["body"]["properties"]["order_id"]] >= 2
        assert incident.start <= event_time(envelope) < incident.end + 5


def test_a_sparse_event_that_stops_removes_only_it_and_keeps_its_screen():
    planned = Planned(SparseEventStops, "signups stop", "day 0 10:00", 8, {"source": "storefront"})
    removed, added, changed, incident, everything = twins(planned)
    assert removed and not added and not changed
    for envelope in removed:
        assert envelope["source"] == "storefront" and envelope["body"]["event"] == "Signed Up"
        assert incident.start <= event_time(envelope) < incident.end
    screens = [
        e for e in everything.values()
        if e["source"] == "storefront" and e["body"].get("name") == "Create Account"
        and incident.start <= event_time(e) < incident.end
    ]  # fmt: skip
    assert screens  # what leads to the event goes on


def test_a_conversion_fall_changes_only_the_sessions_that_checked_out_on_that_source():
    planned = Planned(ConversionFalls, "orders fail", "day 0 10:00", 6,
                      {"source": "ios_app", "keep": 0.0})  # fmt: skip
    removed, added, changed, incident, everything = twins(planned)
    orders = [e for e in removed if e["body"].get("event") == "Order Placed"]
    assert len(orders) >= 3
    users = {e["body"]["anonymousId"] for e in removed + added + [a for _, a in changed]}
    # the order is decided minutes after the checkout began: perhaps before the start
    checked_out = {
        e["body"]["anonymousId"] for e in everything.values()
        if e["source"] == "ios_app" and e["body"].get("event") == "Checkout Begun"
        and incident.start - 1800 <= event_time(e) < incident.end
    }  # fmt: skip
    assert users <= checked_out
    for envelope in removed + added:
        assert envelope["source"] in ("ios_app", "backend")
    # no order placed on iOS while it lasts
    assert not [
        e for e in everything.values()
        if e["source"] == "ios_app" and e["body"].get("event") == "Order Placed"
        and incident.start + 1800 <= event_time(e) < incident.end
    ]  # fmt: skip


def test_a_leaked_coupon_adds_redemptions_of_its_code_in_the_sessions_that_used_it():
    planned = Planned(LeakedCoupon, "leak", "day 0 11:00", 1.5)
    removed, added, changed, incident, _ = twins(planned, users=4000)
    redeemed = [e for e in added if e["body"].get("event") == "Promo Code Redeemed"]
    assert len(redeemed) >= 5 and not removed
    assert {e["body"]["properties"]["code"] for e in redeemed} == {LEAKED_CODE}
    users = {e["body"]["anonymousId"] for e in redeemed}
    for envelope in added + [after for _, after in changed]:
        assert envelope["body"]["anonymousId"] in users
        assert incident.start <= event_time(envelope)
    # the same sessions, later by the redemption: the orders carry the code
    for before, after in changed:
        assert before["body"].get("event") == after["body"].get("event")


def test_a_bot_flood_adds_only_item_page_views_of_bots():
    planned = Planned(BotFlood, "bots", "day 0 11:00", 0.5)
    removed, added, changed, incident, everything = twins(planned)
    people = [
        e for e in everything.values()
        if e["body"].get("name") == "Item" and e["source"] == "storefront"
        and incident.start <= event_time(e) < incident.end
    ]  # fmt: skip
    assert not removed and not changed
    assert 6 < len(people) / max(1, len(people) - len(added)) < 14  # about ×10
    for envelope in added:
        body = envelope["body"]
        assert envelope["source"] == "storefront" and body["type"] == "page"
        assert body["name"] == "Item" and "HeadlessChrome" in body["context"]["userAgent"]
        assert incident.start <= event_time(envelope) < incident.end


def test_lost_events_are_the_requests_received_while_it_lasts():
    planned = Planned(EventsLost, "lost", "day 0 11:00", 1 / 3)
    removed, added, changed, incident, everything = twins(planned)
    assert not added and not changed
    kept = [
        e for e in everything.values()
        if incident.start <= received_at_epoch(e["received_at"]) < incident.end
    ]  # fmt: skip
    assert len(removed) > 10 * len(kept) / 2  # about 95 % lost (requests, not events)
    for envelope in removed:
        assert incident.start <= received_at_epoch(envelope["received_at"]) < incident.end


def test_a_campaign_brings_new_visitors_and_changes_no_one_elses_traffic():
    planned = Planned(Campaign, "newsletter", "day 0 11:00", 2, {"platforms": ("web",)})
    removed, added, changed, incident, _ = twins(planned)
    assert len(added) > 100 and not removed and not changed
    assert {e["source"] for e in added} <= {"storefront", "backend"}
    pages = [e for e in added if e["source"] == "storefront"]
    assert all(e["body"]["context"]["campaign"]["name"] == "newsletter" for e in pages)
    assert incident.annotation()["sources"] == ["storefront", "backend"]


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_labels_are_backtest_labels_with_fair_series(name):
    run = scenario(PROFILES[name])
    labels = [Label.from_dict(entry) for entry in run.labels()]
    assert {label.incident_class for label in labels} == set(CLASSES)
    assert [label for label in labels if not label.expect_alert] == [
        label for label in labels if label.kind == "campaign"
    ]
    for label in labels:
        assert label.kind in ENGINE_KINDS and run.start < label.start < label.end <= run.end
        assert set(label.series) <= SERIES_KEYS
        for key in ("event", "from_event", "to_event"):
            if key in label.series:
                assert label.series[key] in PLAN.events
        if "source" in label.series:
            assert PLAN.sources[label.series["source"]].platform == label.series["platform"]
        for _, items in label.related:
            assert set(dict(items)) <= SERIES_KEYS
    entries = run.annotations()
    annotations = parse_annotations(orjson.dumps(entries).decode())
    assert len(annotations) == 1 and set(annotations[0].sources) <= set(PLAN.sources)


def test_a_release_bound_incident_needs_its_release():
    planned = Planned(ReleaseStopsEvent, "stops", "release", 10,
                      {"source": "ios_app", "app_version": "99.0.0"})  # fmt: skip
    with pytest.raises(ProfileError, match="does not ship"):
        scenario(replace(BASE, incidents=(planned,)))
