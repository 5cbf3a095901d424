"""Count and rate distributions for the detectors: tails, quantiles, p-values → scores.

Everything here is a scalar function built on `scipy.special` ufuncs (about 1-5 µs a call), because
the frozen `scipy.stats` distributions cost ~100 µs each and models update once per window per
series.

Conventions:
- Negative binomial (NB2) with mean `mean` and dispersion `phi`: Var = mean + phi * mean².
  `phi` below `POISSON_PHI` means Poisson.
- Tail p-values are *mid-p* values (half the probability of the observed value counts on each side),
  so that upper + lower = 1 and discrete data is not systematically conservative.
- A score is `min(1, -log10(p) / SCORE_DECADES)`: p = 1e-3 → 0.5, p = 1e-6 (or less) → 1.
  Scores mean the same thing for every series and model; `pvalue_from_score` inverts the map.
"""

from __future__ import annotations

import math
from functools import cache
from statistics import NormalDist

import numpy as np
from scipy import special

POISSON_PHI = 1e-6
SCORE_DECADES = 6.0
_TINY = 1e-300


@cache
def z_two_sided(level: float) -> float:
    """The two-sided normal quantile of `level` (2.58 at 0.99)."""
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def score_from_pvalue(p: float) -> float:
    """Map a p-value to a score in [0, 1] on a log scale (p=1e-3 → 0.5, p≤1e-6 → 1)."""
    if not p < 1.0:  # also catches NaN
        return 0.0
    return min(1.0, -math.log10(max(p, _TINY)) / SCORE_DECADES)


def pvalue_from_score(score: float) -> float:
    """Inverse of `score_from_pvalue` (for choosing thresholds as p-values)."""
    return 10.0 ** (-SCORE_DECADES * min(max(score, 0.0), 1.0))


def nb_size_prob(mean: float, phi: float) -> tuple[float, float]:
    """NB2 (mean, phi) → scipy's (n, p) parametrisation: n = 1/phi, p = n / (n + mean)."""
    n = 1.0 / phi
    return n, n / (n + mean)


def nb_phi_from_moments(mean: float, var: float) -> float:
    """Dispersion phi such that Var = mean + phi·mean² (0 when not overdispersed)."""
    if mean <= 0.0:
        return 0.0
    return max(0.0, (var - mean) / (mean * mean))


def nb_sf(k: float, mean: float, phi: float) -> float:
    """P(X ≥ k) for X ~ NB2(mean, phi) (Poisson when phi is ~0)."""
    if k <= 0.0:
        return 1.0
    if mean <= 0.0:
        return 0.0
    if phi < POISSON_PHI:
        return float(special.gammainc(k, mean))
    n, p = nb_size_prob(mean, phi)
    return float(special.betainc(k, n, 1.0 - p))


def nb_midp(k: float, mean: float, phi: float) -> tuple[float, float]:
    """Mid-p tail probabilities (upper, lower) of observing `k` under NB2(mean, phi)."""
    upper = 0.5 * (nb_sf(k, mean, phi) + nb_sf(k + 1.0, mean, phi))
    return upper, 1.0 - upper


def nb_cdf(k: float, mean: float, phi: float) -> float:
    """P(X ≤ k) for X ~ NB2(mean, phi)."""
    if k < 0.0:
        return 0.0
    if mean <= 0.0:
        return 1.0
    if phi < POISSON_PHI:
        return float(special.gammaincc(k + 1.0, mean))
    n, p = nb_size_prob(mean, phi)
    return float(special.betainc(n, k + 1.0, p))


def binom_cdf(k: float, n: float, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p), continuous in k and n (the regularised beta)."""
    if k < 0.0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    return float(special.betainc(n - k, k + 1.0, 1.0 - p))


def nb_quantile(q: float, mean: float, phi: float) -> float:
    """Smallest integer k with P(X ≤ k) ≥ q under NB2(mean, phi).

    A Cornish-Fisher guess, then an exact search on the CDF (usually two evaluations): cheaper
    than scipy's root-finding `nbdtrik`, and exact.
    """
    if mean < 1e-9 or q <= 0.0:  # P(X ≥ 1) ≤ mean: 0 is the quantile of any usable q
        return 0.0
    var = mean + phi * mean * mean
    sd = math.sqrt(var)
    skew = (mean + 3.0 * phi * mean * mean + 2.0 * phi * phi * mean**3) / (var * sd)
    z = float(special.ndtri(q))
    k = max(0.0, float(math.ceil(mean + sd * (z + (z * z - 1.0) * skew / 6.0) - 0.5)))
    # Bracket: lo has CDF < q (or is -1), hi has CDF ≥ q; then bisect.
    step = 1.0
    if nb_cdf(k, mean, phi) >= q:
        hi, lo = k, k - 1.0
        while lo >= 0.0 and nb_cdf(lo, mean, phi) >= q:
            hi, lo, step = lo, max(lo - 2.0 * step, -1.0), 2.0 * step
    else:
        lo, hi = k, k + 1.0
        while nb_cdf(hi, mean, phi) < q:
            lo, hi, step = hi, hi + 2.0 * step, 2.0 * step
    while hi - lo > 1.0:
        mid = math.floor((lo + hi) / 2.0)
        if nb_cdf(mid, mean, phi) >= q:
            hi = mid
        else:
            lo = mid
    return hi


def nb_interval(mean: float, phi: float, level: float) -> tuple[float, float]:
    """Central `level` prediction interval (lower, upper) of one NB2 count."""
    alpha = (1.0 - level) / 2.0
    return nb_quantile(alpha, mean, phi), nb_quantile(1.0 - alpha, mean, phi)


# ---------------------------------------------------------------------------------------------
# Beta-binomial: X | p ~ Binomial(n, p), p ~ Beta(rate·nu, (1-rate)·nu)
# ---------------------------------------------------------------------------------------------

EXACT_BB_TERMS = 200


def _betaln(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _bb_lower_exact(k: int, n: int, a: float, b: float) -> float:
    """Mid-p P(X < k) + P(X = k)/2 by summing the pmf over 0..k (k small)."""
    if k <= 40:  # pmf recurrence in plain floats: cheaper than numpy for short sums
        pmf = math.exp(_betaln(a, n + b) - _betaln(a, b))
        total = 0.0
        for j in range(k):
            total += pmf
            pmf *= (n - j) / (j + 1.0) * (j + a) / (n - j - 1.0 + b)
        return min(1.0, total + 0.5 * pmf)
    j = np.arange(k + 1, dtype=float)
    logpmf = (
        special.gammaln(n + 1.0)
        - special.gammaln(j + 1.0)
        - special.gammaln(n - j + 1.0)
        + special.betaln(j + a, n - j + b)
        - special.betaln(a, b)
    )
    pmf = np.exp(logpmf)
    return float(min(1.0, pmf[:-1].sum() + 0.5 * pmf[-1]))


def _bb_approx_nu(n: float, nu: float) -> float:
    """Concentration of the Beta that matches the mean and variance of X/n under BB(n, ., nu)."""
    return max(n * (nu + 1.0) / (nu + n) - 1.0, 1e-6)


def betabinom_midp(k: float, n: float, rate: float, nu: float) -> tuple[float, float]:
    """Mid-p tails (upper, lower) of `k` successes out of `n` under a beta-binomial predictive.

    `rate` is the expected rate and `nu` the concentration (prior effective sample size).
    Exact pmf sums when the relevant tail is short (≤ EXACT_BB_TERMS terms), otherwise a
    moment-matched Beta approximation of X/n (keeps the skewness of small rates).
    """
    if n <= 0:
        return 0.5, 0.5
    rate = min(max(rate, 1e-9), 1.0 - 1e-9)
    nu = max(nu, 1e-6)
    a, b = rate * nu, (1.0 - rate) * nu
    ki, ni = round(k), round(n)
    if ki <= EXACT_BB_TERMS and ni < 1e7:
        lower = _bb_lower_exact(ki, ni, a, b)
        return 1.0 - lower, lower
    if ni - ki <= EXACT_BB_TERMS and ni < 1e7:
        upper = _bb_lower_exact(ni - ki, ni, b, a)
        return upper, 1.0 - upper
    nu2 = _bb_approx_nu(n, nu)
    x = min(max(k / n, 0.0), 1.0)
    upper = float(special.betainc((1.0 - rate) * nu2, rate * nu2, 1.0 - x))
    return upper, 1.0 - upper


def betabinom_rate_interval(n: float, rate: float, nu: float, level: float) -> tuple[float, float]:
    """Central `level` interval of the observed RATE X/n (approximate; for display)."""
    if n <= 0:
        return 0.0, 1.0
    rate = min(max(rate, 1e-9), 1.0 - 1e-9)
    nu2 = _bb_approx_nu(n, max(nu, 1e-6))
    alpha = (1.0 - level) / 2.0
    a, b = rate * nu2, (1.0 - rate) * nu2
    lo = float(special.betaincinv(a, b, alpha))
    hi = float(special.betaincinv(a, b, 1.0 - alpha))
    # Round outward to achievable rates k/n.
    return math.floor(lo * n + 1e-9) / n, min(1.0, math.ceil(hi * n - 1e-9) / n)


def two_sided(upper: float, lower: float) -> tuple[float, int]:
    """Two-sided p-value and the direction (+1 high, -1 low) from mid-p tails."""
    if upper <= lower:
        return min(1.0, 2.0 * upper), 1
    return min(1.0, 2.0 * lower), -1
