"""Outages from the silence of active users: a source's (or every source's) users all but stop.

Each window the aggregator says how many users were active, how many had been active in the
window before (`before`: their sessions were running) and how many of those were active again
(`again`). Active users are then two parts that are nearly independent from one window to the
next, where the totals are not (a visit counts in each of its minutes):

- users going on: `again` of `before`, binomial at the source's usual continuation rate p (of
  at most the users the model expects: an excess, a bot's fresh ids, does not go on as usual);
- users arriving (new visits, or back after a pause): `users - again`, about Poisson at the
  usual arrival rate, with a dispersion learnt from the traffic: the spread of two successive
  windows' arrivals around their recent level (its mean absolute deviation, which a burst of
  bots or a backlog flushed at once does not inflate as a variance would), which holds the
  variance factor of their sums and their correlation from one window to the next.

An outage cuts both: the test is a CUSUM of both log-likelihood ratios against ρ × usual
(arrivals at ρ times their rate, going on at ρ × p). The usual arrival rate is the recent one
(EW, `recent_minutes`), at most the model's expected users times 1 - p, held while evidence
gathers (an outage does not lower its own reference; traffic falling faster than a young model
knows, an evening, is no outage). Before it is told, the arrivals since the onset must also be
too few for a reference that is itself an estimate: the recent rate is known from about
`recent_minutes / ln 2` windows of arrivals (the weights' sum: half the EW level's effective
sample size, as the rate drifts), so what to expect since the onset is negative binomial, whose
tail stays heavy when that reference holds a few visits (a sparse server source silent all night
proves nothing). The users going on since the onset are judged with it (binomial at the usual
share, a rate learnt over hours; the two tails combined as independent tests), so a busy source
whose running visits vanish with its new ones is told in its first minute.

State per series: a CUSUM and ten floats. Pure: no I/O, JSON-safe state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from detectors.intervals import binom_cdf, nb_cdf
from detectors.sequential import Cusum, bernoulli_llr, clip_rate, poisson_llr

DISPERSION_HALFLIFE = 360.0  # windows: the arrivals' dispersion is learnt over hours


@dataclass(slots=True)
class Silence:
    """The silence test of one activity series (see the module's docstring)."""

    cusum: Cusum = field(default_factory=Cusum)
    arrivals: float | None = None  # EW arrivals a window, recent (held while evidence gathers)
    again: float = 0.0  # EW users going on ...
    before: float = 0.0  # ... of the users of the window before (their ratio: p)
    level: float | None = None  # EW arrivals a window, recent, never held (for the spread)
    spread: float = 0.0  # EW |deviation| of two windows' arrivals from their recent level
    last_dev: float = 0.0
    arrived: float = 0.0  # since the onset: arrivals observed ...
    usual: float = 0.0  # ... and expected
    kept: float = 0.0  # since the onset: users going on ...
    had: float = 0.0  # ... of the users of the windows before (trials at the usual p)

    @property
    def going_on(self) -> float:
        """The usual share of the users of a window active again in the next (0 unknown)."""
        return self.again / self.before if self.before > 0.0 else 0.0

    @property
    def dispersion(self) -> float:
        """The variance factor (≥ 1) of the arrivals' sums over several windows."""
        mean = max(self.level or 0.0, self.arrivals or 0.0)  # an outage lowers only the level
        if mean <= 0.0 or self.spread <= 0.0:
            return 1.0
        # a normal deviation's mean absolute value is σ·sqrt(2/π); two windows' sum has mean 2m
        return max(1.0, self.spread**2 * math.pi / 2.0 / (2.0 * mean))

    def update(
        self,
        ts: float,
        users: float,
        again: float,
        before: float,
        expected: float,
        rho: float,
        keep: float,
        judge: bool = True,
    ) -> None:
        """Add one window: `users` active, `again` of the `before` of the window before;
        `expected`: the model's expected users; `keep`: the recent level's EW weight. Not
        `judge` (the model still learns, an annotation): learn only, and forget the evidence."""
        arrived = max(users - again, 0.0)
        p = self.going_on
        held = self.cusum.stat > 0.0
        if self.arrivals is None:
            self.arrivals = arrived
        if not judge:
            self.cusum.reset()
            self.arrived = self.usual = self.kept = self.had = 0.0
            self._learn(arrived, again, before, keep)
            return
        usual = min(self.arrivals, max(expected * (1.0 - p), 0.0))
        llr = poisson_llr(arrived, usual, rho) / self.dispersion
        # the users of the window before are trials of going on at p only up to as many as the
        # model expects: an excess (a bot's fresh ids, one-page visits of a mailing) does not go
        # on as the usual users do, and its end is no silence
        had = min(before, max(expected, 0.0))
        kept = min(again, had)
        if had > 0.0 and p > 0.0:
            llr += bernoulli_llr(kept, had, p, rho * p)
        self.cusum.update(ts, llr, users, usual + p * had, 1.0)
        if self.cusum.onset is None:
            self.arrived = self.usual = self.kept = self.had = 0.0
        else:
            self.arrived += arrived
            self.usual += usual
            if had > 0.0 and p > 0.0:
                self.kept += kept
                self.had += had
        # the windows of an excursion after its first are not learnt: an outage does not lower
        # its own reference (the first is, or a sparse source, whose empty minutes each begin
        # one, would learn only its busy ones)
        self._learn(arrived, again, before, keep, held=held)

    def _learn(
        self, arrived: float, again: float, before: float, keep: float, held: bool = False
    ) -> None:
        """Learn the window: the spread always (around a level never held, so that the end of
        a held stretch is no deviation); the usual arrivals and going on unless `held`."""
        level = self.level if self.level is not None else arrived
        dev = arrived - level
        slow = 0.5 ** (1.0 / DISPERSION_HALFLIFE)
        self.spread = slow * self.spread + (1.0 - slow) * abs(dev + self.last_dev)
        self.last_dev = dev
        self.level = keep * level + (1.0 - keep) * arrived
        if held:
            return
        mean = self.arrivals if self.arrivals is not None else arrived
        self.arrivals = keep * mean + (1.0 - keep) * arrived
        self.again = slow * self.again + (1.0 - slow) * again
        self.before = slow * self.before + (1.0 - slow) * before

    def beyond_reference(self, memory: float, pvalue: float) -> bool:
        """Are the users since the onset too few even for a reference known from about `memory`
        windows of arrivals? At `pvalue`, on both parts: the arrivals (negative binomial,
        Jeffreys' prior on the rate) and the users going on (binomial at the usual share, learnt
        over hours: on a busy source, from thousands of users). The two are nearly independent,
        so both being this low has the product t of their tails, whose chance is t·(1 - ln t)
        (Fisher's two-test combination): a busy source whose running visits and new ones both
        vanish is told in its first minute. The combination costs up to a factor 1 - ln t where
        the users going on say little (few of them); with none at all (`had` 0) the arrivals
        alone are judged. A tail that is not a number is no proof."""
        windows = max(self.cusum.trials, 1.0)
        unit = self.dispersion
        known = (self.usual / windows) * memory / unit + 0.5  # arrivals behind the usual
        mean = known * windows / memory
        tail = nb_cdf(self.arrived / unit, mean, 1.0 / known)
        if self.had > 0.0:
            tail *= binom_cdf(self.kept, self.had, clip_rate(self.going_on))
            if tail > 0.0:
                tail *= 1.0 - math.log(tail)
        return tail <= pvalue  # False for NaN

    def to_state(self) -> list:
        return [self.cusum.to_state(), self.arrivals, self.again, self.before, self.level,
                self.spread, self.last_dev, self.arrived, self.usual, self.kept,
                self.had]  # fmt: skip

    @classmethod
    def from_state(cls, s: list) -> Silence:
        return cls(Cusum.from_state(s[0]), *s[1:])

    @staticmethod
    def memory(recent_minutes: float, window_seconds: float) -> float:
        """Windows of traffic behind an EW level with a half-life of `recent_minutes`."""
        return recent_minutes * 60.0 / window_seconds / math.log(2.0)
