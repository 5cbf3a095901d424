"""RateModel: beta-binomial rates, sample-size aware (seeded synthetic funnels)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.intervals import betabinom_midp
from detectors.rate import RateModel

T0 = 1_699_833_600.0
FIRE = 0.67

# (mean denominator per minute, rate, between-window concentration (inf = pure binomial), seed)
FUNNELS = [(2000.0, 0.03, 5000.0, 1), (300.0, 0.2, np.inf, 2), (40.0, 0.05, np.inf, 3)]


def funnel(minutes, users, rate, nu, seed, change=None, daily=0.0):
    """Timestamps, numerators, denominators; `daily` = relative daily swing of the rate."""
    rng = np.random.default_rng(seed)
    cycle = np.sin(2 * np.pi * np.arange(minutes) / 1440)
    n = rng.poisson(users * (1 + 0.5 * cycle))
    rate = rate * (1 + daily * np.cos(2 * np.pi * np.arange(minutes) / 1440))
    p = rate if np.isinf(nu) else rng.beta(rate * nu, (1 - rate) * nu)
    if change is not None:
        start, factor = change
        p[start:] = np.minimum(p[start:] * factor, 1.0)
    return T0 + 60.0 * np.arange(minutes), rng.binomial(n, p).astype(float), n.astype(float)


def feed(model: RateModel, ts, xs, ns):
    out = []
    for t, x, n in zip(ts.tolist(), xs.tolist(), ns.tolist(), strict=True):
        a = model.assess(t, x, n)
        out.append(a)
        model.learn(t, a.expected * n if a.score >= FIRE and not a.learning else x, n)
    return out


@pytest.mark.parametrize("params", FUNNELS)
def test_no_alarms_on_normal_data(params):
    out = feed(RateModel(), *funnel(3 * 1440, *params))
    warm = [a.score for a in out if not a.learning]
    assert len(warm) > 2 * 1440
    assert np.mean(np.array(warm) >= FIRE) < 5e-4


@pytest.mark.parametrize("params", FUNNELS)
@pytest.mark.parametrize(("factor", "direction"), [(1.5, 1), (0.5, -1)])
def test_real_change_on_large_denominators_is_found(params, factor, direction):
    users = params[0]
    start = 2 * 1440
    out = feed(RateModel(), *funnel(start + 240, *params, change=(start, factor)))
    hits = [i for i, a in enumerate(out[start:]) if a.score >= FIRE]
    assert hits, "not found"
    limit = {2000.0: 10, 300.0: 15, 40.0: 90}[users]  # 40 users/min: 2 conversions/min
    assert hits[0] <= limit
    assert out[start + hits[0]].direction == direction


@pytest.mark.parametrize("hour_of_day", [True, False])
def test_daily_rate_cycle_is_learnt(hour_of_day):
    start = 3 * 1440
    ts, xs, ns = funnel(start + 1440, 1000.0, 0.05, np.inf, 8, daily=0.4)
    out = feed(RateModel(hour_of_day=hour_of_day), ts, xs, ns)
    day4 = out[start:]
    assert max(a.score for a in day4) < FIRE  # no alarm either way (dispersion absorbs it)...
    truth = 0.05 * (1 + 0.4 * np.cos(2 * np.pi * np.arange(start, start + 1440) / 1440))
    err = np.mean(np.abs(np.array([a.expected for a in day4]) / truth - 1))
    # ...but only the hour-of-day model expects the right rate at each hour.
    assert (err < 0.08) if hour_of_day else (err > 0.2)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_a_flat_rate_learns_no_daily_cycle_from_hourly_noise(seed):
    """A sparse funnel at a constant rate: each hour's raw observed/expected ratio is off by
    sampling noise alone (~10 %); taken at face value the noise would become a fake daily cycle.
    The shrunk hourly factors stay near 1, while a real cycle is kept (test above)."""
    model = RateModel()
    feed(model, *funnel(6 * 1440, 3.0, 0.4, np.inf, seed))
    raw = [o / e - 1.0 for o, e in zip(model.hour_o, model.hour_e, strict=True)]
    shrunk = [model.hour_factor(T0 + 3600.0 * h) - 1.0 for h in range(24)]
    assert max(map(abs, raw)) > 0.08  # the noise is there...
    assert max(map(abs, shrunk)) < 0.4 * max(map(abs, raw))  # ...and mostly not believed


@pytest.mark.parametrize("daily", [0.2, 0.4])
def test_a_real_daily_cycle_survives_the_shrinkage(daily):
    model = RateModel()
    feed(model, *funnel(6 * 1440, 3.0, 0.4, np.inf, 7, daily=daily))
    assert model.hour_spread > 0.0
    peak = model.hour_factor(T0)  # the cycle's top (cos = 1 at T0's hour)
    trough = model.hour_factor(T0 + 12 * 3600.0)
    assert peak - trough > daily  # full swing is 2 × daily: most of it is kept


@pytest.mark.parametrize(("scales", "found"), [((1, 5, 15, 60), False), (None, True)])
def test_sparse_funnel_finds_a_large_lasting_change_within_hours(scales, found):
    """One user every two minutes: an hour has ~9 conversions, too few to show -60 %; the
    default 4-hour scale sees it."""
    start = 3 * 1440
    ts, xs, ns = funnel(start + 480, 0.5, 0.3, np.inf, 11, change=(start, 0.4))
    model = RateModel() if scales is None else RateModel(scales=scales)
    out = feed(model, ts, xs, ns)
    assert max(a.score for a in out[:start] if not a.learning) < FIRE
    hits = [i for i, a in enumerate(out[start:]) if a.score >= FIRE]
    assert bool(hits) == found
    if found:
        assert hits[0] <= 300 and out[start + hits[0]].direction == -1


def test_plus_200_percent_on_40_users_is_not_evidence():
    m = RateModel(warmup_seconds=0, min_weight=0)
    feed(m, *funnel(1440, 40.0, 0.02, np.inf, 9))
    # One minute with 40 users and 3 conversions where 0.8 were expected: +275 %.
    a = m.assess(T0 + 1440 * 60, 3, 40)
    assert a.observed == pytest.approx(3 / 40) and a.direction in (0, 1)
    assert a.score < 0.3
    # The same relative change on 4000 users is certain.
    m2 = RateModel(warmup_seconds=0, min_weight=0)
    feed(m2, *funnel(1440, 4000.0, 0.02, np.inf, 9))
    b = m2.assess(T0 + 1440 * 60, 300, 4000)
    assert b.score == pytest.approx(1.0) and b.direction == 1


def test_small_denominators_never_alarm():
    ts, xs, ns = funnel(2 * 1440, 3.0, 0.1, np.inf, 4)
    out = feed(RateModel(), ts, xs, ns)
    assert max(a.score for a in out if not a.learning) < FIRE


def test_cold_start_learning_flag():
    out = feed(RateModel(), *funnel(300, 50.0, 0.1, np.inf, 5))
    assert out[0].learning and out[-1].learning  # < 6 hours
    out = feed(RateModel(), *funnel(800, 50.0, 0.1, np.inf, 5))
    assert not out[-1].learning
    assert 0.08 < out[-1].expected < 0.12


def test_windows_without_denominator_may_be_skipped():
    """The engine does not call a rate model when nobody entered the funnel: evidence still adds
    up over the windows that had users."""
    ts, xs, ns = funnel(2 * 1440 + 120, 30.0, 0.1, np.inf, 10, change=(2 * 1440, 0.3))
    keep = np.ones(len(ts), dtype=bool)
    keep[2 * 1440 :: 3] = False  # every third window of the incident has no users
    out = feed(RateModel(), ts[keep], xs[keep], ns[keep])
    start = int(keep[: 2 * 1440].sum())
    assert max(a.score for a in out[:start] if not a.learning) < FIRE
    hits = [i for i, a in enumerate(out[start:]) if a.score >= FIRE]
    assert hits and hits[0] <= 60 and out[start + hits[0]].direction == -1


def test_zero_denominator_is_neutral():
    m = RateModel()
    feed(m, *funnel(500, 50.0, 0.1, np.inf, 6))
    a = m.assess(T0 + 500 * 60, 0, 0)
    assert a.lower == 0.0 and a.upper == 1.0 and a.observed == a.expected


def test_state_round_trip_gives_identical_assessments():
    ts, xs, ns = funnel(1500, 300.0, 0.2, 3000.0, 7)
    a = RateModel()
    feed(a, ts[:1000], xs[:1000], ns[:1000])
    b = RateModel.from_state(json.loads(json.dumps(a.to_state())))
    assert feed(a, ts[1000:], xs[1000:], ns[1000:]) == feed(b, ts[1000:], xs[1000:], ns[1000:])


def test_state_round_trip_keeps_the_hourly_shrinkage_mid_hour():
    """Saved mid-hour, after days with a daily cycle: the shrinkage (refreshed hourly) is kept
    as it was, so the restored model assesses exactly as the running one; a state from before
    the shrinkage (no `hour_spread`) loads with the spread estimated from its hourly sums."""
    cut = 3 * 1440 + 30
    ts, xs, ns = funnel(cut + 600, 20.0, 0.3, np.inf, 8, daily=0.3)
    a = RateModel()
    feed(a, ts[:cut], xs[:cut], ns[:cut])
    state = json.loads(json.dumps(a.to_state()))
    assert a.hour_spread > 0.0
    b = RateModel.from_state(state)
    del state["hour_spread"]
    old = RateModel.from_state(state)
    assert old.hour_spread > 0.0
    assert abs(old.hour_factor(ts[cut]) - a.hour_factor(ts[cut])) < 0.05
    assert feed(a, ts[cut:], xs[cut:], ns[cut:]) == feed(b, ts[cut:], xs[cut:], ns[cut:])


@pytest.mark.parametrize(
    ("k", "n", "rate", "nu"), [(3, 40, 0.02, 1e4), (150, 600, 0.4, 300.0), (590, 600, 0.95, 50.0)]
)
def test_betabinomial_tails_match_scipy(k, n, rate, nu):
    from scipy.stats import betabinom

    upper, lower = betabinom_midp(k, n, rate, nu)
    dist = betabinom(n, rate * nu, (1 - rate) * nu)
    assert upper == pytest.approx(dist.sf(k) + 0.5 * dist.pmf(k), rel=1e-6, abs=1e-12)
    assert lower == pytest.approx(1 - upper)


def test_betabinomial_approximation_is_close_for_large_n():
    from scipy.stats import betabinom

    n, rate, nu = 20000, 0.03, 5000.0
    dist = betabinom(n, rate * nu, (1 - rate) * nu)
    for k in (540, 600, 660, 720):
        upper, _ = betabinom_midp(k, n, rate, nu)
        exact = dist.sf(k) + 0.5 * dist.pmf(k)
        assert abs(np.log10(upper) - np.log10(exact)) < 0.15


@given(
    pairs=st.lists(
        st.tuples(st.integers(0, 10**7), st.integers(0, 10**7)), min_size=1, max_size=150
    ),
)
@settings(max_examples=100, deadline=None)
def test_any_rates_give_sane_json_safe_assessments(pairs):
    m = RateModel()
    for i, (x, n) in enumerate(pairs):
        x = min(x, n)
        a = m.assess(T0 + 60 * i, x, n)
        assert 0.0 <= a.score <= 1.0 and a.direction in (-1, 0, 1)
        assert 0.0 <= a.lower <= a.upper <= 1.0 and 0.0 <= a.expected <= 1.0
        assert 0.0 <= a.observed <= 1.0
        m.learn(T0 + 60 * i, x, n)
    json.dumps(m.to_state(), allow_nan=False)


@pytest.mark.parametrize(("x", "n"), [(float("nan"), 10), (1, float("inf")), (-1, 10), (1, -5)])
def test_bad_rates_are_refused_clearly(x, n):
    with pytest.raises(ValueError):
        RateModel().assess(T0, x, n)
    with pytest.raises(ValueError):
        RateModel().learn(T0, x, n)


@pytest.mark.parametrize(
    "kwargs", [{"scales": ()}, {"halflife": 0}, {"ess_cap": -1}, {"interval_level": 0.0}]
)
def test_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        RateModel(**kwargs)


def test_assessment_names_the_span_behind_its_score():
    """The most significant scale's sums come with the score (the engine's evidence)."""
    start = 3 * 1440
    ts, xs, ns = funnel(start + 480, 0.5, 0.3, np.inf, 11, change=(start, 0.4))
    out = feed(RateModel(), ts, xs, ns)
    calm = [a for a in out[2 * 1440 : start] if a.score < 0.1]
    assert calm and all(a.span_windows == 0 or a.direction == 0 for a in calm)
    a = max(out[start:], key=lambda a: a.score)
    assert a.span_windows == 240 and a.span_observed < 0.6 * a.span_expected
    i = out.index(a)
    window = slice(i - 239, i + 1)
    assert a.span_observed == pytest.approx(xs[window].sum())


def test_substitutes_are_learnt_as_given_not_rounded():
    """While a window is anomalous or annotated the engine teaches the expected numerator
    (0.4 of 1 user). Rounded to 0 it once taught a lower rate and a false dispersion that hid a
    doubled conversion rate on a sparse funnel."""
    ts, xs, ns = funnel(4 * 1440, 0.5, 0.4, np.inf, 5)
    honest, rounded = RateModel(), RateModel()
    for i, (t, x, n) in enumerate(zip(ts.tolist(), xs.tolist(), ns.tolist(), strict=True)):
        for model in (honest, rounded):
            if i < 2 * 1440:  # two normal days, then two days of substitutes
                model.learn(t, x, n)
            else:
                substitute = model.expected(t) * n
                model.learn(t, substitute if model is honest else float(round(substitute)), n)
    assert honest.base_rate() == pytest.approx(0.4, abs=0.04)
    assert rounded.base_rate() < 0.3  # what rounding did
    with pytest.raises(ValueError):
        honest.learn(T0, float("nan"), 1.0)


def test_a_deviating_window_is_learnt_no_further_than_the_spans_chance_allows():
    # the engine clips a deviating window (no incident) to `learnable`: a busy funnel learns a
    # bias of its own step by step but not a breakage as it comes; a sparse one may move more,
    # never past its window's users
    widths = []
    for users, rate, seed in ((300.0, 0.2, 2), (2.0, 0.3, 11)):
        ts, xs, ns = funnel(3 * 1440, users, rate, np.inf, seed)
        m = RateModel()
        feed(m, ts, xs, ns)
        n = users
        q = m.expected(float(ts[-1]) + 60.0)
        m.assess(float(ts[-1]) + 60.0, 0.0, n)  # a window where nobody converted
        lower, upper = m.learnable(q, n)
        assert 0.0 <= lower < n * q < upper <= n
        widths.append((upper - lower) / (n * q))
    busy, sparse = widths
    assert busy < 0.5  # a fall by half is not learnt as it comes on 300 users a minute
    assert sparse > busy
    assert RateModel().learnable(0.3, 0.0) == (0.0, 0.0)
    assert RateModel().learnable(0.0, 10.0) == (0.0, 0.0)
