"""Online model of per-window event counts: seasonal level × NB noise, multi-scale evidence.

Expected count μ(t) = level(t) · seasonal factor(t):
- level: damped Holt level/trend on the deseasonalised counts (slow, half-life `level_halflife`
  windows), rescaled at once when what `learn` is fed deviates significantly (p < 1e-4 over the
  largest scale, by > 10 %) for `shift_windows` consecutive windows: a level shift the engine
  accepted (fed as is) is followed within ~12 hours, while a slow incident it did not alert on is
  not learnt as normal within 2 hours;
- seasonal factor: hour-of-day × hour-of-week profile (`detectors.seasonality`); while the
  hour-of-week slot is young (first week) the dispersion gets `unseen_week_phi` more, less when
  the same hour of a day of the same kind was seen: a tenth of it for a weekday after another
  weekday (the first Friday is judged almost as usual), half of it for a weekend day after the
  other (a Sunday morning is not a Saturday's; a first Sunday judged as strictly as a known day
  fires, is then not learnt as normal, and fires again a week later).
Noise: a clustered (compound) count. Events come in sessions, so the sum S of the last w windows
with expected sum M has Var(S) = c_w·M + φ_w·M²: c_w (≥ 1) is the clustering factor (about the
mean square number of events one visit sends within w windows over its mean: the variance/mean
ratio stays the same whatever the traffic, night or day), φ_w the relative error of the model
itself. Both are fitted online for each scale w by weighted least squares of (S - M)²/M on
(1, M) over what `learn` receives (weights about 1/Var(y), which small counts make large, and
1/w, since successive sums over w windows overlap: a burst is in w of them and is one residual's
worth of evidence, not w; forgotten over `dispersion_halflife`; φ shrunk towards a prior, worth
`_PHI_PRIOR_WEIGHT` independent sums at each scale, it only leaves where φM is comparable to c),
so quiet hours are judged with the same clustering as busy ones, not as Poisson, and a sparse
series does not take a few coincidences for model error. Tails: S/c_w is
negative binomial with mean M/c_w and dispersion φ_w (Var(S/c) = M/c + φ(M/c)²), i.e. evidence
is counted in clusters of events, not in events.

`assess` scores the sums of the last 1, 5, 15 and 60 windows (observations as assessed, not as
learnt) against their expectations, takes the most significant scale with a Bonferroni correction
for the number of scales, and maps the p-value to a score (`detectors.intervals`: 0.5 = p 1e-3).
So a sustained 30 % drop on a busy series builds evidence over minutes, while single-minute noise
does not. Measured on the synthetic series of tests/test_volume_model.py (score ≥ 0.75, the
engine's default firing level): ×2, ×0.5, ×0.7 found after 1/1/5 windows at 3000 events/min,
2/7/37 at 60/min, 4/6/13 at 8/min; false positives ≈ 2e-4 of windows at score ≥ 0.5, none at
0.75 (15 days each).

Call `assess(ts, count)` once per window in time order (it records the observation in a short
evidence buffer; it never changes the model), then `learn(ts, value)` with the count or the
engine's substitute for an anomalous window. Windows must not be skipped (a window without events
is a 0): a gap leaves the larger scales untested until they are whole again. Memory is fixed
(≈ 1,800 doubles in packed arrays: profiles, dispersion sums and two buffers of 60 windows).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence

from detectors.base import Assessment
from detectors.intervals import nb_interval, nb_midp, score_from_pvalue, two_sided, z_two_sided
from detectors.packed import packed, rows
from detectors.seasonality import SeasonalProfile, hour_of_week

DAY = 86400.0
_PHI_PRIOR = 0.1  # before residuals are seen: ~30 % relative noise on top of Poisson
_PHI_PRIOR_WEIGHT = 30.0  # independent sums of each scale behind the prior (c = 1, φ = _PHI_PRIOR)
# φ is seen only where φM is comparable to c (M ≳ 1/φ): the prior on φ alone, worth
# _PHI_PRIOR_WEIGHT sums at M = 1/_PHI_PRIOR, so a sparse series (M ≪ 1 in every window) keeps
# it, its own spread learnt as clustering c, while a busy one outweighs it within hours.
_PHI_RIDGE = _PHI_PRIOR_WEIGHT / (_PHI_PRIOR**2 * 4.0)  # weight 1/(c + φ₀M)² = 1/4 there, times M²
_C_CEILING = 1000.0  # clustering factor: a visit sending more than ~1000 events is not a visit
_PHI_FLOOR = 0.001  # ≥ 3 % relative error: no model is better than that on real traffic
_PHI_CEILING = 100.0  # sd ≈ 10× the mean: wider says nothing, and huge values overflow quantiles
_Z_CAP = 5.0  # residuals beyond ±5 sd are clipped when learning the dispersion


def _decay(halflife: float) -> float:
    return 0.5 ** (1.0 / halflife)


class VolumeModel:
    """Per-series count model. See the module docstring; implements `detectors.base.SeriesModel`."""

    def __init__(
        self,
        window_seconds: float = 60.0,
        scales: Sequence[int] = (1, 5, 15, 60),
        level_halflife: float = 1440.0,  # windows
        trend_rate: float = 0.0005,
        trend_damping: float = 0.995,
        shift_windows: int = 120,
        dispersion_halflife: float = 1440.0,  # windows
        seasonal_rate: float = 0.004,
        warmup_seconds: float = DAY,
        interval_level: float = 0.99,
        unseen_week_phi: float = 0.05,
    ) -> None:
        self.window_seconds = float(window_seconds)
        self.scales = sorted({int(s) for s in scales})
        if not self.scales or self.scales[0] < 1:
            raise ValueError("scales must be positive window counts")
        if min(window_seconds, level_halflife, dispersion_halflife, shift_windows) <= 0:
            raise ValueError("window_seconds, half-lives and shift_windows must be positive")
        if not (0.0 <= trend_damping < 1.0 and 0.0 < interval_level < 1.0):
            raise ValueError("need 0 ≤ trend_damping < 1 and 0 < interval_level < 1")
        self.level_halflife = float(level_halflife)
        self.trend_rate = float(trend_rate)
        self.trend_damping = float(trend_damping)
        self.shift_windows = int(shift_windows)
        self.dispersion_halflife = float(dispersion_halflife)
        self.warmup_seconds = float(warmup_seconds)
        self.interval_level = float(interval_level)
        self.unseen_week_phi = float(unseen_week_phi)
        self.season = SeasonalProfile(seasonal_rate, seasonal_rate)
        self.level = 0.0
        self.trend = 0.0
        self.shift_run = 0
        self.restarts = 0
        self.n = 0.0  # windows learnt
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        # Dispersion per scale: EW weighted sums of 1, M, M², y and y·M with y = (S - M)²/M (the
        # observed variance/mean ratio), and the fit c + φ·M they give (see `_fit`).
        self.disp = [array("d", [0.0] * 5) for _ in self.scales]
        self.clus = [1.0] * len(self.scales)
        self.phis = [_PHI_PRIOR] * len(self.scales)
        # Evidence buffer (assessed observations) and learnt buffer: rows of [ts, y, mu, cum y,
        # cum mu], packed `ROW` doubles a row (see `_push`)
        self.seen = array("d")
        self.learnt = array("d")
        self._ctx: tuple[float, float, float, float, list[float]] | None = None

    # ------------------------------------------------------------------ expectation
    def expected(self, ts: float) -> float:
        """Expected count of the window starting at `ts` (cold start: whatever has been seen)."""
        return self._context(ts)[0]

    def _context(self, ts: float) -> tuple[float, float, float, float, list[float]]:
        """(expected, seasonal factor, extra week dispersion, ts, φ per scale), cached from
        assess to learn (the model does not change in between; c per scale is `self.clus`)."""
        ctx = self._ctx
        if ctx is not None and ctx[3] == ts:
            return ctx
        factor, week_seen, like_seen = self.season.lookup(ts)
        mu = 0.0
        if self.n > 0:
            steps = 1.0
            if self.last_ts is not None:
                steps = max(1.0, (ts - self.last_ts) / self.window_seconds)
            damp = self.trend_damping
            trend = self.trend * (damp * (1.0 - damp**steps) / (1.0 - damp))
            mu = max(self.level + trend, 0.0) * factor
        extra = 0.0
        if week_seen < 60.0:  # young hour-of-week slot: its weekday effect is partly a guess
            weekend = hour_of_week(ts) >= 120.0  # Saturday 00:00 UTC on
            unseen = self.unseen_week_phi * ((0.5 if weekend else 0.1) if like_seen else 1.0)
            extra = unseen * (1.0 - week_seen / 60.0)
        self._ctx = ctx = (mu, factor, extra, ts, self.phis)
        return ctx

    def phi(self, scale_index: int = 0, ts: float | None = None) -> float:
        """Learnt relative (model) dispersion φ of the sum over `scales[scale_index]` windows
        (`ts` is accepted for compatibility: the clustering term makes quiet hours noisier)."""
        return self.phis[scale_index]

    def clustering(self, scale_index: int = 0) -> float:
        """Learnt clustering factor c (≥ 1; 1 = Poisson) of the sum over that many windows."""
        return self.clus[scale_index]

    def variance(self, expected: float, scale_index: int = 0) -> float:
        """Predicted variance of a sum over `scales[scale_index]` windows with that expectation."""
        return self.clus[scale_index] * expected + self.phis[scale_index] * expected * expected

    def is_learning(self, ts: float) -> bool:
        if self.first_ts is None or ts - self.first_ts < self.warmup_seconds:
            return True
        return self.season.day_count(ts) < 30.0

    # ------------------------------------------------------------------ assess
    def assess(self, ts: float, observed: float, weight: float = 1.0) -> Assessment:
        observed = _count(ts, observed)
        # `extra`: more dispersion while the hour-of-week slot is young (weekday effect unknown).
        mu, _, extra, _, phis = self._context(ts)
        _push(self.seen, ts, observed, mu, self.scales[-1], self.window_seconds)
        best_p, best_dir, best = 1.0, 0, -1
        tested = 0
        sums = _multi_sums(self.seen, ts, self.scales, self.window_seconds)
        for idx, (s_obs, s_exp, full) in enumerate(sums):
            if not full:  # not enough history for this scale yet
                continue
            tested += 1
            phi = phis[idx] + extra
            c = self.clus[idx]
            if abs(s_obs - s_exp) < math.sqrt(c * s_exp + phi * s_exp * s_exp):
                continue  # within one sd: p > 0.25 at any mean, no evidence (saves the tails)
            upper, lower = nb_midp(s_obs / c, s_exp / c, phi)
            p, direction = two_sided(upper, lower)
            if p < best_p:
                best_p, best_dir, best = p, direction, idx
        p = min(1.0, best_p * max(tested, 1))
        c = self.clus[0]
        lower, upper = nb_interval(mu / c, phis[0] + extra, self.interval_level)
        lower, upper = lower * c, upper * c
        direction = best_dir if p < 1.0 - self.interval_level else 0
        return Assessment(
            observed=float(observed),
            expected=mu,
            lower=lower,
            upper=upper,
            score=score_from_pvalue(p),
            direction=direction,
            learning=self.is_learning(ts),
            span_observed=sums[best][0] if best >= 0 else 0.0,
            span_expected=sums[best][1] if best >= 0 else 0.0,
            span_windows=self.scales[best] if best >= 0 else 0,
        )

    def learnable(self, expected: float, weight: float = 1.0) -> tuple[float, float]:
        """The range a deviating window is learnt within (the engine clips it there; `weight`
        is 1 for a count, as in `learn`): the window's expectation times the relative band of
        the longest span at `interval_level`.
        A bias of the model's own (every night a fifth lower than it expects) is within what an
        hour may show, and is learnt; a burst on a sparse event (its hour's band is wide in
        relative terms, a few times the expectation) or an outage's zeros move the model no
        further than an hour's chance could."""
        if expected <= 0.0:
            return 0.0, 0.0
        span = expected * self.scales[-1]
        sd = math.sqrt(self.clus[-1] * span + self.phis[-1] * span * span)
        reach = z_two_sided(self.interval_level) * sd / span
        return expected * max(0.0, 1.0 - reach), expected * (1.0 + reach)

    # ------------------------------------------------------------------ learn
    def learn(self, ts: float, observed: float, weight: float = 1.0) -> None:
        y = _count(ts, observed)
        mu, factor, extra, _, phis = self._context(ts)
        self._ctx = None  # the model changes now
        if self.first_ts is None:
            self.first_ts = ts
        self.n += 1.0
        _push(self.learnt, ts, y, mu, self.scales[-1], self.window_seconds)
        if self.n == 1.0:
            self.level = y / factor
        else:
            sums = _multi_sums(self.learnt, ts, self.scales, self.window_seconds)
            if self.shift_run == 0:  # a deviation on its way to a level shift is not noise
                self._learn_dispersion(ts, sums, phis)
            self._learn_level(y / factor)
            if extra == 0.0:  # an unlearnt weekday effect is not a shift
                self._detect_shift(sums[-1])
            else:
                self.shift_run = 0
            if self.level > 0.0 and self.shift_run == 0:
                # (while the largest scale deviates on and on, the deviation is the level's:
                # the profile learning it too would be corrected twice at the rescale)
                day = int((ts - self.first_ts) // DAY)
                if 0 < day <= 2 and day > self.restarts:  # see SeasonalProfile.restart_day
                    self.restarts = day
                    self.season.restart_day()
                self.season.learn(ts, y, self.level, self.clus[-1])
        self.last_ts = ts if self.last_ts is None else max(ts, self.last_ts)

    def _learn_level(self, deseason: float) -> None:
        alpha = max(1.0 - _decay(self.level_halflife), 1.0 / self.n)
        prev = self.level
        pred = prev + self.trend_damping * self.trend
        self.level = max(pred + alpha * (deseason - pred), 0.0)
        if self.n > self.level_halflife:  # no trend while the level is a plain running mean
            step = self.level - prev
            self.trend = self.trend_damping * self.trend + self.trend_rate * (
                step - self.trend_damping * self.trend
            )

    def _detect_shift(self, largest: tuple[float, float, bool]) -> None:
        """Rescale the level after `shift_windows` consecutive significant deviations."""
        s_obs, s_exp, full = largest
        shifted = 0
        if full and s_exp > 0.0:
            ratio = s_obs / s_exp
            if abs(ratio - 1.0) > 0.1:
                c, phi = self.clus[-1], self.phis[-1]
                upper, lower = nb_midp(s_obs / c, s_exp / c, phi)
                p, direction = two_sided(upper, lower)
                shifted = direction if p < 1e-4 else 0
        if shifted == 0 or (self.shift_run and (self.shift_run > 0) != (shifted > 0)):
            self.shift_run = shifted
            return
        self.shift_run += shifted
        if abs(self.shift_run) >= self.shift_windows:
            ratio = min(max(s_obs / s_exp, 0.01), 100.0)
            self.level *= ratio
            self.trend = 0.0
            self.shift_run = 0
            _rescale(self.learnt, ratio)
            _rescale(self.seen, ratio)

    def _learn_dispersion(
        self, ts: float, sums: list[tuple[float, float, bool]], phis: list[float]
    ) -> None:
        """Weighted least squares of y = (S - M)²/M on (1, M), per scale, forgotten over
        `dispersion_halflife` windows; weights about 1/Var(y) (see `_weight`)."""
        keep = _decay(self.dispersion_halflife)
        for idx, (scale, (s_obs, s_exp, full)) in enumerate(zip(self.scales, sums, strict=True)):
            if not full or s_exp <= 0.0:
                continue
            acc = self.disp[idx]
            c, phi = self.clus[idx], phis[idx]
            if acc[0] <= 0.0:  # prior: c = 1, φ = _PHI_PRIOR, seen at M/4 and 2M
                for m in (0.25 * s_exp, 2.0 * s_exp):
                    d = 1.0 + _PHI_PRIOR * m
                    w = 0.5 * _PHI_PRIOR_WEIGHT * _weight(d, 1.0, m)
                    acc[0] += w
                    acc[1] += w * m
                    acc[2] += w * m * m
                    acc[3] += w * d
                    acc[4] += w * d * m
            d = c + phi * s_exp
            var = d * s_exp
            y = min((s_obs - s_exp) ** 2, _Z_CAP * _Z_CAP * var) / s_exp
            # sums over `scale` windows overlap: one window's residual is 1/scale of an
            # independent one (a burst is seen by `scale` successive sums, not `scale` times)
            w = _weight(d, c, s_exp) / scale
            acc[0] = keep * acc[0] + w
            acc[1] = keep * acc[1] + w * s_exp
            acc[2] = keep * acc[2] + w * s_exp * s_exp
            acc[3] = keep * acc[3] + w * y
            acc[4] = keep * acc[4] + w * y * s_exp
            self.clus[idx], self.phis[idx] = _fit(acc)

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict:
        return {
            "type": "volume",
            "params": {
                "window_seconds": self.window_seconds,
                "scales": list(self.scales),
                "level_halflife": self.level_halflife,
                "trend_rate": self.trend_rate,
                "trend_damping": self.trend_damping,
                "shift_windows": self.shift_windows,
                "dispersion_halflife": self.dispersion_halflife,
                "seasonal_rate": self.season.day_rate,
                "warmup_seconds": self.warmup_seconds,
                "interval_level": self.interval_level,
                "unseen_week_phi": self.unseen_week_phi,
            },
            "season": self.season.to_state(),
            "level": self.level,
            "trend": self.trend,
            "shift_run": self.shift_run,
            "restarts": self.restarts,
            "n": self.n,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "disp": [list(a) for a in self.disp],
            "seen": rows(self.seen, ROW),
            "learnt": rows(self.learnt, ROW),
        }

    @classmethod
    def from_state(cls, state: dict) -> VolumeModel:
        m = cls(**state["params"])
        m.season = SeasonalProfile.from_state(state["season"])
        m.level = float(state["level"])
        m.trend = float(state["trend"])
        m.shift_run = int(state["shift_run"])
        m.restarts = int(state["restarts"])
        m.n = float(state["n"])
        m.first_ts = state["first_ts"]
        m.last_ts = state["last_ts"]
        if len(state.get("disp") or ()) == len(m.scales):  # else (older state): learnt anew
            m.disp = [array("d", (float(x) for x in a)) for a in state["disp"]]
            for idx, acc in enumerate(m.disp):
                if acc[0] > 0.0:
                    m.clus[idx], m.phis[idx] = _fit(acc)
        m.seen = packed(state["seen"])
        m.learnt = packed(state["learnt"])
        return m


def _weight(d: float, c: float, m: float) -> float:
    """Weight of one residual y = (S - M)²/M with c + φM = d: about 1/Var(y), halved.

    Var(y) ≈ 2d² + c³/M: the second term is the small counts' own (a count of 0 or 1 where
    M ≪ 1 says almost nothing of the spread), so a sparse series leans on its prior instead of
    fitting φ to a few coincidences. A mean that underflows to 0 tells nothing: weight 0."""
    if m <= 0.0:
        return 0.0
    return 1.0 / (d * d + 0.5 * c * c * c / m)


def _fit(acc: list[float]) -> tuple[float, float]:
    """(c, φ) minimising the weighted squares of y - c - φM plus a ridge _PHI_RIDGE·(φ - φ₀)²,
    with c ≥ 1 and φ in its bounds."""
    sw, sm, smm, sy, sym = acc
    smm += _PHI_RIDGE
    sym += _PHI_RIDGE * _PHI_PRIOR
    det = sw * smm - sm * sm
    c = phi = -1.0
    if det > 1e-12 * sw * smm:
        c = (sy * smm - sym * sm) / det
        phi = (sw * sym - sm * sy) / det
    if c < 1.0:
        c = 1.0
        phi = (sym - sm) / smm if smm > 0.0 else _PHI_PRIOR
    if phi < _PHI_FLOOR:
        phi = _PHI_FLOOR
        c = max(1.0, (sy - phi * sm) / sw) if sw > 0.0 else 1.0
    return min(c, _C_CEILING), min(phi, _PHI_CEILING)


def _count(ts: float, observed: float) -> float:
    """A window's count as a float; a clear error for what cannot be one."""
    y = float(observed)
    if not (math.isfinite(y) and y >= 0.0 and math.isfinite(ts)):
        raise ValueError(f"count must be a finite number ≥ 0 at a finite time, got {observed!r}")
    return y


ROW = 5  # doubles per buffer row: ts, y, mu, cumulative y, cumulative mu


def _push(buf: array, ts: float, y: float, mu: float, size: int, step: float) -> None:
    """Append the row [ts, y, mu, cumulative y, cumulative mu] (replacing the row of the same
    window) and keep the last `size` rows. Rows are packed in one array of doubles (a list of
    lists of floats took 4-5 times the memory)."""
    if buf and abs(buf[-ROW] - ts) < 0.5 * step:
        prev_y, prev_mu, prev_cy, prev_cmu = buf[-4], buf[-3], buf[-2], buf[-1]
        buf[-ROW:] = array("d", (ts, y, mu, prev_cy - prev_y + y, prev_cmu - prev_mu + mu))
        return
    if buf:
        buf.extend((ts, y, mu, buf[-2] + y, buf[-1] + mu))
    else:
        buf.extend((ts, y, mu, y, mu))
    if len(buf) > size * ROW:
        del buf[:ROW]


def _rescale(buf: array, ratio: float) -> None:
    """Multiply the expectations in a buffer by `ratio` (after a level shift was accepted)."""
    cum = buf[4] - buf[2] if buf else 0.0
    for k in range(0, len(buf), ROW):
        buf[k + 2] *= ratio
        cum += buf[k + 2]
        buf[k + 4] = cum


def _multi_sums(
    buf: array, ts: float, scales: list[int], step: float
) -> list[tuple[float, float, bool]]:
    """For each scale w: sums of observed and expected over the last w rows of the buffer, and
    whether they are exactly the w consecutive windows ending at `ts` (no gap)."""
    n = len(buf) // ROW
    last_ts, last_cy, last_cmu = buf[-ROW], buf[-2], buf[-1]
    out = []
    for w in scales:
        if w > n:
            out.append((0.0, 0.0, False))
            continue
        r = len(buf) - w * ROW
        full = buf[r] >= ts - (w - 0.5) * step and last_ts <= ts + 0.5 * step
        out.append((last_cy - buf[r + 3] + buf[r + 1], last_cmu - buf[r + 4] + buf[r + 2], full))
    return out
