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
    against a usual known from ten minutes of traffic (p ≈ 1e-3); the 13 users of the minute
    before of whom none went on (0.53^13 ≈ 3e-4 at the usual share) make the two together
    proof at 3e-5. A source whose users do not go on from minute to minute rests on its
    arrivals alone."""
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
    assert not lone.beyond_reference(memory, 3.2e-5)
    assert lone.beyond_reference(memory, 1e-2)  # some evidence, far from proof
