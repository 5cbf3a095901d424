"""Attribution: shares of a deviation per dimension value."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.attribution import (
    SliceBaseline,
    accumulate,
    attribute,
    expected_parts,
    mix_adjusted,
    notable,
)


def learnt_baseline(mix: dict[str, dict[str, float]], windows: int = 400) -> SliceBaseline:
    rng = random.Random(1)
    base = SliceBaseline(alpha=0.02)
    for _ in range(windows):
        base.learn(
            {
                dim: {v: (rng.gauss(share * 100, 3), 0.0) for v, share in values.items()}
                for dim, values in mix.items()
            }
        )
    return base


MIX = {
    "source": {"web": 0.6, "ios": 0.3, "android": 0.1},
    "app_version": {"4.1.0": 0.5, "4.2.0": 0.3, "unknown": 0.2},
}


def test_spike_in_one_version_is_attributed_to_it():
    base = learnt_baseline(MIX)
    # expected 100; app version 4.2.0 sends 90 extra events, all from ios
    breakdown = {
        "source": {"web": (60.0, 0.0), "ios": (120.0, 0.0), "android": (10.0, 0.0)},
        "app_version": {"4.1.0": (50.0, 0.0), "4.2.0": (120.0, 0.0), "unknown": (20.0, 0.0)},
    }
    parts = expected_parts("volume", breakdown, base, expected=100.0)
    ranked = attribute(parts, direction=+1)
    assert (ranked[0].dimension, ranked[0].value) in {("source", "ios"), ("app_version", "4.2.0")}
    by = {(a.dimension, a.value): a.share for a in ranked}
    assert by[("app_version", "4.2.0")] > 0.9
    assert by[("source", "ios")] > 0.9


def test_drop_counts_values_that_vanished():
    base = learnt_baseline(MIX)
    breakdown = {"source": {"web": (60.0, 0.0), "android": (10.0, 0.0)}}  # ios is missing
    ranked = attribute(expected_parts("volume", breakdown, base, 100.0), direction=-1)
    assert ranked[0].dimension == "source" and ranked[0].value == "ios"
    assert ranked[0].share > 0.8


def test_rates_use_each_values_rate_and_the_series_rate_for_new_values():
    base = SliceBaseline(alpha=0.05)
    for _ in range(300):
        base.learn({"app_version": {"4.1.0": (2.0, 100.0), "4.2.0": (1.0, 50.0)}})
    # a brand-new version breaks the plan half of the time
    breakdown = {"app_version": {"4.1.0": (2.0, 100.0), "4.3.0": (40.0, 80.0)}}
    parts = expected_parts("violation", breakdown, base, expected=0.02)
    ranked = attribute(parts, direction=+1)
    assert ranked[0].value == "4.3.0" and ranked[0].share > 0.95


def test_uniform_change_is_not_notable_but_concentrated_one_is():
    base = learnt_baseline(MIX)
    uniform = {"source": {v: (s * 200, 0.0) for v, s in MIX["source"].items()}}
    parts = expected_parts("volume", uniform, base, 100.0)
    assert notable(parts, attribute(parts, +1)) == []
    concentrated = {"source": {"web": (60.0, 0.0), "ios": (130.0, 0.0), "android": (10.0, 0.0)}}
    parts = expected_parts("volume", concentrated, base, 100.0)
    assert [a.value for a in notable(parts, attribute(parts, +1))] == ["ios"]


def test_accumulate_sums_windows_and_stays_bounded():
    total: dict = {}
    for i in range(300):
        accumulate(total, {"app_version": {f"v{i}": (1.0, 0.0), "main": (5.0, 4.0)}})
    assert len(total["app_version"]) <= 200
    assert total["app_version"]["main"][0] >= 5.0 * 250


def test_baseline_is_bounded_and_round_trips():
    base = SliceBaseline(alpha=0.1, max_values=10)
    for i in range(100):
        base.learn({"app_version": {f"v{i}": (1.0, 1.0)}})
    assert len(base.num["app_version"]) <= 10
    copy = SliceBaseline.from_state(base.to_state())
    assert copy.to_state() == base.to_state()


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["source", "platform", "app_version"]),
        st.dictionaries(
            st.text(min_size=1, max_size=5),
            st.tuples(st.floats(0, 1e6), st.floats(0, 1e6)),
            min_size=1,
            max_size=6,
        ),
        min_size=1,
    ),
    st.sampled_from([1, -1]),
)
def test_shares_of_a_dimension_sum_to_one(parts, direction):
    ranked = attribute(parts, direction, top=1000)
    for dim in {a.dimension for a in ranked}:
        total = sum(a.share for a in ranked if a.dimension == dim)
        assert abs(total - 1.0) < 1e-9
    assert all(0.0 < a.share <= 1.0 for a in ranked)
    assert ranked == sorted(ranked, key=lambda a: (-a.share, a.dimension, a.value))


def test_rollout_blames_the_new_version_that_does_not_send_not_the_old_one():
    """A release rolls out: users move from 7.4.0 to 7.4.1, which never sends the event. The
    event's usual split says 7.4.0 sends it all, so by the split 7.4.0 looks short; by what each
    version sends of all its traffic now, the shortfall is 7.4.1's."""
    event = learnt_baseline({"app_version": {"7.4.0": 0.9, "7.3.0": 0.1}})
    traffic = learnt_baseline({"app_version": {"7.4.0": 9.0, "7.3.0": 1.0}})
    # now: half of 7.4.0's traffic moved to 7.4.1; 7.4.0 sends as usual for its traffic
    breakdown = {"app_version": {"7.4.0": (45.0, 0.0), "7.3.0": (10.0, 0.0)}}
    now = {"7.4.0": 450.0, "7.4.1": 450.0, "7.3.0": 100.0}
    naive = expected_parts("volume", breakdown, event, 100.0)
    assert attribute(naive, -1)[0].value == "7.4.0"
    parts = expected_parts("volume", breakdown, event, 100.0)
    mix_adjusted(parts, "app_version", event, traffic, now, 100.0)
    top = attribute(parts, -1)[0]
    assert (top.value, round(top.share, 2)) == ("7.4.1", 1.0)
    assert abs(sum(exp for _, exp in parts["app_version"].values()) - 100.0) < 1e-9
    before = dict(parts)
    mix_adjusted(parts, "app_version", event, SliceBaseline(), now, 100.0)  # no traffic learnt
    assert parts == before


def test_a_new_release_that_never_sent_the_event_is_expected_to_send_it():
    """7.4.1 rolled out hours ago without the event: the baselines learnt that it sends none.
    Called a newcomer (newer than the series, never a sender), it is expected at the average
    rate of the others, so the silence is blamed on it."""
    event = learnt_baseline({"app_version": {"7.4.0": 1.0}})
    traffic = learnt_baseline({"app_version": {"7.4.0": 5.0, "7.4.1": 5.0}})
    breakdown = {"app_version": {"7.4.0": (20.0, 0.0)}}  # 7.4.0 sends as usual, 7.4.1 nothing
    now = {"7.4.0": 200.0, "7.4.1": 800.0}  # most users have moved to 7.4.1 by now
    learnt = expected_parts("volume", breakdown, event, 100.0)
    mix_adjusted(learnt, "app_version", event, traffic, now, 100.0)
    assert attribute(learnt, -1)[0].value == "7.4.0"  # its zero rate was learnt as normal
    parts = expected_parts("volume", breakdown, event, 100.0)
    mix_adjusted(parts, "app_version", event, traffic, now, 100.0, newcomers={"7.4.1"})
    top = attribute(parts, -1)[0]
    assert (top.value, round(top.share, 2)) == ("7.4.1", 1.0)
