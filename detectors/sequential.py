"""Sequential evidence: a CUSUM of log-likelihood ratios that gathers a slice's evidence over its
whole life, with a false-alarm rate bounded per series and day.

Why sequential. A slice of traffic (one app version's events of one event, one platform's
conversion from a screen to the event that follows it) is often sparse: a few events an hour.
Judged minute by minute, or over a fixed hour, such a slice never holds enough evidence; judged
on everything since its trouble began, it does. The trouble's start is unknown, so the test is
Page's CUSUM: the statistic adds the log-likelihood ratio of each observation ("as broken" against
"as usual") and never falls below zero, so it is, at every moment, the evidence since the most
telling start (`onset`). Windows without observations add nothing: silence neither builds nor
resets evidence, it just waits (a release reaching its first users, a sparse event at night).

False alarms. Under the usual behaviour the likelihood ratio is a non-negative martingale, so
one excursion of the statistic (from zero until it is back at zero) reaches `h` with probability
at most e^-h (Ville's inequality). A series whose statistic leaves zero `n` times a day thus
raises false alarms at a rate of at most n·e^-h a day; `threshold(n, alpha)` = ln(n / alpha)
bounds it by `alpha` per series and day, whatever the series' traffic (a busy series, which gets
more chances, needs a little more evidence than a sparse one). With `ALPHA_PER_DAY` = 3e-4, a
plan with 1,000 watched slices expects at most one false alarm from them in about three days,
provided the reference rates are right; they are estimated, so the monitors use them
conservatively, and the bound is loose: most excursions die within a step or two (measured on
the backtest profiles, with 600–750 slices live on a 5k-users/day shop: 4 false slice alarms
in 118 profile-days at 3e-4, 1 at 1e-4, where the bound allows about 0.2 a day). The silence
test of outages keeps 1e-4 (its own setting, `silence_alpha_per_day`).

Log-likelihood ratios (nats):
- counts (`poisson_llr`): n events where λ were expected, against ρ·λ: n·ln ρ + (1 - ρ)·λ;
- trials (`bernoulli_llr`): k successes of n at rate p0, against p1:
  k·ln(p1/p0) + (n - k)·ln((1 - p1)/(1 - p0)).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

ALPHA_PER_DAY = 3e-4  # false alarms per series and day the threshold allows
DAY = 86400.0
MIN_RATE = 1e-4  # a reference rate is never taken below this (one LLR stays bounded)
LN2 = math.log(2.0)  # a total loss is dated where its silence holds this much evidence


def threshold(excursions_per_day: float, alpha_per_day: float = ALPHA_PER_DAY) -> float:
    """The CUSUM threshold (nats) that bounds false alarms by `alpha_per_day` per series and day
    for a series whose statistic leaves zero that often (at least once a day is assumed)."""
    if not 0.0 < alpha_per_day < 1.0:
        raise ValueError("alpha_per_day must be in (0, 1)")
    return math.log(max(excursions_per_day, 1.0) / alpha_per_day)


def poisson_llr(observed: float, expected: float, rho: float) -> float:
    """Log-likelihood ratio of `observed` counts under rate ρ·`expected` against `expected`."""
    if rho <= 0.0:
        return -math.inf if observed > 0.0 else max(expected, 0.0)
    return observed * math.log(rho) + (1.0 - rho) * max(expected, 0.0)


def bernoulli_llr(successes: float, trials: float, p0: float, p1: float) -> float:
    """Log-likelihood ratio of `successes` of `trials` at rate `p1` against rate `p0`."""
    p0, p1 = clip_rate(p0), clip_rate(p1)
    failures = max(trials - successes, 0.0)
    return successes * math.log(p1 / p0) + failures * math.log((1.0 - p1) / (1.0 - p0))


def clip_rate(p: float) -> float:
    """A rate kept inside [MIN_RATE, 1 - MIN_RATE]."""
    return min(max(p, MIN_RATE), 1.0 - MIN_RATE)


@dataclass(slots=True)
class Cusum:
    """Page's one-sided CUSUM with the evidence it holds since its `onset`.

    `update` adds one window's log-likelihood ratio and what it observed; the statistic never
    goes below zero (then the evidence is forgotten and `onset` cleared). `alarm` compares it with
    the threshold for the series' own rate of excursions. JSON-safe state (`to_state`).
    """

    stat: float = 0.0
    onset: float | None = None  # start of the first window of the current evidence
    last: float | None = None  # start of the last window that added to it
    observed: float = 0.0  # since onset: observed units (counts, or successes of the trials)
    expected: float = 0.0  # since onset: what the usual behaviour gives for them
    trials: float = 0.0  # since onset: trials (rates) or exposure (counts)
    excursions: float = 0.0  # times the statistic left zero, ever
    first: float | None = None  # start of the first window that carried evidence
    # since the last window with observed units (within the evidence): its start, evidence
    # (nats), expected units and trials: "none since" is a sharper onset for a total loss
    tail_onset: float | None = None
    tail_stat: float = 0.0
    tail_expected: float = 0.0
    tail_trials: float = 0.0
    # where in the tail its evidence reached ln 2 nats: the change's likeliest half-way point
    # (see `tail_start`)
    tail_mark: float | None = None

    def update(
        self, ts: float, llr: float, observed: float, expected: float, trials: float = 0.0
    ) -> None:
        """Add one window's evidence (`llr` in nats; -inf is conclusive against)."""
        if self.first is None:
            self.first = ts
        value = self.stat + llr
        if not value > 0.0:  # also -inf and NaN: no evidence left
            self.reset()
            return
        if self.onset is None:
            self.onset = ts
            self.excursions += 1.0
        self.stat = value
        self.last = ts
        self.observed += observed
        self.expected += expected
        self.trials += trials
        if observed > 0.0:
            self._clear_tail()
        else:
            if self.tail_onset is None:
                self.tail_onset = ts
            self.tail_stat += llr
            self.tail_expected += expected
            self.tail_trials += trials
            if self.tail_mark is None and self.tail_stat >= LN2:
                self.tail_mark = ts

    def reset(self) -> None:
        """Forget the evidence (not the excursion count)."""
        self.stat = 0.0
        self.onset = self.last = None
        self.observed = self.expected = self.trials = 0.0
        self._clear_tail()

    def _clear_tail(self) -> None:
        self.tail_onset = self.tail_mark = None
        self.tail_stat = self.tail_expected = self.tail_trials = 0.0

    def tail_start(self) -> float | None:
        """When a total loss most likely began, given nothing came since `tail_onset`.

        The last success bounds the start from below, and a sparse series is often silent for
        a long while before its trouble (the night). If the change is equally likely at any
        point of the tail's evidence, the likelihood of its being at ℓ nats into the tail is
        e^-ℓ (what came before it was as usual), so its posterior median is where the tail's
        evidence reaches ln 2 (for a tail long enough to alarm). A busy series gathers that in
        its first window: its start stays the last success's next window.
        """
        return self.tail_mark if self.tail_mark is not None else self.tail_onset

    def per_day(self, now: float) -> float:
        """Excursions a day so far (over at least one day)."""
        if self.first is None:
            return 0.0
        return self.excursions / max(1.0, (now - self.first) / DAY)

    def limit(self, now: float, alpha_per_day: float = ALPHA_PER_DAY) -> float:
        """This series' threshold now (see `threshold`)."""
        return threshold(self.per_day(now), alpha_per_day)

    def to_state(self) -> list:
        return list(asdict(self).values())

    @classmethod
    def from_state(cls, state: list) -> Cusum:
        return cls(*state)
