"""Releases: first sight of app versions per source, and which versions send which events."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.records import WindowRecord
from detectors.releases import DAY, Releases

HOUR = 3600.0
NEWER = HOUR


def sent(ts: float, version: str, event: str = "Order Placed", source: str = "ios_app", n=1):
    where = {"event": event, "source": source, "platform": "ios", "app_version": version}
    return WindowRecord(where, ts, ts + 60.0, count=n)


def test_a_version_first_seen_after_the_sources_first_is_a_release_arriving():
    r = Releases(NEWER)
    r.note(0.0, [sent(0.0, "2.0"), sent(0.0, "1.9")])
    r.note(5 * HOUR, [sent(5 * HOUR, "2.1")])
    assert r.fresh(since=4 * HOUR) == {"2.1"}
    # the newest release is still arriving however long ago it was first seen (a phased
    # rollout lasts a week); once a newer one comes, an old one is no longer recent
    assert r.fresh(since=6 * HOUR) == {"2.1"}
    r.note(9 * HOUR, [sent(9 * HOUR, "2.2")])
    assert r.fresh(since=6 * HOUR) == {"2.2"}
    assert r.fresh(since=4 * HOUR) == {"2.1", "2.2"}
    # the versions there from the start are never releases arriving, however recent the start
    assert r.fresh(since=0.0) == {"2.1", "2.2"}


def test_a_source_with_only_its_first_versions_has_no_release_arriving():
    r = Releases(NEWER)
    r.note(0.0, [sent(0.0, "2.0"), sent(0.0, "1.9")])
    r.note(9 * DAY, [sent(9 * DAY, "2.0")])
    assert r.fresh(since=0.0) == set()


def test_records_without_a_version_event_or_events_are_not_sightings():
    r = Releases(NEWER)
    r.note(0.0, [sent(0.0, "2.0", n=0)])
    r.note(0.0, [WindowRecord({"event": "Order Placed", "source": "web"}, 0.0, 60.0, count=3)])
    activity = {"source": "ios_app", "platform": "ios", "app_version": "2.0"}
    r.note(0.0, [WindowRecord(activity, 0.0, 60.0, kind="activity", count=3)])
    assert r.first_seen == {} and r.last_sent == {}


def test_an_older_version_is_superseded_only_by_a_newer_one_sending_the_same_event():
    r = Releases(NEWER)
    r.note(0.0, [sent(0.0, "2.0"), sent(0.0, "2.0", event="Signed Up")])
    r.note(5 * HOUR, [sent(5 * HOUR, "2.1")])
    old = {"event": "Order Placed", "source": "ios_app", "app_version": "2.0"}
    new = {"event": "Order Placed", "source": "ios_app", "app_version": "2.1"}
    assert r.superseded(old, since=4 * HOUR)
    assert not r.superseded(old, since=6 * HOUR)  # not sent by 2.1 since then
    assert not r.superseded(new, since=0.0)  # a newer version is never superseded
    assert not r.superseded({**old, "event": "Signed Up"}, since=0.0)
    assert not r.superseded({**old, "source": "android_app"}, since=0.0)
    assert not r.superseded({"event": "Order Placed", "source": "ios_app"}, 0.0)


def test_versions_silent_for_a_week_are_forgotten_on_the_hour():
    r = Releases(NEWER, forget_days=7.0)
    r.note(0.0, [sent(0.0, "1.0"), sent(0.0, "1.0", event="Signed Up")])
    r.note(HOUR, [sent(HOUR, "2.0")])
    r.note(7 * DAY + 30 * 60.0, [sent(7 * DAY + 30 * 60.0, "2.0")])  # not on the hour: kept
    assert "1.0" in r.first_seen["ios_app"]
    r.note(7 * DAY + HOUR, [sent(7 * DAY + HOUR, "2.0")])
    assert r.first_seen == {"ios_app": {"2.0": HOUR}}
    assert r.last_sent == {"Order Placed|ios_app": {"2.0": 7 * DAY + HOUR}}


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 400),
            st.sampled_from(["1.0", "1.1", "2.0", "2.0 β", "ünï"]),
            st.sampled_from(["Order Placed", "Signed Up", "screen:Home"]),
            st.sampled_from(["ios_app", "android_app"]),
        ),
        max_size=40,
    )
)
def test_state_round_trips_through_json_and_behaves_the_same(sightings):
    r = Releases(NEWER)
    for minute, version, event, source in sorted(sightings):
        r.note(minute * 60.0, [sent(minute * 60.0, version, event, source)])
    back = Releases.from_state(json.loads(json.dumps(r.to_state())), NEWER)
    assert back.first_seen == r.first_seen and back.last_sent == r.last_sent
    for since in (0.0, 100 * 60.0):
        assert back.fresh(since) == r.fresh(since)
