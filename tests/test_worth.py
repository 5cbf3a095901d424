"""`detectors.worth`: when a significant deviation is worth an alert. Unit tests on a series'
state as the engine keeps it (`Series`, `Track`); the engine's own tests cover the same rules
end to end (tests/test_engine.py, tests/test_engine_real.py)."""

from __future__ import annotations

import json

import pytest

from detectors.attribution import SliceBaseline
from detectors.engine_config import EngineConfig
from detectors.engine_state import Series, Track
from detectors.intervals import pvalue_from_score
from detectors.worth import carried, quiet_bucket, release_arriving, worth_an_alert

CFG = EngineConfig()
P_FIRE = pvalue_from_score(CFG.lifecycle.fire_score)
UNITS = CFG.min_excess_units
Z_FIRE = 4.0


def series(metric: str = "volume", event: str = "Promo Code Redeemed", per_user: float = 1.0):
    """A series whose windows usually carry `per_user` events per user, each user arriving."""
    s = Series(key=f"{metric}|event={event}", metric=metric, series={"event": event},
               model=None, baseline=SliceBaseline(), first_seen=0.0, last_active=0.0)  # fmt: skip
    s.ew_events, s.ew_users, s.ew_arrivals = per_user, 1.0, 1.0
    return s


def worth(s, track, fresh=frozenset()):
    return worth_an_alert(s, track, CFG, P_FIRE, Z_FIRE, lambda: set(fresh))


def test_quiet_buckets_follow_the_expected_count_by_powers_of_two():
    assert [quiet_bucket(x) for x in (0.0, 0.9, 1.0, 3.0, 7.0, 1e9)] == [0, 0, 1, 2, 3, 11]


def test_a_slow_rate_deviation_counts_the_span_that_made_it_significant():
    """A conversion on a few users an hour becomes significant only after hours: the windows
    before the lifecycle went pending count as evidence. Volumes keep their own evidence."""
    track = Track(obs=3.0, exp=1.0)  # since pending: 2 more conversions than expected
    assert not worth(series("conversion"), track)
    track.span_obs, track.span_exp = 44.0, 24.0  # the span the rate model found significant
    assert worth(series("conversion"), track)
    assert not worth(series(per_user=10.0), track)  # 2 events = 0.2 visits: not worth it
    state = Track.from_state(json.loads(json.dumps(track.to_state())))
    assert (state.span_obs, state.span_exp) == (44.0, 24.0)
    track.reset_evidence()
    assert (track.span_obs, track.span_exp) == (0.0, 0.0)


@pytest.mark.parametrize("users, told", [(12.0, True), (3.0, False), (1.0, False)])
def test_a_rise_needs_arriving_users_beyond_chance_unless_a_bot_sends_it(users, told):
    """12 events where 1 was expected: worth an alert from 12 arriving users, not from 3 (or
    one visitor browsing); 200 events from one user are more than a few users could send."""
    assert worth(series(), Track(obs=12.0, exp=1.0, users=users)) == told
    assert worth(series(), Track(obs=200.0, exp=1.0, users=1.0))


def test_a_rise_the_whole_traffic_shares_is_judged_against_its_share_of_it():
    """The other events of its source came at twice their usual too: 40 where 20 were expected
    is the traffic's, not the event's; 80 is beyond what its share of that traffic gives."""
    assert carried(Track(ctx_obs=400.0, ctx_exp=200.0), CFG.context_min_events) == 2.0
    assert carried(Track(ctx_obs=10.0, ctx_exp=5.0), CFG.context_min_events) == 1.0  # too few
    shared = dict(exp=20.0, users=40.0, ctx_obs=400.0, ctx_exp=200.0, ctx_own=20.0)
    assert not worth(series(), Track(obs=40.0, **shared))
    assert worth(series(), Track(obs=80.0, **{**shared, "users": 80.0}))


def test_an_update_event_rising_with_a_new_release_is_the_release_arriving():
    """Application Updated from 5.8.0, first seen now, one per arriving user, nothing else
    beyond chance: a release arriving. Twice per user, or another event, is still told."""
    parts = {"app_version": {"5.8.0": [30.0, 1.0], "5.7.0": [2.0, 2.0]}}
    update = Track(obs=32.0, exp=3.0, users=32.0, parts=parts)
    s = series(event="Application Updated")
    assert release_arriving(s, update, lambda: {"5.8.0"}, P_FIRE, UNITS)
    assert not worth(s, update, fresh={"5.8.0"})
    assert worth(s, update, fresh=set())  # 5.8.0 known for days: a spike
    twice = Track(obs=62.0, exp=3.0, users=31.0, parts=parts)
    assert not release_arriving(s, twice, lambda: {"5.8.0"}, P_FIRE, UNITS)
    assert worth(series(), update, fresh={"5.8.0"})  # a leaked code used from the new release


def test_an_update_rise_mostly_in_its_lead_in_is_judged_on_the_windows_with_versions():
    """40 updates, 32 of them in the windows before the rise became pending (the lead-in, whose
    versions are not kept), the 8 since all from the release arriving: the release arriving,
    not 32 updates from unknown versions. The same 8 from a version known for days: a spike."""
    s = series(event="Application Updated")
    new = Track(obs=40.0, exp=3.5, users=40.0, parts={"app_version": {"5.8.0": [8.0, 0.3]}})
    assert release_arriving(s, new, lambda: {"5.8.0"}, P_FIRE, UNITS)
    old = Track(obs=40.0, exp=3.5, users=40.0, parts={"app_version": {"5.7.0": [8.0, 0.3]}})
    assert not release_arriving(s, old, lambda: {"5.8.0"}, P_FIRE, UNITS)
    mixed = {"app_version": {"5.8.0": [8.0, 0.3], "5.7.0": [12.0, 0.2]}}
    assert not release_arriving(s, Track(obs=40.0, exp=3.5, users=40.0, parts=mixed),
                                lambda: {"5.8.0"}, P_FIRE, UNITS)  # fmt: skip


def test_one_update_from_an_older_version_does_not_make_a_phased_rollout_a_spike():
    """A phased release's seventh day: 322 updates to 8.2.0, its source's newest, and one user
    updating to 8.1.0, where none were expected. That one is beyond chance at the firing level
    but worth one user's event, not the five a spike takes: still the release arriving. Twelve
    from 8.1.0 are a spike of their own."""
    s = series(event="Application Updated")
    one = {"app_version": {"8.2.0": [322.0, 22.6], "8.1.0": [1.0, 0.0]}}
    track = Track(obs=329.0, exp=23.4, users=329.0, parts=one)
    assert release_arriving(s, track, lambda: {"8.2.0"}, P_FIRE, UNITS)
    twelve = {"app_version": {"8.2.0": [322.0, 22.6], "8.1.0": [12.0, 0.0]}}
    track = Track(obs=340.0, exp=23.4, users=340.0, parts=twelve)
    assert not release_arriving(s, track, lambda: {"8.2.0"}, P_FIRE, UNITS)
