"""Online model of a rate per window (conversion: numerator/denominator; violations/count).

The rate p is Beta-distributed: its mean is learnt with exponential forgetting (half-life
`halflife` windows) and its concentration ν (effective sample size) is the smallest of
- the forgotten sample size behind the estimate (few users seen → wide),
- what the residuals say: the intra-class correlation ρ of the sums over w windows is estimated
  online per scale, ν_w = 1/ρ_w - 1 (the rate also wobbles between windows, not only binomially),
- `ess_cap`, so that the model keeps adapting however much data it has seen.
The numerator given the denominator is then beta-binomial: "+200 % on 40 users" gives a tail
probability near 0.1, not an alarm, while a 20 % change on thousands of users does.

As in `detectors.volume`, `assess` scores the sums over the last 1, 5, 15, 60 and 240 windows
(numerator against the expected numerator given the denominators), Bonferroni-corrected over the
scales; the 4-hour scale is for sparse funnels (a few users per minute), where an hour holds too
few conversions to show even a large change.
The rate may depend on the hour of day: a 24-slot ratio (observed / expected numerators per UTC
hour, forgotten over ~10 days, learnt from the second day) modulates the base rate. Each hour's
ratio is shrunk towards 1 by empirical Bayes: the spread of the true hourly factors (τ², the
DerSimonian-Laird estimate over the hours) against each hour's own sampling noise, so a real
daily cycle is kept while on a flat rate the hourly noise is not mistaken for one (noisy factors
would be the model's own error, which the dispersion ρ then reads as a wobbling rate and which
widens every interval).

Call `assess(ts, numerator, denominator)` once per window in time order, then
`learn(ts, numerator, denominator)`. The Assessment is in RATE units: observed = numerator /
denominator of this window, expected = learnt rate, lower/upper = `interval_level` interval of the
rate for this window's denominator; score and direction come from the multi-window evidence.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence

from detectors.base import Assessment
from detectors.intervals import (
    betabinom_midp,
    betabinom_rate_interval,
    score_from_pvalue,
    two_sided,
    z_two_sided,
)
from detectors.packed import packed, rows

_PRIOR_A = 0.5  # Jeffreys prior on the rate
_PRIOR_B = 0.5
_RHO_PRIOR = 1e-3
_RHO_PRIOR_WEIGHT = 30.0
_RHO_FLOOR = 1e-6
_Z_CAP = 5.0
_MIN_HOURS = 3  # hours with data before a daily cycle is estimated at all


def _decay(halflife: float) -> float:
    return 0.5 ** (1.0 / halflife)


class RateModel:
    """Per-series rate model (beta-binomial). Implements `detectors.base.SeriesModel`."""

    def __init__(
        self,
        window_seconds: float = 60.0,
        scales: Sequence[int] = (1, 5, 15, 60, 240),
        halflife: float = 1440.0,  # windows
        ess_cap: float = 20000.0,
        dispersion_halflife: float = 2880.0,  # windows
        warmup_seconds: float = 6 * 3600.0,
        min_weight: float = 100.0,
        interval_level: float = 0.99,
        hour_of_day: bool = True,
        hour_halflife: float = 10.0,  # visits of the hour (days)
    ) -> None:
        self.window_seconds = float(window_seconds)
        self.scales = sorted({int(s) for s in scales})
        if not self.scales or self.scales[0] < 1:
            raise ValueError("scales must be positive window counts")
        if min(window_seconds, halflife, dispersion_halflife, hour_halflife, ess_cap) <= 0:
            raise ValueError("window_seconds, half-lives and ess_cap must be positive")
        if not 0.0 < interval_level < 1.0:
            raise ValueError("need 0 < interval_level < 1")
        self.halflife = float(halflife)
        self.ess_cap = float(ess_cap)
        self.dispersion_halflife = float(dispersion_halflife)
        self.warmup_seconds = float(warmup_seconds)
        self.min_weight = float(min_weight)
        self.interval_level = float(interval_level)
        self.hour_of_day = bool(hour_of_day)
        self.hour_halflife = float(hour_halflife)
        # Hour-of-day modulation: ratio of observed to expected numerators per UTC hour.
        self.hour_o = [0.0] * 24
        self.hour_e = [0.0] * 24
        self.hour_spread = 0.0  # τ²: variance of the true hourly factors (refreshed hourly)
        self._spread_hour = -1
        self.num = 0.0  # EW sum of numerators
        self.den = 0.0  # EW sum of denominators
        self.total = 0.0  # all denominators ever learnt (for the learning flag)
        self.first_ts: float | None = None
        self.rho_num = [0.0] * len(self.scales)
        self.rho_den = [0.0] * len(self.scales)
        # Buffers of [ts, numerator, denominator, expected numerator, and their cumulative sums].
        self.seen = array("d")  # rows of `ROW` doubles (see `_push`)
        self.learnt = array("d")

    def base_rate(self) -> float:
        """The learnt rate over all hours (posterior mean)."""
        return (self.num + _PRIOR_A) / (self.den + _PRIOR_A + _PRIOR_B)

    def _miss_rate(self) -> float:
        """1 - the base rate, kept off 0: the binomial noise of a rate near 1 is not nil."""
        return max(1.0 - self.base_rate(), 1e-3)

    def hour_factor(self, ts: float) -> float:
        """How the rate at this hour of day compares with the base rate (shrunk towards 1)."""
        if not self.hour_of_day:
            return 1.0
        h = int(ts // 3600.0) % 24
        tau2, e = self.hour_spread, self.hour_e[h]
        if tau2 <= 0.0 or e <= 0.0:
            return 1.0
        noise = self._miss_rate() / e
        return 1.0 + tau2 / (tau2 + noise) * (self.hour_o[h] / e - 1.0)

    def _refresh_hour_spread(self) -> None:
        """τ² of the hourly factors: the precision-weighted spread of the observed ratios beyond
        what their sampling noise explains (DerSimonian-Laird), 0 when noise explains it all."""
        q = self._miss_rate()
        hours = [(o / e, e / q) for o, e in zip(self.hour_o, self.hour_e, strict=True) if e > 0.0]
        if len(hours) < _MIN_HOURS:
            self.hour_spread = 0.0
            return
        w_sum = sum(w for _, w in hours)
        mean = sum(r * w for r, w in hours) / w_sum
        chi2 = sum(w * (r - mean) ** 2 for r, w in hours)
        c = w_sum - sum(w * w for _, w in hours) / w_sum
        self.hour_spread = max(0.0, (chi2 - (len(hours) - 1)) / c) if c > 0.0 else 0.0

    def expected(self, ts: float) -> float:
        """The expected rate of the window starting at `ts`."""
        return min(self.base_rate() * self.hour_factor(ts), 0.999)

    def rho(self, scale_index: int = 0) -> float:
        num, den = self.rho_num[scale_index], self.rho_den[scale_index]
        if den <= 0.0:
            return _RHO_PRIOR
        return min(max(_RHO_FLOOR, num / den), 0.999)

    def concentration(self, scale_index: int = 0) -> float:
        """ν: effective sample size of the predictive Beta for the given scale."""
        nu_resid = 1.0 / self.rho(scale_index) - 1.0
        return max(1.0, min(self.den + _PRIOR_A + _PRIOR_B, nu_resid, self.ess_cap))

    def is_learning(self, ts: float) -> bool:
        if self.first_ts is None or ts - self.first_ts < self.warmup_seconds:
            return True
        return self.total < self.min_weight

    def assess(self, ts: float, observed: float, weight: float = 1.0) -> Assessment:
        x, n = _clean(observed, weight)
        p = self.expected(ts)
        _push(self.seen, ts, x, n, n * p, self.scales[-1], self.window_seconds)
        best_p, best_dir, tested = 1.0, 0, 0
        span = (0.0, 0.0, 0, 0.0)
        for idx, (sx, sn, se, full) in enumerate(
            _multi_sums(self.seen, ts, self.scales, self.window_seconds)
        ):
            if not full or sn <= 0.0:
                continue
            tested += 1
            nu = self.concentration(idx)
            q = se / sn
            if (sx - se) ** 2 < sn * q * (1.0 - q) * (nu + sn) / (nu + 1.0):
                continue  # within one sd: no evidence worth the exact tails
            upper, lower = betabinom_midp(sx, sn, q, nu)
            pv, direction = two_sided(upper, lower)
            if pv < best_p:
                best_p, best_dir, span = pv, direction, (sx, se, self.scales[idx], sn)
        pv = min(1.0, best_p * max(tested, 1))
        lower, upper = betabinom_rate_interval(n, p, self.concentration(0), self.interval_level)
        return Assessment(
            observed=x / n if n > 0 else p,
            expected=p,
            lower=lower,
            upper=upper,
            score=score_from_pvalue(pv),
            direction=best_dir if pv < 1.0 - self.interval_level else 0,
            learning=self.is_learning(ts),
            span_observed=span[0],
            span_expected=span[1],
            span_windows=span[2],
            span_weight=span[3],
        )

    def learnable(self, expected: float, weight: float = 1.0) -> tuple[float, float]:
        """The range of numerators a deviating window of `weight` users is learnt within (the
        engine clips it there), as `VolumeModel.learnable` does for counts: the expected
        numerator times 1 ± the relative band of the longest span's sum at `interval_level`
        (beta-binomial, the span's users as they were assessed). A bias of the model's own (an
        hour converting a little less every day than it learnt) is within what the span may
        show, and is learnt; a real fall moves the rate no further than the span's chance could
        (about ±4 % of the rate at 300 users a minute, ±22 % at two)."""
        n = max(float(weight), 0.0)
        if n <= 0.0 or expected <= 0.0 or not self.seen:
            return 0.0, 0.0
        q = min(expected, 0.999)
        buf = self.seen  # the last `scales[-1]` windows assessed: their users
        _, span_users, _, _ = _multi_sums(buf, buf[-ROW], [len(buf) // ROW], self.window_seconds)[0]
        sn = max(span_users, n)
        nu = self.concentration(len(self.scales) - 1)
        sd = math.sqrt(sn * q * (1.0 - q) * (nu + sn) / (nu + 1.0))
        reach = z_two_sided(self.interval_level) * sd / (sn * q)
        return n * q * max(0.0, 1.0 - reach), min(n, n * q * (1.0 + reach))

    def learn(self, ts: float, observed: float, weight: float = 1.0) -> None:
        # not rounded: the engine's substitute for an anomalous window is the expected numerator
        # (e.g. 0.4 of 1 user), and rounding it (to 0) would teach a lower rate and a false
        # between-window dispersion
        x, n = _clean(observed, weight, whole=False)
        if self.first_ts is None:
            self.first_ts = ts
        p = self.expected(ts)
        if self.den > 0.0:
            self._learn_dispersion(ts, x, n, p)
        base = self.base_rate()
        keep = _decay(self.halflife)
        self.num = keep * self.num + x
        self.den = keep * self.den + n
        # Hours are learnt against a base rate that has seen a whole day (not a running mean of
        # the first hours, which would bias every hour towards the ones before it).
        if self.hour_of_day and ts - self.first_ts >= 86400.0:
            h = int(ts // 3600.0) % 24
            if h != self._spread_hour:  # once an hour is enough for a daily cycle
                self._spread_hour = h
                self._refresh_hour_spread()
            # Forget per window spent in the hour: `hour_halflife` days of 60 windows each.
            keep = _decay(self.hour_halflife * 3600.0 / self.window_seconds)
            self.hour_o[h] = keep * self.hour_o[h] + x
            self.hour_e[h] = keep * self.hour_e[h] + n * base
        self.total += n

    def _learn_dispersion(self, ts: float, x: float, n: float, p: float) -> None:
        _push(self.learnt, ts, x, n, n * p, self.scales[-1], self.window_seconds)
        keep = _decay(self.dispersion_halflife)
        for idx, (sx, sn, se, full) in enumerate(
            _multi_sums(self.learnt, ts, self.scales, self.window_seconds)
        ):
            if not full or sn < 2.0:
                continue
            q = se / sn
            binom_var = sn * q * (1.0 - q)
            scale = sn * (sn - 1.0) * q * (1.0 - q)
            if scale <= 0.0:
                continue
            if self.rho_den[idx] <= 0.0:
                self.rho_num[idx] = _RHO_PRIOR * scale * _RHO_PRIOR_WEIGHT
                self.rho_den[idx] = scale * _RHO_PRIOR_WEIGHT
            var = binom_var + self.rho(idx) * scale
            resid2 = min((sx - se) ** 2, _Z_CAP * _Z_CAP * var)
            self.rho_num[idx] = keep * self.rho_num[idx] + (resid2 - binom_var)
            self.rho_den[idx] = keep * self.rho_den[idx] + scale

    def to_state(self) -> dict:
        return {
            "type": "rate",
            "params": {
                "window_seconds": self.window_seconds,
                "scales": list(self.scales),
                "halflife": self.halflife,
                "ess_cap": self.ess_cap,
                "dispersion_halflife": self.dispersion_halflife,
                "warmup_seconds": self.warmup_seconds,
                "min_weight": self.min_weight,
                "interval_level": self.interval_level,
                "hour_of_day": self.hour_of_day,
                "hour_halflife": self.hour_halflife,
            },
            "hour_o": list(self.hour_o),
            "hour_e": list(self.hour_e),
            "hour_spread": [self.hour_spread, self._spread_hour],
            "num": self.num,
            "den": self.den,
            "total": self.total,
            "first_ts": self.first_ts,
            "rho_num": list(self.rho_num),
            "rho_den": list(self.rho_den),
            "seen": rows(self.seen, ROW),
            "learnt": rows(self.learnt, ROW),
        }

    @classmethod
    def from_state(cls, state: dict) -> RateModel:
        m = cls(**state["params"])
        m.hour_o = [float(x) for x in state["hour_o"]]
        m.hour_e = [float(x) for x in state["hour_e"]]
        if "hour_spread" in state:
            spread, hour = state["hour_spread"]
            m.hour_spread, m._spread_hour = float(spread), int(hour)
        else:  # a state from before the shrinkage: estimate it now
            m._refresh_hour_spread()
        m.num = float(state["num"])
        m.den = float(state["den"])
        m.total = float(state["total"])
        m.first_ts = state["first_ts"]
        m.rho_num = [float(x) for x in state["rho_num"]]
        m.rho_den = [float(x) for x in state["rho_den"]]
        m.seen = packed(state["seen"])
        m.learnt = packed(state["learnt"])
        return m


def _clean(observed: float, weight: float, whole: bool = True) -> tuple[float, float]:
    """Non-negative numbers with numerator ≤ denominator (a numerator above its denominator is
    capped: a funnel step cannot convert more users than entered it); whole numbers unless
    `whole` is False."""
    if not (math.isfinite(float(observed)) and math.isfinite(float(weight))):
        raise ValueError(f"numerator and denominator must be finite, got {observed!r}/{weight!r}")
    if observed < 0 or weight < 0:
        raise ValueError(f"numerator and denominator must be ≥ 0, got {observed!r}/{weight!r}")
    if not whole:
        n = float(weight)
        return min(max(float(observed), 0.0), n), n
    n = round(float(weight))
    x = min(max(round(float(observed)), 0), n)
    return float(x), float(n)


ROW = 7  # doubles per buffer row: ts, x, n, expected x, cum x, cum n, cum expected


def _push(buf: array, ts: float, x: float, n: float, e: float, size: int, step: float) -> None:
    """Append the row [ts, x, n, expected x, cum x, cum n, cum expected] (replacing the row of
    the same window) and keep the last `size` rows (packed: `detectors.packed`)."""
    if buf and abs(buf[-ROW] - ts) < 0.5 * step:
        cx, cn, ce = buf[-3] - buf[-6], buf[-2] - buf[-5], buf[-1] - buf[-4]
        del buf[-ROW:]
    elif buf:
        last_ts = buf[-ROW]
        cx, cn, ce = buf[-3], buf[-2], buf[-1]
        # Windows skipped since the last row had nobody to measure: record them as empty, so
        # that the sums over the last w windows stay complete.
        missing = min(round((ts - last_ts) / step) - 1, size)
        for k in range(missing, 0, -1):
            buf.extend((ts - k * step, 0.0, 0.0, 0.0, cx, cn, ce))
    else:
        cx = cn = ce = 0.0
    buf.extend((ts, x, n, e, cx + x, cn + n, ce + e))
    if len(buf) > size * ROW:
        del buf[0 : len(buf) - size * ROW]


def _multi_sums(
    buf: array, ts: float, scales: list[int], step: float
) -> list[tuple[float, float, float, bool]]:
    """Per scale w: sums of numerators, denominators and expected numerators over the last w rows,
    and whether they are exactly the w consecutive windows ending at `ts` (no gap)."""
    size = len(buf) // ROW
    last = len(buf) - ROW
    out = []
    for w in scales:
        if w > size:
            out.append((0.0, 0.0, 0.0, False))
            continue
        r = len(buf) - w * ROW
        full = buf[r] >= ts - (w - 0.5) * step and buf[last] <= ts + 0.5 * step
        out.append(
            (
                buf[last + 4] - buf[r + 4] + buf[r + 1],
                buf[last + 5] - buf[r + 5] + buf[r + 2],
                buf[last + 6] - buf[r + 6] + buf[r + 3],
                full,
            )
        )
    return out
