"""Alert lifecycle: minimum duration, hysteresis, no flapping, reopening, stable ids."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.lifecycle import Lifecycle, LifecycleConfig, alert_id

CFG = LifecycleConfig(
    fire_score=0.5,
    fire_windows=3,
    pending_patience=2,
    resolve_score=0.3,
    resolve_windows=5,
    reopen_minutes=30,
)
W = 60.0


def run(scores: list[float], cfg: LifecycleConfig = CFG) -> tuple[Lifecycle, list[tuple]]:
    lc = Lifecycle()
    events = []
    for i, score in enumerate(scores):
        t = lc.step(i * W, score, W, cfg)
        if t:
            events.append((i, t, lc.started, lc.ended))
    return lc, events


def test_fires_only_after_minimum_duration():
    lc, events = run([0.9, 0.9])
    assert events == [] and lc.state == "pending"
    lc, events = run([0.9, 0.9, 0.9])
    assert events == [(2, "fire", 0.0, None)]
    assert lc.state == "firing"


def test_isolated_hot_windows_never_fire():
    # one hot window, then calm for `pending_patience`: pending is dropped silently
    lc, events = run([0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.9, 0.0, 0.0] * 20)
    assert events == []
    assert lc.state in ("idle", "pending")


def test_hits_need_not_be_consecutive_within_patience():
    _, events = run([0.9, 0.1, 0.9, 0.1, 0.9])
    assert [e[1] for e in events] == ["fire"]


def test_hysteresis_keeps_alert_open_between_thresholds():
    scores = [0.9] * 3 + [0.4] * 50  # below fire, above resolve: still an incident
    lc, events = run(scores)
    assert [e[1] for e in events] == ["fire"]
    assert lc.state == "firing"


def test_resolves_after_m_calm_windows_and_dates_the_end():
    scores = [0.9] * 5 + [0.1] * 5
    lc, events = run(scores)
    assert [e[1] for e in events] == ["fire", "resolve"]
    assert lc.state == "resolved"
    assert events[-1][3] == 5 * W  # the first calm window's start
    _, events = run([0.9] * 5 + [0.1] * 4)
    assert [e[1] for e in events] == ["fire"]


def test_calm_run_interrupted_restarts_count():
    scores = [0.9] * 3 + [0.1, 0.1, 0.1, 0.1, 0.6, 0.1, 0.1, 0.1, 0.1]
    _, events = run(scores)
    assert [e[1] for e in events] == ["fire"]


def test_retrigger_soon_after_resolution_reopens_same_incident():
    scores = [0.9] * 3 + [0.0] * 5 + [0.0] * 10 + [0.9] * 3
    _lc, events = run(scores)
    assert [e[1] for e in events] == ["fire", "resolve", "reopen"]
    assert events[-1][2] == 0.0  # same start, hence the same alert id


def test_retrigger_long_after_resolution_is_a_new_incident():
    scores = [0.9] * 3 + [0.0] * 5 + [0.0] * 40 + [0.9] * 3
    _, events = run(scores)
    assert [e[1] for e in events] == ["fire", "resolve", "fire"]
    assert events[-1][2] == 48 * W


def test_escalate_fires_pending_at_once():
    lc = Lifecycle()
    assert lc.step(0, 1.0, W, CFG) is None
    assert lc.escalate(CFG) == "fire"
    assert lc.escalate(CFG) is None


def test_state_round_trip():
    lc, _ = run([0.9] * 4 + [0.1] * 2)
    copy = Lifecycle.from_state(lc.to_state())
    for i, score in enumerate([0.1, 0.1, 0.1, 0.9]):
        assert copy.step((10 + i) * W, score, W, CFG) == lc.step((10 + i) * W, score, W, CFG)
    assert copy == lc


def test_alert_id_is_stable_and_distinct():
    a = alert_id("volume|event=X", "volume:up", 1000.0)
    assert a == alert_id("volume|event=X", "volume:up", 1000.0)
    assert a != alert_id("volume|event=X", "volume:down", 1000.0)
    assert a != alert_id("volume|event=X", "volume:up", 1060.0)


def test_bad_config_rejected():
    with pytest.raises(ValueError):
        LifecycleConfig(fire_score=0.3, resolve_score=0.5)
    with pytest.raises(ValueError):
        LifecycleConfig(fire_windows=0)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=300))
def test_transitions_alternate_and_fire_needs_evidence(scores):
    """Whatever the scores: fire/reopen and resolve alternate, and each fire is backed by
    `fire_windows` windows at or above the firing threshold since the incident (re)started."""
    _lc, events = run(scores)
    kinds = [e[1] for e in events]
    for a, b in itertools.pairwise(kinds):
        assert (a == "resolve") != (b == "resolve")
    for i, kind, _, _ in events:
        if kind in ("fire", "reopen"):
            assert sum(s >= CFG.fire_score for s in scores[: i + 1]) >= CFG.fire_windows


def test_noisy_scores_do_not_flap():
    """A long incident whose score wobbles around the firing threshold is ONE alert."""
    rng = random.Random(3)
    scores = [0.0] * 10 + [min(1.0, max(0.0, rng.gauss(0.55, 0.15))) for _ in range(300)]
    scores += [0.0] * 20
    _, events = run(scores)
    assert [e[1] for e in events] == ["fire", "resolve"]


def test_pure_noise_rarely_pends_and_never_fires():
    rng = random.Random(5)
    scores = [rng.random() * 0.45 for _ in range(5000)]
    _, events = run(scores)
    assert events == []


def test_hold_keeps_pending_until_the_caller_accepts():
    lc = Lifecycle()
    for i in range(2):
        lc.step(i * W, 0.9, W, CFG)
    assert lc.step(2 * W, 0.9, W, CFG) == "fire"
    lc.hold("fire")
    assert lc.state == "pending"
    assert lc.step(3 * W, 0.9, W, CFG) == "fire"  # next hot window tries again


def test_a_held_reopening_keeps_its_end_so_a_much_later_rise_is_a_new_incident():
    """Fired and resolved; a rise soon after tries to reopen it, the caller holds that, and it
    calms again: the incident still ended where it ended, so a rise hours later starts a new
    one (before, the held attempt forgot the end and the day-old incident reopened)."""
    lc = Lifecycle()
    events = []
    for i, score in enumerate([0.9] * 3 + [0.0] * 5 + [0.0] * 5 + [0.9] * 3):
        t = lc.step(i * W, score, W, CFG)
        if t == "reopen":
            lc.hold(t)
        elif t:
            events.append((t, lc.started))
    assert [e[0] for e in events] == ["fire", "resolve"]
    for i in range(16, 18):
        lc.step(i * W, 0.0, W, CFG)
    assert lc.state == "resolved" and lc.ended == 3 * W
    later = [lc.step(i * W, 0.9, W, CFG) for i in range(200, 203)]
    assert later[-1] == "fire" and lc.started == 200 * W
