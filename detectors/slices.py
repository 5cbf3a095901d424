"""Slices watched with sequential evidence (`detectors.sequential`): a release, a platform or a
step of a funnel that breaks, however sparse its traffic.

A *slice* is one value of a dimension of one subject on one source: the users of app version
5.8.0 on ios sending Order Completed, the web's checkouts followed by a purchase. What a slice
counts is its *measure* (`MEASURES`); each measure is tested by one or more *families*
(`FAMILIES`), each a one-sided CUSUM against the slice's reference rate:

- measure `gone`, family `gone`: of the users sending an event on a source (every version's,
  this window), the share from one version, against its share of the source's active users
  times its rate against the others' (Bernoulli, ρ = 0.1: "it sends at most a tenth of what its
  users should"); conditioned on the window's total, this needs no rate of the hour: a burst or
  a quiet night that moves every version alike is no evidence, one version falling silent is;
- measure `pair` (a companion pair the aggregator learnt from the traffic: a screen and the event
  that follows it): of the users who did the first step, how many did the next (family
  `pair_gone`: Bernoulli, ρ = 0.1: the next step has stopped arriving);
- measures `funnel` and `funnel_early` (a plan funnel's step pair, over its whole window and
  within a few minutes): the conversion halved (`conv_down`), a quarter lower (`conv_less`,
  whole sources only) or doubled (`conv_up`). A fall's size is not known beforehand, and a
  test tuned to one size gathers evidence slowly on another (against "halved", a fall by a
  third adds about 70 % of the evidence a test of its own size would, a fall by a quarter
  none at all): two sizes, each test at its own false-alarm bound, cover falls from a fifth
  to most of the rate;
- measure `bad`, family `bad`: events breaking the plan (Bernoulli, against "a quarter or more of
  the rest break it");
- measure `repeat`, family `repeat`: events repeating a business key already received, double
  firing (as `bad`);

Reference rate. A version is compared with its own history once it has one, and before that with
the source's other versions (the pooled rate, excluding itself, is its prior worth
`prior_trials` trials): a new release is judged from its first users, an old one that always
behaved a little differently is not blamed for it. A rising conversion (`conv_up`) is judged on
whole sources only: one version's rise is its users' (a release's first users, the keenest,
convert more) or its recovery from a breakage. The value "*" (a whole source) has no peers: its
own history is its reference. The reference is taken on the safe side: one standard error lower
for the low tests (and at most `max_reference`), for the high ones one standard error higher and
at least as if two more events had been seen. It learns every window, but only once the evidence
it belongs to is settled: the windows of an excursion of the statistic wait until it ends
without an alarm (then they were usual, good and bad alike: learning only the windows that look
calm would bias it), and those of an alarm are dropped (a breakage is never learnt as normal).
It is forgotten with a half-life in time (`halflife_days`), so a slow drift is followed. All the
families of a measure share it. A rate's change alarmed for `accept_hours` becomes its normal (a
new price, a new flow: `conv_down`, `conv_less`, `conv_up`), and the slice's other tests start
afresh from it; the rate before it is remembered as long as the reference's own memory
(`halflife_days`), and the other way's test is judged against it too, so a rate coming back to
it is a recovery, not a change the other way.

Eligibility (no verdict without a reference worth the name): the measure's history on that
source must span `min_history_hours` and show `min_expected` successes (for the low tests) or
`min_trials` trials (for the high ones; for `bad` and `repeat`, whose usual share is about none
on every source, a source that has seen fewer pools the other sources' slices of the same event:
a small app's few orders a day are judged too); for `gone` and `pair_gone` a version must have
sent the event before, or be newer (first seen an hour or more after the event was), so that a
release that never had an event added later is not "missing" it.

Verdicts. A test is *alarmed* once its statistic reaches its threshold (bounded false alarms per
series and day), and *hot* while it stays there; it calms down once the windows since then make
the reference rate `calm_nats` likelier than the rate it showed in its trouble (one good window
after a total breakage, more after a partial one); then its evidence starts afresh. Silence
changes nothing: evidence neither builds nor fades while a slice sends nothing, so a release
reaching a user an hour adds up, and its alert stays open until the slice behaves again; a slice
with no observation for `forget_hours` is forgotten (a release rolled back), which calms its
alarms. Memory: per slice a few floats (its reference, a CUSUM per family, three times); slices
are bounded by `max_slices` (the longest unseen go first).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from detectors.sequential import ALPHA_PER_DAY, Cusum, bernoulli_llr, clip_rate

WHOLE = "*"  # the value that stands for a whole source
MAX_STARTS = 32  # possible starts of a change kept per test, spread over its excursion


@dataclass(frozen=True, slots=True)
class Family:
    """How a family's tests judge a slice's window."""

    # "bernoulli" (successes of trials), or "split": counts per exposure, judged by the share of
    # the group's counts that fall to this slice, given its share of the group's exposure
    model: str
    low: bool  # True: the rate falls (gone, halved); False: it rises
    rho: float = 1.0  # low tests: the alternative is rho × the reference
    # a test is told (hot) only when what it saw since its onset is a change of its size: at
    # most this share of the expected (low tests), or at least this many times it (high tests)
    told_ratio: float = 1.0
    min_told: float = 0.0  # ... and only on this many trials or more (what a person believes)
    accepts: bool = False  # a lasting change becomes the new normal (rates do; breakages never)
    # a total loss is told from the last success on ("none of the N since", once N is worth
    # telling), not from the statistic's onset: a sparse slice's statistic often leaves zero
    # hours before its trouble (a few users at night who did not go on); the alarm itself is
    # still the whole statistic's
    since_last_success: bool = False
    # judged on whole sources only: a rise of one version's conversion is its users' (a
    # release's first users, the keenest, convert more) or its recovery from a breakage;
    # double firing on a version is told by its repeated keys
    whole_only: bool = False

    def told(self, observed: float, expected: float, trials: float) -> bool:
        """Is the change seen since the onset of the size this family tells, on enough trials?"""
        if trials < self.min_told:
            return False
        if self.low:
            return observed <= self.told_ratio * expected
        return observed >= self.told_ratio * expected

    def alternative(self, p0: float) -> float:
        """The rate the test looks for, given the reference `p0`."""
        if self.model == "split":  # this slice's weight times rho, the others' unchanged
            return self.rho * p0 / (self.rho * p0 + 1.0 - p0)
        if self.low:
            return self.rho * p0
        if self.rho > 1.0:  # conv_up: doubled, at most halfway to 1
            return min(self.rho * p0, 0.5 * (1.0 + p0))
        return p0 + 0.25 * (1.0 - p0)  # bad, repeat: a quarter or more of the rest


FAMILIES: dict[str, Family] = {
    # gone: told as such when at most a quarter of the expected came (a fall to a third is a drop)
    "gone": Family("split", low=True, rho=0.1, told_ratio=0.25, since_last_success=True),
    # "0 of the 2 users who did A did B" convinces nobody: five at least
    "pair_gone": Family(
        "bernoulli", low=True, rho=0.1, told_ratio=0.25, min_told=5.0, since_last_success=True
    ),
    "conv_down": Family("bernoulli", low=True, rho=0.5, told_ratio=0.8, accepts=True),
    # a quarter lower: judged on whole sources only, as a rise is: the users left on an older
    # version as a release spreads are its least active ones, and convert less
    "conv_less": Family(
        "bernoulli", low=True, rho=0.75, told_ratio=0.8, accepts=True, whole_only=True
    ),
    "conv_up": Family(
        "bernoulli", low=False, rho=2.0, told_ratio=1.25, accepts=True, whole_only=True
    ),
    "bad": Family("bernoulli", low=False, told_ratio=2.0),
    # "2 of 4 events repeat a key" is one user searching the same thing again as often as a
    # tracker firing twice: five events at least (double firing is told on 8-12)
    "repeat": Family("bernoulli", low=False, told_ratio=2.0, min_told=5.0),
}
MEASURES: dict[str, tuple[str, ...]] = {
    "gone": ("gone",),
    "pair": ("pair_gone",),
    "funnel": ("conv_down", "conv_less", "conv_up"),
    "funnel_early": ("conv_down", "conv_less", "conv_up"),
    "bad": ("bad",),
    "repeat": ("repeat",),
}
_WATCHED_BY_PRESENCE = ("gone", "pair")  # a version must have sent the subject, or be newer
# the share of events breaking the plan or repeating a business key is the tracking's, about
# none on every source: where a source has seen too few of the subject to be its own reference
# (a small app sends a few orders a day), its reference pools the other sources' too
_POOLED_ACROSS_SOURCES = ("bad", "repeat")


@dataclass(frozen=True, slots=True)
class SliceConfig:
    alpha_per_day: float = ALPHA_PER_DAY
    prior_trials: float = 50.0  # weight of the peers' rate in a version's reference
    halflife_days: float = 3.0
    min_history_hours: float = 24.0
    min_expected: float = 20.0  # low tests: successes the reference must have seen
    min_trials: float = 30.0  # high tests: trials the reference must have seen
    newer_minutes: float = 60.0  # a version first seen this long after the subject is newer
    max_reference: float = 0.95  # the highest rate a falling rate is judged against
    calm_nats: float = math.log(20.0)  # calm once the usual rate is 20× likelier than the alarm's
    forget_hours: float = 24.0
    accept_hours: float = 4.0  # a rate's change alarmed this long is its new normal
    max_slices: int = 20_000


@dataclass(frozen=True, slots=True)
class Observation:
    """One window of one slice: `successes` of `trials` (Bernoulli) or `successes` counted on
    `trials` of exposure (`gone`: every version of the group in the same window)."""

    measure: str
    subject: str  # an event, or "A→B" for a pair of steps
    source: str
    value: str  # e.g. the app version; WHOLE for the whole source
    successes: float
    trials: float


@dataclass(slots=True)
class Verdict:
    """A test with an open alarm or one that has just calmed down, and its evidence since its
    onset."""

    key: str  # the test's: family|subject|source|value
    family: str
    subject: str
    source: str
    value: str
    hot: bool
    calm: bool
    onset: float | None  # when the change most likely began
    observed: float
    expected: float
    trials: float
    minutes: float
    rate: float  # the reference rate it is judged against
    # start of what `observed` and `expected` count: the onset, or for a total loss told from
    # its last success, the window after that success
    since: float | None = None


@dataclass(slots=True)
class _Test:
    cusum: Cusum = field(default_factory=Cusum)
    alarm: bool = False  # alarmed, and not yet back to normal
    recovery: float = 0.0  # evidence (nats) that it is back to normal, while alarmed
    # this alarm was once refused as the new normal (the caller knew it for a breakage): its
    # change is a breakage's, never accepted, only calmed once the rate is back
    vetoed: bool = False
    # the evidence's onset, then for later windows that moved the way the test looks for (a
    # success for a rise, a failure for a fall) their start and what the evidence held before
    # them (successes, expected, trials): where the change may have begun (`_likeliest_start`).
    # At most MAX_STARTS, spread over the whole excursion: when full, every other one is
    # dropped and from then on only every `stride`-th such window is noted
    starts: list[float] = field(default_factory=list)
    stride: int = 1
    skipped: int = 0  # such windows since the last one noted

    def restart(self) -> None:
        """Neither alarmed nor refused: its evidence starts afresh."""
        self.alarm, self.recovery, self.vetoed = False, 0.0, False
        self.cusum.reset()

    def mark(self, ts: float, successes: float, expected: float, trials: float, low: bool) -> None:
        """Note this window (already added to the statistic) as a possible start of a change
        (a fall if `low`, else a rise)."""
        c = self.cusum
        if c.onset is None:
            self.starts.clear()
            return
        if not self.starts or self.starts[0] != c.onset:
            self.starts[:] = [c.onset]
            self.stride, self.skipped = 1, 0
        if not (trials > successes if low else successes > 0.0) or ts == c.onset:
            return
        self.skipped += 1
        if self.skipped < self.stride:
            return
        self.skipped = 0
        self.starts += [ts, c.observed - successes, c.expected - expected, c.trials - trials]
        if len(self.starts) > 1 + 4 * MAX_STARTS:
            kept = [x for i in range(1, len(self.starts), 8) for x in self.starts[i : i + 4]]
            self.starts[1:] = kept
            self.stride *= 2

    def to_state(self) -> list:
        return [self.cusum.to_state(), self.alarm, self.recovery, self.vetoed, list(self.starts),
                self.stride, self.skipped]  # fmt: skip

    @classmethod
    def from_state(cls, s: list) -> _Test:
        vetoed = bool(s[3]) if len(s) > 3 else False
        starts = [float(x) for x in s[4]] if len(s) > 4 else []
        stride, skipped = (int(s[5]), int(s[6])) if len(s) > 6 else (1, 0)
        return cls(Cusum.from_state(s[0]), bool(s[1]), float(s[2]), vetoed, starts, stride,
                   skipped)  # fmt: skip


@dataclass(slots=True)
class _Slice:
    num: float = 0.0  # own history, forgotten over time: successes
    den: float = 0.0  # ... and trials
    learnt: float | None = None  # when it was last learnt (for forgetting)
    first: float = 0.0  # first observed
    seen: float = 0.0  # last observed
    tests: dict[str, _Test] = field(default_factory=dict)  # family -> its test
    pend_num: float = 0.0  # windows not learnt yet: those of an excursion still open
    pend_den: float = 0.0
    before: float = -1.0  # the own rate before its last change taken as normal (-1: none)
    before_until: float = 0.0  # ... remembered until then

    @property
    def alarm(self) -> bool:
        return any(t.alarm for t in self.tests.values())

    def to_state(self) -> list:
        tests = {f: t.to_state() for f, t in sorted(self.tests.items())}
        return [self.num, self.den, self.learnt, self.first, self.seen, tests, self.pend_num,
                self.pend_den, self.before, self.before_until]  # fmt: skip

    @classmethod
    def from_state(cls, s: list) -> _Slice:
        tests = {f: _Test.from_state(t) for f, t in s[5].items()}
        before = (s[8], s[9]) if len(s) > 9 else (-1.0, 0.0)  # (older states: none)
        return cls(s[0], s[1], s[2], s[3], s[4], tests, s[6], s[7], *before)


def _likeliest_start(test: _Test, fam: Family) -> tuple[float | None, float, float, float]:
    """Where a change most likely began, and what came since (successes, expected, trials).

    The statistic's onset is where it last left zero, and one success by chance at a low rate
    (a key repeated once in a while) lifts it for hours: a rise that begins later continues
    that excursion and would be dated at the chance success (as a fall would at a few chance
    failures before it). The start is taken where the change is likeliest, the rate since
    being unknown: of the onset and each later window that moved the test's way, the one whose
    evidence since, at the rate it shows, is the strongest (the generalised likelihood ratio,
    on at least the trials the family tells on)."""
    c = test.cusum
    best = (-math.inf, c.onset, c.observed, c.expected, c.trials)
    starts = test.starts if test.starts and test.starts[0] == c.onset else [c.onset]
    candidates = [(c.onset, 0.0, 0.0, 0.0)] + [
        (starts[i], starts[i + 1], starts[i + 2], starts[i + 3]) for i in range(1, len(starts), 4)
    ]
    for start, k0, e0, n0 in candidates:
        k, e, n = c.observed - k0, c.expected - e0, c.trials - n0
        if n <= 0.0 or (k >= e if fam.low else k <= e) or (n < fam.min_told and start != c.onset):
            continue
        evidence = bernoulli_llr(k, n, e / n, k / n)
        if evidence > best[0]:
            best = (evidence, start, k, e, n)
    return best[1], best[2], best[3], best[4]


def slice_key(measure: str, subject: str, source: str, value: str) -> str:
    return f"{measure}|{subject}|{source}|{value}"


class SliceWatch:
    """All slices. `window(ts, window, observations)` per closed window → verdicts."""

    def __init__(self, config: SliceConfig | None = None) -> None:
        self.config = config or SliceConfig()
        self.slices: dict[str, _Slice] = {}
        # (measure, subject, source) -> [first observed, its values (sorted), first success]
        self.groups: dict[str, list] = {}
        self._alarmed: set[str] = set()  # keys of the slices with an alarmed test
        self._sources: dict[str, list[str]] = {}  # "measure|subject" -> the sources it has

    def window(
        self,
        ts: float,
        window: float,
        observations: Iterable[Observation],
        may_accept: Callable[[Observation], bool] = lambda obs: True,
    ) -> list[Verdict]:
        """Add one closed window's observations; the verdicts of the tests alarmed now or that
        have just calmed (in key order). `may_accept`: whether a lasting change of an
        observation's slice may become its new normal now (not while the caller knows it for a
        breakage, such as the conversion's last step missing)."""
        by_group: dict[str, list[Observation]] = {}
        for obs in observations:
            if obs.trials <= 0.0 and obs.successes <= 0.0:
                continue
            by_group.setdefault(_group_key(obs.measure, obs.subject, obs.source), []).append(obs)
        out: dict[str, Verdict] = {}
        for gkey in sorted(by_group):
            items = by_group[gkey]
            group = self.groups.get(gkey)
            if group is None:
                group = self.groups[gkey] = [ts, [], None]
                self._index(gkey)
            totals = (sum(o.successes for o in items), sum(o.trials for o in items))
            for obs in sorted(items, key=lambda o: o.value):
                key = slice_key(obs.measure, obs.subject, obs.source, obs.value)
                sl = self.slices.get(key)
                if sl is None:
                    sl = self.slices[key] = _Slice(first=ts, seen=ts)
                    group[1] = sorted({*group[1], obs.value})
                if obs.successes > 0.0 and group[2] is None:
                    group[2] = ts
                accepting = may_accept(obs)
                for verdict in self._observe(ts, window, sl, obs, group, totals, accepting):
                    out[verdict.key] = verdict
                if sl.alarm:
                    self._alarmed.add(key)
                else:
                    self._alarmed.discard(key)
        for key in sorted(self._alarmed):
            sl = self.slices[key]
            for family, test in sorted(sl.tests.items()):
                tkey = _test_key(family, key)
                if test.alarm and tkey not in out:
                    out[tkey] = self._verdict(ts, window, tkey, test, None)
        for tkey, test in self._forget(ts):
            out[tkey] = self._verdict(ts, window, tkey, test, None)
        return [out[k] for k in sorted(out)]

    def adopt(self, tkey: str) -> None:
        """Take what test `tkey` (family|subject|source|value) has seen since its onset as its
        slice's normal and calm it (the engine accepted the same change as a level shift)."""
        for skey, sl, test in self._tests_of(tkey):
            if test.cusum.trials <= 0.0:
                continue
            # (its reference's learnt time kept: adopting is no learning)
            self._take_as_normal(sl.seen, sl, test.cusum.observed, test.cusum.trials, sl.learnt)
            for other in sl.tests.values():
                other.restart()
            self._alarmed.discard(skey)

    def discard(self, tkey: str) -> None:
        """Forget what test `tkey` has seen since its onset, neither alarm nor normal (the
        engine explained it otherwise: a flood of the first step's users that do not go on)."""
        for skey, sl, test in self._tests_of(tkey):
            sl.pend_num = sl.pend_den = 0.0
            test.restart()
            if not sl.alarm:
                self._alarmed.discard(skey)

    def shortfall_by_value(self, tkey: str) -> dict[str, float]:
        """For a whole source's test `tkey` (family|subject|source|*): each value's (app
        version's) own test of the same family, what it lacks (low tests) or has in excess
        (high ones) since its onset, where it has evidence: which releases a source's trouble
        comes from."""
        family, subject, source, value = tkey.split("|")
        low = FAMILIES[family].low
        out: dict[str, float] = {}
        if value != WHOLE:
            return out
        for measure, families in MEASURES.items():
            if family not in families:
                continue
            prefix = f"{measure}|{subject}|{source}|"
            for skey, sl in self.slices.items():
                test = sl.tests.get(family) if skey.startswith(prefix) else None
                name = skey[len(prefix) :]
                if test is None or name == WHOLE or test.cusum.stat <= 0.0:
                    continue
                gap = test.cusum.expected - test.cusum.observed
                gap = gap if low else -gap
                if gap > 0.0:
                    out[name] = out.get(name, 0.0) + gap
        return out

    def _tests_of(self, tkey: str) -> list[tuple[str, _Slice, _Test]]:
        """(slice key, slice, test) of test `tkey` (family|subject|source|value)."""
        family, rest = tkey.split("|", 1)
        found = []
        for measure, families in MEASURES.items():
            skey = f"{measure}|{rest}"
            sl = self.slices.get(skey) if family in families else None
            test = sl.tests.get(family) if sl is not None else None
            if sl is not None and test is not None:
                found.append((skey, sl, test))
        return found

    # -------------------------------------------------------------------------------- tests
    def _observe(
        self,
        ts: float,
        window: float,
        sl: _Slice,
        obs: Observation,
        group: list,
        totals: tuple[float, float],
        accepting: bool = True,
    ) -> list[Verdict]:
        cfg = self.config
        sl.seen = ts
        key = slice_key(obs.measure, obs.subject, obs.source, obs.value)
        verdicts = []
        sl.pend_num += obs.successes
        sl.pend_den += obs.trials
        for family in MEASURES[obs.measure]:
            fam = FAMILIES[family]
            if fam.whole_only and obs.value != WHOLE:
                continue
            test = sl.tests.get(family)
            if test is None:
                test = sl.tests[family] = _Test()
            ref = self._reference(ts, sl, obs, group, fam)
            trials = obs.trials
            if ref is not None and fam.model == "split":
                ref, trials = self._split(obs, ref, group, totals)
            if ref is not None and trials > 0.0:
                expected = ref * trials
                llr = bernoulli_llr(obs.successes, trials, ref, fam.alternative(ref))
                test.cusum.update(ts, llr, obs.successes, expected, trials)
                if fam.model == "bernoulli":
                    test.mark(ts, obs.successes, expected, trials, fam.low)
            limit = test.cusum.limit(ts, cfg.alpha_per_day)
            calmed = False
            onset = test.cusum.onset
            if test.alarm and fam.accepts and not accepting:
                test.vetoed = True
            if (
                test.alarm
                and fam.accepts
                and accepting
                and not test.vetoed
                and onset is not None
                and (ts - onset >= cfg.accept_hours * 3600.0)
            ):
                # a lasting change of a rate (a new price, a new flow): its new normal; the
                # slice's other tests (the same fall seen at another size) start afresh from it
                self._take_as_normal(ts, sl, test.cusum.observed, test.cusum.trials, ts)
                test.alarm, calmed = False, True
                for other in sl.tests.values():
                    if other is not test:
                        other.restart()
            elif test.alarm and ref is not None and trials > 0.0:
                # back to normal? the window's odds of the reference against the rate seen since
                # the onset, added up (never below zero) until they reach `calm_nats`
                step = _recovery_llr(obs.successes, trials, ref, test.cusum)
                test.recovery = max(0.0, test.recovery + step)
                if test.recovery >= cfg.calm_nats:
                    test.alarm, calmed = False, True
            elif test.cusum.stat >= limit:
                test.alarm, test.recovery = True, 0.0
            if test.alarm or calmed:
                verdicts.append(self._verdict(ts, window, _test_key(family, key), test, ref))
            if calmed:
                test.cusum.reset()
                test.vetoed = False
        if sl.alarm:  # the trouble's own windows are never learnt
            sl.pend_num = sl.pend_den = 0.0
        elif all(t.cusum.stat <= 0.0 for t in sl.tests.values()):
            self._learn(ts, sl)  # a stretch that ended without an alarm: it was usual
        return verdicts

    def _split(
        self, obs: Observation, rate: float, group: list, totals: tuple[float, float]
    ) -> tuple[float | None, float]:
        """The `gone` test's trials and reference: of the group's counts in this window (every
        version's), the share that should fall to this version given its exposure and its rate
        against the others' (their pooled rate): conditioned on the total, the test needs no
        rate of the hour, so a burst or a quiet night that moves every version alike is no
        evidence, while a version alone falling silent is."""
        count, exposure = totals
        peers_exposure = exposure - obs.trials
        if count <= 0.0 or peers_exposure <= 0.0 or obs.trials <= 0.0:
            return None, 0.0  # nobody sent it, or nobody else is there: no evidence either way
        peers_rate = self._peer_rate(obs, group)
        if peers_rate is None:
            return None, 0.0
        mine, theirs = obs.trials * rate, peers_exposure * peers_rate
        return clip_rate(mine / (mine + theirs)), count

    def _peer_rate(self, obs: Observation, group: list) -> float | None:
        num = den = 0.0
        for value in group[1]:
            if value in (obs.value, WHOLE):
                continue
            peer = self.slices.get(slice_key(obs.measure, obs.subject, obs.source, value))
            if peer is not None and not peer.alarm:
                num += peer.num
                den += peer.den
        return (num + 0.5) / (den + 1.0) if num > 0.0 else None

    def _learn(self, ts: float, sl: _Slice) -> None:
        """Add the pending windows to the slice's own history (forgotten with a half-life)."""
        keep = 1.0
        if sl.learnt is not None:
            keep = 0.5 ** ((ts - sl.learnt) / (self.config.halflife_days * 86400.0))
        sl.num = keep * sl.num + sl.pend_num
        sl.den = keep * sl.den + sl.pend_den
        sl.pend_num = sl.pend_den = 0.0
        sl.learnt = ts

    def _reference(
        self, ts: float, sl: _Slice, obs: Observation, group: list, fam: Family
    ) -> float | None:
        """The rate a family judges `obs`'s slice against (None: not eligible yet)."""
        cfg = self.config
        if ts - group[0] < cfg.min_history_hours * 3600.0:
            return None
        if obs.measure in _WATCHED_BY_PRESENCE and sl.num <= 0.0:
            started = group[2]  # when the subject was first seen on the source
            if started is None or sl.first - started < cfg.newer_minutes * 60.0:
                return None  # it never sent the subject and is not newer than it
        peers_num = peers_den = 0.0
        if obs.value != WHOLE:
            for value in group[1]:
                if value in (obs.value, WHOLE):  # the whole source holds this version too
                    continue
                peer = self.slices.get(slice_key(obs.measure, obs.subject, obs.source, value))
                if peer is not None and not peer.alarm:
                    peers_num += peer.num
                    peers_den += peer.den
        if obs.measure in _POOLED_ACROSS_SOURCES and sl.den + peers_den < cfg.min_trials:
            far_num, far_den = self._other_sources(obs)
            peers_num, peers_den = peers_num + far_num, peers_den + far_den
        if peers_den > 0.0 and (peers_num > 0.0 or not fam.low):
            peer_rate = (peers_num + 0.5) / (peers_den + 1.0)
            # the peers' rate is worth `prior_trials` trials (Poisson: as many successes)
            prior = cfg.prior_trials / peer_rate if fam.model == "split" else cfg.prior_trials
            rate = (sl.num + prior * peer_rate) / (sl.den + prior)
            weight = sl.den + prior
            hits, trials = sl.num + peers_num, sl.den + peers_den
        elif sl.den > 0.0:
            rate = (sl.num + 0.5) / (sl.den + 1.0)
            weight, hits, trials = sl.den + 1.0, sl.num, sl.den
        else:
            return None
        if (hits if fam.low else trials) < (cfg.min_expected if fam.low else cfg.min_trials):
            return None
        if fam.model == "split":  # the standard error of a rate of rare events
            sd = rate / math.sqrt(max(rate * weight, 1.0))
        else:
            sd = math.sqrt(rate * (1.0 - rate) / (weight + 1.0))
        recalled = fam.accepts and sl.before >= 0.0 and ts < sl.before_until
        if not fam.low:
            # a rare rate is known no better than a couple of events more would make it (its
            # standard error says too little when few were seen: 1 in 400 may well be 1 in 100)
            ref = max(rate + sd, (hits + 2.0) / (trials + 2.0))
            # a rate coming back to what it was before a fall taken as normal is no rise
            return clip_rate(max(ref, sl.before) if recalled else ref)
        # a falling rate is judged against at most `max_reference`: a step followed by the next
        # "always" still misses it now and then (a session cut short, an event late), more
        # often than its history says, and each miss would weigh too much
        ref = min(rate - sd, cfg.max_reference)
        return clip_rate(min(ref, sl.before) if recalled else ref)

    def _take_as_normal(
        self, ts: float, sl: _Slice, num: float, den: float, learnt: float | None
    ) -> None:
        """A lasting change becomes the slice's normal (`num` of `den`, learnt at `learnt`); the
        rate before it is kept for `halflife_days` (as long as the reference's own memory), so
        that the rate coming back to it is a recovery, not a change the other way."""
        sl.before = (sl.num + 0.5) / (sl.den + 1.0) if sl.den > 0.0 else -1.0
        sl.before_until = ts + self.config.halflife_days * 86400.0
        sl.num, sl.den, sl.learnt = num, den, learnt
        sl.pend_num = sl.pend_den = 0.0

    def _index(self, gkey: str) -> None:
        """File a new group under its measure and subject, by its key alone, so that a watch
        resumed from its state pools exactly as the original (a source named with "|" is filed
        under no subject asked for: never pooled)."""
        head, _, source = gkey.rpartition("|")
        self._sources.setdefault(head, []).append(source)

    def _other_sources(self, obs: Observation) -> tuple[float, float]:
        """What the other sources' slices of `obs`'s measure and subject learnt (successes,
        trials), every version's, those in alarm left out."""
        num = den = 0.0
        for source in self._sources.get(f"{obs.measure}|{obs.subject}", ()):
            if source == obs.source:
                continue
            for value in self.groups[_group_key(obs.measure, obs.subject, source)][1]:
                if value == WHOLE:  # (its versions are counted)
                    continue
                peer = self.slices.get(slice_key(obs.measure, obs.subject, source, value))
                if peer is not None and not peer.alarm:
                    num += peer.num
                    den += peer.den
        return num, den

    def _verdict(
        self, ts: float, window: float, tkey: str, test: _Test, rate: float | None
    ) -> Verdict:
        family, subject, source, value = tkey.split("|", 3)
        fam = FAMILIES[family]
        cusum = test.cusum
        limit = cusum.limit(ts, self.config.alpha_per_day)
        onset, observed = cusum.onset, cusum.observed
        expected, trials = cusum.expected, cusum.trials
        told = fam.told(observed, expected, trials)  # (on the whole evidence)
        if (
            fam.since_last_success
            and cusum.tail_onset is not None
            and fam.told(0.0, cusum.tail_expected, cusum.tail_trials)
        ):
            since, observed = cusum.tail_onset, 0.0
            expected, trials = cusum.tail_expected, cusum.tail_trials
            onset = cusum.tail_start()
        else:
            if fam.model == "bernoulli":
                onset, observed, expected, trials = _likeliest_start(test, fam)
            since = onset
        minutes = 0.0  # what was seen is told since the last success; the start is its estimate
        if since is not None and cusum.last is not None:
            minutes = (cusum.last - since + window) / 60.0
        if rate is None:
            rate = cusum.expected / cusum.trials if cusum.trials > 0 else 0.0
        return Verdict(
            key=tkey,
            family=family,
            subject=subject,
            source=source,
            value=value,
            hot=test.alarm and cusum.stat >= limit and told,
            calm=not test.alarm,
            onset=onset,
            observed=observed,
            expected=expected,
            trials=trials,
            minutes=minutes,
            rate=rate,
            since=since,
        )

    def _forget(self, ts: float) -> list[tuple[str, _Test]]:
        """Drop the slices unseen for `forget_hours` (and the longest unseen beyond
        `max_slices`); their alarmed tests, calmed, for their last verdict."""
        cfg = self.config
        horizon = ts - cfg.forget_hours * 3600.0
        stale = [k for k, sl in self.slices.items() if sl.seen < horizon]
        if len(self.slices) - len(stale) > cfg.max_slices:
            rest = sorted((sl.seen, k) for k, sl in self.slices.items() if sl.seen >= horizon)
            stale += [k for _, k in rest[: len(self.slices) - len(stale) - cfg.max_slices]]
        calmed = []
        for key in sorted(stale):
            sl = self.slices.pop(key)
            self._alarmed.discard(key)
            measure, subject, source, value = key.split("|", 3)
            group = self.groups.get(_group_key(measure, subject, source))
            if group is not None and value in group[1]:
                group[1] = [v for v in group[1] if v != value]
            for family, test in sorted(sl.tests.items()):
                if test.alarm:
                    test.alarm = False
                    calmed.append((_test_key(family, key), test))
        return calmed

    # -------------------------------------------------------------------------------- state
    def to_state(self) -> dict:
        return {
            "slices": {k: sl.to_state() for k, sl in sorted(self.slices.items())},
            "groups": {k: [g[0], list(g[1]), g[2]] for k, g in sorted(self.groups.items())},
        }

    @classmethod
    def from_state(cls, state: dict, config: SliceConfig | None = None) -> SliceWatch:
        watch = cls(config)
        watch.slices = {k: _Slice.from_state(v) for k, v in state.get("slices", {}).items()}
        watch.groups = {k: [g[0], list(g[1]), g[2]] for k, g in state.get("groups", {}).items()}
        watch._alarmed = {k for k, sl in watch.slices.items() if sl.alarm}
        for gkey in watch.groups:
            watch._index(gkey)
        return watch


def _recovery_llr(successes: float, trials: float, p0: float, cusum: Cusum) -> float:
    """Log-likelihood ratio of one window under the reference rate against the rate the slice
    has shown since its onset: positive when the window looks usual again."""
    seen = (cusum.observed + 0.5) / (cusum.trials + 1.0)
    return bernoulli_llr(successes, trials, seen, p0)


def _group_key(measure: str, subject: str, source: str) -> str:
    return f"{measure}|{subject}|{source}"


def _test_key(family: str, slice_key: str) -> str:
    """family|subject|source|value of a test, from its slice's key."""
    return f"{family}|{slice_key.split('|', 1)[1]}"
