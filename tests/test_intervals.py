"""Count and rate distribution helpers checked against scipy.stats and by simulation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from detectors.intervals import (
    betabinom_midp,
    betabinom_rate_interval,
    binom_cdf,
    nb_interval,
    nb_midp,
    nb_phi_from_moments,
    nb_quantile,
    nb_sf,
    pvalue_from_score,
    score_from_pvalue,
    two_sided,
)
from detectors.seasonality import SeasonalProfile, hour_of_week


def scipy_nb(mean: float, phi: float):
    if phi == 0:
        return stats.poisson(mean)
    n = 1 / phi
    return stats.nbinom(n, n / (n + mean))


@given(
    mean=st.floats(0.01, 1e5),
    phi=st.sampled_from([0.0, 0.001, 0.05, 0.5, 3.0]),
    rel=st.floats(0.0, 3.0),
)
@settings(max_examples=150, deadline=None)
def test_nb_tails_and_quantiles_match_scipy(mean, phi, rel):
    dist = scipy_nb(mean, phi)
    k = float(np.floor(mean * rel))
    assert nb_sf(k, mean, phi) == pytest.approx(dist.sf(k - 1), rel=1e-6, abs=1e-14)
    upper, lower = nb_midp(k, mean, phi)
    assert upper + lower == pytest.approx(1.0)
    for q in (0.005, 0.5, 0.995):
        assert nb_quantile(q, mean, phi) == dist.ppf(q)


@given(n=st.integers(0, 400), share=st.floats(0.0, 1.0), p=st.floats(0.0, 1.0))
@settings(max_examples=150, deadline=None)
def test_binomial_cdf_matches_scipy(n, share, p):
    k = float(np.floor(n * share))
    assert binom_cdf(k, float(n), p) == pytest.approx(stats.binom.cdf(k, n, p), rel=1e-9, abs=1e-15)
    assert binom_cdf(-1.0, float(n), p) == 0.0


@pytest.mark.parametrize(("mean", "phi"), [(0.3, 0.0), (4.0, 0.2), (80.0, 0.05), (5000.0, 0.01)])
def test_nb_interval_covers_nominal_fraction(mean, phi):
    rng = np.random.default_rng(1)
    lam = rng.gamma(1 / phi, mean * phi, 200_000) if phi else np.full(200_000, mean)
    x = rng.poisson(lam)
    lo, hi = nb_interval(mean, phi, 0.99)
    coverage = np.mean((x >= lo) & (x <= hi))
    assert 0.985 <= coverage <= 0.9995


def test_midp_values_are_uniform_under_the_null():
    rng = np.random.default_rng(2)
    mean, phi = 12.0, 0.1
    x = rng.poisson(rng.gamma(1 / phi, mean * phi, 50_000))
    p = np.array([two_sided(*nb_midp(float(k), mean, phi))[0] for k in x])
    assert np.mean(p < 0.01) == pytest.approx(0.01, abs=0.004)
    assert np.mean(p < 0.1) == pytest.approx(0.1, abs=0.015)


def test_phi_from_moments():
    assert nb_phi_from_moments(10.0, 10.0) == 0.0
    assert nb_phi_from_moments(10.0, 30.0) == pytest.approx(0.2)
    assert nb_phi_from_moments(0.0, 5.0) == 0.0


def test_score_mapping():
    assert score_from_pvalue(1.0) == 0.0
    assert score_from_pvalue(1e-3) == pytest.approx(0.5)
    assert score_from_pvalue(1e-9) == 1.0
    assert score_from_pvalue(float("nan")) == 0.0
    for s in (0.1, 0.5, 0.9):
        assert score_from_pvalue(pvalue_from_score(s)) == pytest.approx(s)


def test_betabinomial_rate_interval_covers():
    rng = np.random.default_rng(3)
    n, rate, nu = 500, 0.1, 2000.0
    x = rng.binomial(n, rng.beta(rate * nu, (1 - rate) * nu, 100_000))
    lo, hi = betabinom_rate_interval(n, rate, nu, 0.99)
    assert 0.98 <= np.mean((x / n >= lo) & (x / n <= hi)) <= 0.9995
    assert betabinom_rate_interval(0, rate, nu, 0.99) == (0.0, 1.0)
    assert betabinom_midp(0, 0, 0.1, 100.0) == (0.5, 0.5)


def test_hour_of_week_and_profile_positions():
    monday = 1_699_833_600.0  # 2023-11-13 00:00 UTC
    assert hour_of_week(monday) == 0.0
    assert hour_of_week(monday + 3600 * 30.5) == 30.5
    p = SeasonalProfile()
    # 10:30 is the centre of slot 10: all weight on it.
    assert p.position(monday + 10.5 * 3600) == (10, 11, 0.0)
    # No interpolation across midnight.
    i0, i1, w = p.position(monday + 23.9 * 3600)
    assert (i0, i1, w) == (23, 24, 0.0)


def test_profile_learns_a_daily_shape_and_round_trips():
    p = SeasonalProfile()
    monday = 1_699_833_600.0
    for minute in range(4 * 1440):
        ts = monday + 60 * minute
        truth = 2.0 if 9 <= (minute % 1440) / 60 < 17 else 0.5
        p.learn(ts, 100.0 * truth, 100.0)
    assert p.factor(monday + 4 * 86400 + 13 * 3600) == pytest.approx(2.0, rel=0.05)
    assert p.factor(monday + 4 * 86400 + 3 * 3600) == pytest.approx(0.5, rel=0.05)
    q = SeasonalProfile.from_state(p.to_state())
    assert q.to_state() == p.to_state()
