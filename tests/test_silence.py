"""The silence test of active users (detectors.silence): its learnt dispersion and its state."""

from __future__ import annotations

import json

import numpy as np

from detectors.silence import Silence

KEEP = 0.5 ** (1.0 / 10.0)  # a ten-minute half-life, per one-minute window


def feed(test: Silence, arrivals, again: int = 0, before: int = 0, start: int = 0) -> None:
    for i, n in enumerate(arrivals):
        test.update((start + i) * 60.0, float(n + again), again, before, 1e9, 0.1, KEEP)


def test_poisson_arrivals_have_a_dispersion_near_one_that_a_bot_burst_barely_moves():
    """Arrivals that are Poisson are taken as such (their evidence at face value); a burst of
    200 fresh ids in one minute (a crawler) moves a mean absolute deviation little, where it
    would have multiplied a variance."""
    rng = np.random.default_rng(1)
    test = Silence()
    feed(test, rng.poisson(6.0, 3000))
    assert 0.8 <= test.dispersion <= 1.3, test.dispersion
    feed(test, [200], start=3000)
    feed(test, rng.poisson(6.0, 30), start=3001)
    assert test.dispersion <= 1.6, test.dispersion


def test_arrivals_in_clumps_are_overdispersed():
    """Visits that arrive three at a time (a family, a shared link) carry a third of the
    evidence each: the dispersion says about 3."""
    rng = np.random.default_rng(2)
    test = Silence()
    feed(test, 3 * rng.poisson(2.0, 3000))
    assert 2.3 <= test.dispersion <= 3.7, test.dispersion


def test_the_usual_is_held_while_evidence_gathers_and_the_state_round_trips():
    rng = np.random.default_rng(3)
    test = Silence()
    feed(test, rng.poisson(8.0, 600), again=4, before=8)
    usual = test.arrivals
    assert abs(test.going_on - 0.5) < 0.01
    feed(test, [0] * 5, start=600)  # an outage: evidence; the reference learns its first minute
    assert test.cusum.stat > 0.0 and test.arrivals == KEEP * usual
    again = Silence.from_state(json.loads(json.dumps(test.to_state())))
    assert again.to_state() == test.to_state()


def test_users_who_stop_going_on_add_their_evidence_to_the_arrivals():
    """One minute of a busy source: its arrivals, none against about 7 usual, are no proof
    against a usual known from ten minutes of traffic (p ≈ 1.5e-3); the 13 users of the minute
    before of whom none went on (0.54^13 ≈ 3e-4 at the usual share 6/13) make the two together
    proof: their product t ≈ 5e-7 has the chance t·(1 - ln t) ≈ 7.5e-6 (Fisher), under the
    firing level's 3.2e-5, not under 5e-6 (the product alone would be). A source whose users do
    not go on from minute to minute rests on its arrivals alone."""
    rng = np.random.default_rng(4)
    busy, lone = Silence(), Silence()
    for i, n in enumerate(rng.poisson(7.0, 600)):
        busy.update(i * 60.0, float(n) + 6.0, 6.0, 13.0, 1e9, 0.1, KEEP)
        lone.update(i * 60.0, float(n), 0.0, 0.0, 1e9, 0.1, KEEP)
    memory = Silence.memory(10.0, 60.0)
    busy.update(600 * 60.0, 0.0, 0.0, 13.0, 1e9, 0.1, KEEP)
    lone.update(600 * 60.0, 0.0, 0.0, 0.0, 1e9, 0.1, KEEP)
    assert busy.kept == 0.0 and busy.had == 13.0
    assert busy.beyond_reference(memory, 3.2e-5)
    assert not busy.beyond_reference(memory, 5e-6)
    assert not lone.beyond_reference(memory, 3.2e-5)
    assert lone.beyond_reference(memory, 1e-2)  # some evidence, far from proof


def test_the_users_going_on_are_trials_only_up_to_the_users_expected():
    """60 users in the minute before where the model expects 13 (a bot's fresh ids), none of
    them seen again: as trials of going on they count as the 13 expected, and the minute's
    evidence is the same as for 13 usual users who all stopped, not more."""
    flood, usual = Silence(), Silence()
    for i in range(600):
        for test in (flood, usual):
            test.update(i * 60.0, 13.0, 6.0, 13.0, 13.0, 0.1, KEEP)
    flood.update(600 * 60.0, 0.0, 0.0, 60.0, 13.0, 0.1, KEEP)
    usual.update(600 * 60.0, 0.0, 0.0, 13.0, 13.0, 0.1, KEEP)
    assert flood.had == usual.had == 13.0
    assert flood.cusum.stat == usual.cusum.stat > 0.0


def test_a_state_saved_before_the_users_going_on_were_counted_still_loads():
    """States of nine entries (before `kept` and `had`) load with both at zero."""
    test = Silence()
    feed(test, [5, 6, 4])
    old = test.to_state()[:9]
    loaded = Silence.from_state(json.loads(json.dumps(old)))
    assert (loaded.kept, loaded.had) == (0.0, 0.0) and loaded.to_state()[:9] == old


def test_a_tail_that_is_not_a_number_is_no_proof():
    test = Silence()
    test.usual, test.arrived, test.had, test.again, test.before = float("nan"), 0.0, 5.0, 1.0, 2.0
    assert not test.beyond_reference(14.4, 3.2e-5)
