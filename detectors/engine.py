"""The detection engine: window records in, alerts out. Pure (no Kafka), deterministic, resumable.

Per closed window the engine
1. rolls the fine records up to the monitored series (`detectors.rollup`); a known volume series
   with no record in the window counts 0 (that is how `disappeared` is seen);
2. asks each series' model to assess its value (before learning it);
3. feeds the score to one lifecycle per series × direction (`detectors.lifecycle`). A lifecycle
   gathers its evidence from the window it became pending in, a rise from the model's most
   deviating span before it too (up to `LEAD_WINDOWS`: a sparse event's first minutes are often
   its best evidence); it fires when the evidence is also worth an alert (`detectors.worth`): for a
   rise, the users arriving in its windows (a visit counts once, however many minutes it
   spans) beyond chance, unless its events are more than a few users could send;
4. groups lifecycles into incidents (`detectors.incidents`): a lifecycle that fires joins an
   open incident of the same metric and direction whose series is compatible (no dimension
   with a different value: e.g.
   "Order Completed" and "Order Completed on ios", or "ios" and "Product Viewed on ios"), so one
   outage is ONE alert (if that incident began at most `merge_minutes` before), owned by the
   first series that fired (coarse series are processed first,
   so a tie goes to the total and the slice is named by attribution). Events of one source
   that start deviating together (within `together_minutes`, same direction) are one incident
   too: a burst of a source's visits moves Product Viewed, its screen view and the searches at
   once, which is one thing to look at, not four alerts. A total that fires while
   one of its slices has an open incident in the same direction joins it, however old (an
   event gone on Android for hours drags the event's total down at night). A `drop` becomes
   `disappeared` when one of its series has had no events for `disappear_windows` windows while
   `disappear_expected` events were expected in total and the model scores the drop at the
   firing level (so bursty series are not declared gone in a quiet minute), or when one slice
   of it stopped sending (7.);
5. lets each model learn, following this rule: a window is learnt as observed when it looks
   normal; while a lifecycle of the series is pending or firing, it is annotated, or a related
   series has an open incident (an event's total, its source, its slices), the model learns its
   own expected value instead (the anomaly does not leak into the baseline, and no false "drop"
   follows the end of a spike); a window that deviates otherwise (score ≥ the resolve score) is
   learnt clipped to what the model's longest span allows (`VolumeModel.learnable`: an hour's
   band; `RateModel.learnable`: four hours'), so that a bias of the model's own (a night that
   falls faster than it knows, deviating on the hour's sums every night; an hour converting a
   little less than learnt) is learnt away while an outage's zeros, a sparse event's burst or a
   funnel step's breakage are not learnt as they are. A level shift is accepted once
   its alert has been firing for `accept_after_minutes`: the alert resolves, the series learns
   what it observes and stays quiet in that direction until the model has caught up (its score
   falls below the resolve score). A disappeared series is never
   accepted (it resolves when events come back), nor is a drop that is part of a disappearance
   (an event's total while the event is gone from one source);
6. detects new events: an event the plan does not know (or, after `new_event_after_minutes` of
   watching, one never seen before, while its first events are within the span) with events in
   `new_event_windows` of the last `new_event_span` windows and at least `new_event_min_count`
   of them: one alert per event, resolved after `new_event_hold_minutes`;
7. watches slices (`slice_dims`, e.g. app_version) of each event on each source with
   sequential tests that gather a slice's evidence over its whole life (`detectors.sequential`):
   an event gone from a version (its sends against the version's active users) or no longer
   following the step before it, a version's share of plan violations (a release that renamed
   a property) or of repeated business keys (double firing) rising, a conversion per slice
   falling or rising; each bounded to a false-alarm rate per series and day.
   The tests are `detectors.slices` (fed by `detectors.slice_feed`); `detectors.slice_alerts`
   turns each window's verdicts into lifecycle steps on the series' slice tracks and tells the
   incidents (4.) of those that fire or resolve.

Memory is bounded: series with no events for `evict_after_minutes` and no open alert are
forgotten, and at most `max_series` series are kept (the least recently active go first).
"""

from __future__ import annotations

import importlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from statistics import NormalDist
from typing import Any

from detectors.annotations import Annotation, is_annotated
from detectors.attribution import (
    SliceBaseline,
    accumulate,
    expected_parts,
    mix_adjusted,
)
from detectors.base import Assessment
from detectors.engine_config import (
    FAMILIES,
    KINDS,
    EngineConfig,
)
from detectors.engine_state import LEAD_WINDOWS, Incident, Series, Track
from detectors.incidents import Incidents
from detectors.intervals import pvalue_from_score
from detectors.lifecycle import alert_id
from detectors.records import WITHIN, Anomaly, WindowRecord
from detectors.releases import Releases
from detectors.rollup import (
    COUNTS,
    Rolled,
    compatible,
    rollup,
)
from detectors.silence import Silence
from detectors.slice_alerts import SliceAlerts
from detectors.traffic import (
    Context,
    Mix,
    context_entry,
    source_mix,
    traffic_context,
    traffic_mix,
)
from detectors.worth import quiet_bucket, worth_an_alert

STATE_VERSION = 1


def _add_lead(track: Track, entry: Sequence[float]) -> None:
    """Add one volume window's evidence (`DetectionEngine._lead_entry`) to a track's sums."""
    track.obs += entry[1]
    track.exp += entry[2]
    track.users += entry[3]
    track.ctx_obs += entry[4]
    track.ctx_exp += entry[5]
    track.ctx_own += entry[6]


def _load_class(spec: str | type) -> type:
    """A model class, given as itself or as "module:Class"."""
    if not isinstance(spec, str):
        return spec
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


class DetectionEngine:
    """Turns closed windows of records into alerts. See the module docstring for the rules."""

    def __init__(
        self,
        plan: Any | None = None,
        config: EngineConfig | None = None,
        annotations: Iterable[Annotation] = (),
    ) -> None:
        self.plan = plan
        self.config = config or EngineConfig()
        self.annotations = list(annotations)
        self._near: list[Annotation] = []  # the annotations this window's checks can touch
        self._classes = {m: _load_class(spec) for m, spec in self.config.model_classes.items()}
        # the one-sided z of the firing level (a rise judged against the traffic's share)
        self._p_fire = pvalue_from_score(self.config.lifecycle.fire_score)
        self._z_fire = NormalDist().inv_cdf(1.0 - self._p_fire)
        self._context: Context = ({}, {})  # this window's traffic per scope (`_traffic_context`)
        self.window: float | None = None
        self.last_ts: float | None = None
        self.start_ts: float | None = None
        self.series: dict[str, Series] = {}
        # the open and recently resolved incidents (`detectors.incidents`)
        self.incidents = Incidents(self.config, lambda key: self.series.get(key), lambda: self._w)
        self.late_windows = 0
        # planned event -> when its total was first modelled (bounded by the plan; outlives the
        # series' eviction, so an event back after days of silence is not "never seen before")
        self.first_seen_events: dict[str, float] = {}
        self.releases = Releases(self.config.slices.newer_minutes * 60.0)  # versions per source
        # the slice tests and the alerts of their verdicts (`detectors.slice_alerts`)
        self.slice_alerts = SliceAlerts(
            self.config,
            lambda key: self.series.get(key),
            self.incidents,
            self._arrivals,
            lambda series, since: self.releases.superseded(series, since),
            self._broken,
        )
        # called after each window with (window start, engine): for recorders such as backtests
        self.observers: list[Callable[[float, DetectionEngine], None]] = []

    # ------------------------------------------------------------------ public API
    def process(self, records: list[WindowRecord], until: float | None = None) -> list[Anomaly]:
        """Process the records of one or more closed windows (in window order).

        Windows with no record at all between the last processed window and a later one count
        as empty; `until` (UTC epoch seconds) additionally closes every empty window ending at or
        before it. Records of a window that was already processed are ignored (counted in
        `late_windows`). Returns the alerts whose state changed: fired, updated or resolved.
        """
        by_window: dict[float, list[WindowRecord]] = {}
        records = [rec for rec in records if not rec.revision]  # the engine decides: lead
        for rec in records:
            by_window.setdefault(float(rec.window_start), []).append(rec)
            if self.window is None and rec.window_end > rec.window_start:
                self.window = float(rec.window_end - rec.window_start)
        out: list[Anomaly] = []
        for ts in sorted(by_window):
            if self.last_ts is not None and ts <= self.last_ts:
                self.late_windows += 1
                continue
            self._fill_gap(ts, out)
            self._window(ts, by_window[ts], out)
        if until is not None and self.last_ts is not None and self.window:
            self._fill_gap(until, out)
        return out

    def active(self) -> list[Anomaly]:
        """The alerts firing now."""
        return self.incidents.active(self.last_ts)

    def gauges(self) -> Iterator[tuple[dict[str, str], float, float, float, float, float, bool]]:
        """(labels, observed, expected, lower, upper, score, firing) per planned series.

        Labels are the Prometheus labels of `streams.metrics.SERIES_LABELS`; series of events the
        plan does not know are left out (unbounded names must not become label values).
        """
        firing = self.incidents.busy()
        for s in self.series.values():
            if s.last is None or not s.planned:
                continue
            if s.metric == "conversion":
                event = f"{s.series.get('from_event', '')} → {s.series.get('to_event', '')}"
                if WITHIN in s.series:  # the early series of the same step pair
                    event += f" within {s.series[WITHIN]} min"
            else:
                event = s.series.get("event", "")
            labels = {
                "event": event,
                "source": s.series.get("source", ""),
                "platform": s.series.get("platform", ""),
                "kind": "violation_rate" if s.metric == "violation" else s.metric,
            }
            obs, exp, lo, up, score = s.last
            yield labels, obs, exp, lo, up, score, s.key in firing

    @property
    def _w(self) -> float:
        return self.window or 60.0

    # ------------------------------------------------------------------ windows
    def _fill_gap(self, ts: float, out: list[Anomaly]) -> None:
        if self.last_ts is None or not self.window:
            return
        missing = int((ts - self.last_ts) / self.window + 1e-6) - 1
        first = self.last_ts + self.window
        if missing > self.config.max_gap_windows:
            first = ts - self.config.max_gap_windows * self.window
            missing = self.config.max_gap_windows
        for i in range(max(0, missing)):
            self._window(first + i * self.window, [], out)

    def _window(self, ts: float, records: list[WindowRecord], out: list[Anomaly]) -> None:
        window = self._w
        if self.start_ts is None:
            self.start_ts = ts
        self.last_ts = ts
        self.releases.note(ts, records)
        tail = self.config.annotation_tail_minutes * 60.0  # the widest span a check looks at
        self._near = [a for a in self.annotations if a.end > ts - tail and a.start < ts + window]
        rolled = rollup(records, self.config.levels, self._arrivals)
        for key, s in self.series.items():
            if s.metric in COUNTS and key not in rolled:
                rolled[key] = Rolled(key=key, metric=s.metric, series=s.series)
        mix = traffic_mix(records, self.config.slice_dims) if self.config.slice_dims else {}
        self._context = traffic_context(rolled, self._expected_before(rolled))
        order = sorted(rolled.values(), key=lambda r: (len(r.series), r.key))
        for r in order:
            self._series_window(ts, window, r, mix, out)
        if self.config.slice_tests:
            self.slice_alerts.window(ts, window, records, self._near, out)
        self._evict(ts)
        for observer in self.observers:
            observer(ts, self)

    def _series_window(
        self, ts: float, window: float, r: Rolled, mix: Mix, out: list[Anomaly]
    ) -> None:
        cfg = self.config
        s = self.series.get(r.key)
        if r.metric not in COUNTS and r.denominator <= 0:
            return  # nobody to measure a rate on: no evidence, as when no record came
        if s is None:
            s = self._new_series(ts, r)
        if r.numerator > 0 or r.metric not in COUNTS:
            s.last_active = ts
        s.planned = s.planned and r.planned and self._plan_knows(r.series)
        a = s.model.assess(ts, r.numerator, r.weight)
        if r.metric in COUNTS:
            s.lead.append(array("d", self._lead_entry(ts, r, a)))  # packed: 0.1 kB, not 0.3
        annotated = quiet = False
        if self._near:
            annotated = is_annotated(self._near, r.series, ts, ts + window)
            tail = cfg.annotation_tail_minutes * 60.0
            quiet = annotated or is_annotated(self._near, r.series, ts - tail, ts + window)
        score = 0.0 if (a.learning or quiet) else a.score
        s.last = (a.observed, a.expected, a.lower, a.upper, score)
        s.last_weight = r.weight

        disappeared = False
        silenced = s.metric == "activity" and self._silenced(ts, s, r, a, a.learning or annotated)
        if r.metric in COUNTS:
            if r.numerator <= 0 and not annotated:
                if s.zero_since is None:
                    s.zero_since, s.zero_run, s.zero_expected = ts, 0, 0.0
                s.zero_run += 1
                s.zero_expected += a.expected
                # total silence for longer than this series is ever quiet at this time of
                # expected traffic, worth enough users, and the model finds it significant
                bucket = quiet_bucket(s.zero_expected / s.zero_run)
                disappeared = (
                    not a.learning
                    and s.zero_run >= cfg.disappear_windows
                    and s.zero_run > cfg.quiet_factor * s.quiet[bucket]
                    and s.zero_expected / s.burst >= cfg.disappear_units
                    and a.direction < 0
                    and score >= cfg.lifecycle.fire_score
                )
            else:
                if s.zero_run and not any(t.lifecycle.active for t in s.tracks.values()):
                    bucket = quiet_bucket(s.zero_expected / s.zero_run)
                    s.quiet[bucket] = max(s.quiet[bucket], float(s.zero_run))
                s.zero_since, s.zero_run, s.zero_expected = None, 0, 0.0
            s.quiet = [q * cfg.quiet_decay for q in s.quiet] if any(s.quiet) else s.quiet
            if s.is_event_total:
                self._new_event_check(ts, window, s, r, annotated, out)

        since = s.zero_since if s.zero_since is not None else ts - 3600.0
        if (
            score >= cfg.lifecycle.resolve_score
            and a.direction < 0
            and self.releases.superseded(s.series, since)
        ):
            score = 0.0  # users moved to a newer release that sends it: not a loss
            disappeared = False
        deviating = score >= cfg.lifecycle.resolve_score and self._unusual(s, a)
        accepted = False
        held = annotated  # (see below)
        for family in FAMILIES[r.metric]:
            track = s.tracks.setdefault(family, Track())
            sign = 1 if family == "up" else -1
            fam_score = score if a.direction == sign else 0.0
            if s.metric == "activity":  # told by its silence test alone (see `_silenced`)
                fam_score = 0.0
            if track.muted:  # an accepted level shift: quiet until the model has caught up
                if fam_score < cfg.lifecycle.resolve_score:
                    track.muted = False
                else:
                    accepted = True
                    fam_score = 0.0
            if family == "down" and (disappeared or silenced):
                fam_score = 1.0
            before = track.lifecycle.state
            transition = track.lifecycle.step(ts, fam_score, window, cfg.lifecycle)
            if (
                family == "down"
                and (disappeared or silenced)
                and track.lifecycle.state == "pending"
            ):
                # the silence itself is the evidence: no need to wait for more windows
                transition = track.lifecycle.escalate(cfg.lifecycle)
            if before not in ("pending", "firing") and track.lifecycle.active:
                track.reset_evidence()
                if family == "up" and r.metric in COUNTS:
                    self._lead_in(track, s, a, ts)
                if family == "down" and disappeared and s.zero_since is not None:
                    track.lifecycle.started = min(track.lifecycle.started or ts, s.zero_since)
                onset = s.silence.cusum.onset if silenced and s.silence else None
                if family == "down" and onset is not None:
                    track.lifecycle.started = min(track.lifecycle.started or ts, onset)
            if track.lifecycle.active:
                held = True
                self._gather(track, s, r, a, fam_score, mix, ts + window)
            sure = disappeared or (silenced and family == "down")
            if transition in ("fire", "reopen") and not (
                sure
                or worth_an_alert(
                    s, track, self.config, self._p_fire, self._z_fire, self._fresh_versions
                )
            ):
                track.lifecycle.hold(transition)
                transition = None
            if transition in ("fire", "reopen"):
                track.fired_at = ts + window
                # active users all gone is an outage: the traffic dropped (no event "disappeared")
                silent = disappeared and s.metric != "activity"
                kind = "disappeared" if silent else KINDS[(s.metric, family)]
                self.incidents.fire(ts, window, s, family, kind, dict(s.series), out)
            elif transition == "resolve":
                self.incidents.resolve(ts, window, s, family, out)
            elif (
                track.lifecycle.state == "firing"
                and family == "down"
                and disappeared
                and s.metric != "activity"
            ):
                self.incidents.to_disappeared(ts, window, s, family, dict(s.series), out)
            if track.lifecycle.state == "firing" and family == "down" and self._step_broken(s):
                track.vetoed = True  # its fall is a breakage's: never its new normal
            if (
                track.lifecycle.state == "firing"
                and track.fired_at is not None
                and ts + window - track.fired_at >= cfg.accept_after_minutes * 60.0
                and not (family == "down" and (s.gone or self._in_disappearance(s.key)))
                and not track.vetoed
            ):
                # a lasting level shift: accept it as the new normal, close this alert
                accepted = track.muted = True
                track.lifecycle.force_resolve(ts + window)
                self.incidents.resolve(ts, window, s, family, out)

        # what the window teaches: an annotated window, one of a trouble being judged (pending
        # or firing), near an open incident of its own, or (a conversion) with its last step
        # broken is not the normal: the model learns its own expectation instead. A window that
        # deviates and is none of those is learnt clipped to what its longest span's chance
        # allows: a bias of the model itself (a night that falls faster than it knows) deviates
        # on the span's sums every night, and learning the expectation there kept it for good
        if not held and self.incidents.open:
            held = self._near_incident(ts, s) or self._step_broken(s)
        if accepted:
            held = deviating = False
        self._learn(ts, s, r, a, held, deviating, mix)

    def _silenced(self, ts: float, s: Series, r: Rolled, a: Assessment, skip: bool) -> bool:
        """Have this activity series' users all but stopped? Its silence test
        (`detectors.silence`: users arriving and users going on, each against ρ × usual,
        `silence_rho`) has reached the threshold that bounds false alarms per series-day for
        its own rate of excursions (ln(excursions a day / α), as every sequential test here;
        a quiet source's test leaves zero more often than a busy one's), what came since its
        onset is at most `silence_told` of the usual, that was worth `silence_min_users`, and
        the users since are too few even for a reference known from a few minutes of traffic
        (the arrivals, with the users who did not go on: `Silence.beyond_reference`).
        Not judged while the model learns or in an annotation. It is the only way active users
        alert: a partial fall is told by the events that fall (one traffic drop when several
        do), and the window-by-window score of users, on an hour-of-week slot seen once or
        twice, took a quiet night for an outage."""
        cfg = self.config
        test = s.silence if s.silence is not None else Silence()
        s.silence = test
        keep = 0.5 ** (self._w / 60.0 / cfg.silence_recent_minutes)
        test.update(ts, r.numerator, r.again, r.before, a.expected, cfg.silence_rho, keep,
                    judge=not skip)  # fmt: skip
        cusum = test.cusum
        return (
            cusum.stat >= cusum.limit(ts, cfg.silence_alpha_per_day)
            and cusum.expected >= cfg.silence_min_users
            and cusum.observed <= cfg.silence_told * cusum.expected
            and test.beyond_reference(
                Silence.memory(cfg.silence_recent_minutes, self._w), self._p_fire
            )
        )

    def _unusual(self, s: Series, a: Assessment) -> bool:
        """Is a significant deviation of a volume worth at least two units of evidence (two users'
        events)? A sparse series (refunds, a few a day) expects a small fraction of an event a
        minute, so its every event is "significant"; left unlearnt, only its empty minutes
        would be learnt and its expectation would fall towards nothing, day after day."""
        if s.metric not in COUNTS:
            return True
        return abs(a.span_observed - a.span_expected) / s.burst >= self.config.learn_excess_units

    def _in_disappearance(self, key: str) -> bool:
        """Is this series' drop part of an open `disappeared` incident (an event gone from one
        source drags the event's total down)? That gap is never the new normal: accepted, the
        events' return would look like a spike."""
        inc = self.incidents.of((key, "down"))
        return inc is not None and inc.kind == "disappeared"

    def _step_broken(self, s: Series) -> bool:
        """Is this conversion's last step missing or breaking the plan in an open incident on
        its source (or on every source)? A fall it causes is the breakage's, never the new
        normal: accepted, the step's return once fixed would look like a rise."""
        if s.metric != "conversion":
            return False
        return self._broken(s.series.get("to_event"), s.series.get("source"))

    def _broken(self, step: str | None, source: str | None) -> bool:
        """Is `step` missing or breaking the plan in an open incident on `source` (or on
        every source); for no source (a total), on any?"""
        if step is None:
            return False
        return any(
            inc.kind in ("disappeared", "violation_surge")
            and inc.series.get("event") == step
            and (source is None or inc.series.get("source", source) == source)
            for inc in self.incidents.open.values()
        )

    def _near_incident(self, ts: float, s: Series) -> bool:
        """Is an open incident about this series or a related one (its total, one of its slices)?
        Then this window is not normal either, even if the series itself looks calm."""
        limit = self.config.accept_after_minutes * 60.0
        prefix = f"{s.metric}:"
        return any(
            inc.group.startswith(prefix)
            and ts - inc.started < limit
            and compatible(inc.series, s.series)
            for inc in self.incidents.open.values()
        )

    def _fresh_versions(self) -> set[str]:
        """App versions first seen within `release_hours`, or their source's newest, after their
        source's first ones (not there from the start): releases arriving."""
        if self.last_ts is None:
            return set()
        since = self.last_ts - self.config.release_hours * 3600.0
        return self.releases.fresh(since)

    def _expected_before(self, rolled: dict[str, Rolled]) -> dict[str, float]:
        """What each rolled series' model expected of the window before (for `traffic_context`)."""
        out = {}
        for key in rolled:
            s = self.series.get(key)
            if s is not None and s.last is not None:
                out[key] = s.last[1]
        return out

    def _source_mix(self, s: Series, mix: Mix) -> dict[str, dict[str, float]]:
        return source_mix(s.series, s.metric, mix, self.config.slice_dims)

    def _learn(
        self,
        ts: float,
        s: Series,
        r: Rolled,
        a: Assessment,
        held: bool,
        deviating: bool,
        mix: Mix,
    ) -> None:
        """Teach the model this window (see step 5 of the module's docstring): `held` (not the
        normal): its own expectation; `deviating`: clipped to its model's `learnable` range;
        otherwise what was observed."""
        if a.learning and (held or deviating):
            return  # cold start and anomalous/annotated: skip rather than learn it
        if held:  # (a rate's expectation is per user: its numerator is that times the users)
            s.model.learn(ts, a.expected * r.weight, r.weight)
            return
        if deviating:  # off its band, no trouble: learnt within what its longest span allows
            lower, upper = s.model.learnable(a.expected, r.weight)
            s.model.learn(ts, min(max(r.numerator, lower), upper), r.weight)
            return
        s.model.learn(ts, r.numerator, r.weight)
        s.baseline.learn(r.breakdown)
        now = self._source_mix(s, mix)
        if now:
            s.traffic.learn({d: {v: (n, 0.0) for v, n in vals.items()} for d, vals in now.items()})
        if r.metric in COUNTS and r.users > 0:
            alpha = self.config.baseline_alpha
            s.ew_events += alpha * (r.numerator - s.ew_events)
            s.ew_users += alpha * (r.users - s.ew_users)
            s.ew_arrivals += alpha * (r.arrivals - s.ew_arrivals)

    def _lead_entry(self, ts: float, r: Rolled, a: Assessment) -> list[float]:
        """A volume window's evidence: [ts, count, expected, arriving users, and the other
        events of its scope (its source, or all events) observed and expected, and its own
        expected on the same footing] (see `detectors.worth.carried`)."""
        ctx_obs, ctx_exp, ctx_own = context_entry(self._context, r)
        return [ts, r.numerator, a.expected, r.arrivals, ctx_obs, ctx_exp, ctx_own]

    def _lead_in(self, track: Track, s: Series, a: Assessment, ts: float) -> None:
        """A rise that becomes pending starts from the windows that made it: the model's most
        deviating span, when it is short (a sparse event's first windows are often its whole
        evidence: three users in a minute where one an hour is usual, then a quiet minute, would
        otherwise be forgotten before the next ones came). Its start is the incident's."""
        span = a.span_windows
        if not 1 < span <= LEAD_WINDOWS or a.span_observed <= a.span_expected:
            return
        first = ts - (span - 0.5) * self._w
        for entry in s.lead:
            if first <= entry[0] < ts - 0.5 * self._w:
                _add_lead(track, entry)
                if entry[1] > entry[2] and track.lifecycle.started is not None:
                    track.lifecycle.started = min(track.lifecycle.started, entry[0])

    def _gather(
        self,
        track: Track,
        s: Series,
        r: Rolled,
        a: Assessment,
        score: float,
        mix: Mix,
        until: float,
    ) -> None:
        """Add this window to the evidence of an active lifecycle."""
        if r.metric in COUNTS:
            _add_lead(track, s.lead[-1])
        else:
            track.obs += r.numerator
            track.exp += a.expected * r.denominator
            track.den += r.denominator
        for code, n in r.codes.items():
            track.codes[code] = track.codes.get(code, 0) + n
        parts = expected_parts(r.metric, r.breakdown, s.baseline, a.expected)
        for dim, now in self._source_mix(s, mix).items():
            mix_adjusted(parts, dim, s.baseline, s.traffic, now, a.expected)
        accumulate(track.parts, parts)
        track.windows += 1
        if s.zero_run >= track.silent_windows:
            track.silent_windows, track.silent_expected = s.zero_run, s.zero_expected
        if score >= self.config.lifecycle.resolve_score or track.windows == 1:
            track.last = [a.observed, a.expected, a.lower, a.upper]
        if score >= self.config.lifecycle.fire_score or track.windows == 1:
            track.hot = [track.obs, track.exp, track.den, until]
        if score > 0.0 and abs(a.span_observed - a.span_expected) > abs(
            track.span_obs - track.span_exp
        ):
            track.span_obs, track.span_exp = a.span_observed, a.span_expected
            track.span_den, track.span_windows = a.span_weight, a.span_windows
        track.peak = max(track.peak, score)

    # ------------------------------------------------------------------ new events
    def _new_event_check(
        self, ts: float, window: float, s: Series, r: Rolled, annotated: bool, out: list[Anomaly]
    ) -> None:
        cfg = self.config
        s.recent.append([ts, r.numerator])
        while len(s.recent) > cfg.new_event_span:
            s.recent.popleft()
        member = (s.key, "new")
        inc = self.incidents.of(member)
        if inc is not None:
            track = s.tracks["new"]
            track.obs += r.numerator
            track.windows += 1
            accumulate(track.parts, expected_parts("volume", r.breakdown, SliceBaseline(), 0.0))
            track.last = [r.numerator, 0.0, 0.0, 0.0]
            if ts + window - inc.started >= cfg.new_event_hold_minutes * 60.0:
                self.incidents.expire(inc, ts + window, out)
            return
        if s.announced or annotated:
            return
        if s.planned:
            # a planned event is new when it first arrives after `new_event_after_minutes` of
            # watching, and only while that first arrival goes on (its first event within the
            # span): one that has trickled in for days is not "never seen before"
            late = s.first_seen - (self.start_ts or ts) >= cfg.new_event_after_minutes * 60.0
            young = ts + window - s.first_seen <= cfg.new_event_span * window
            if not (late and young):
                return
        counts = [c for _, c in s.recent if c > 0]
        if len(counts) < cfg.new_event_windows or sum(counts) < cfg.new_event_min_count:
            return
        s.announced = True
        first = next(i for i, (_, c) in enumerate(s.recent) if c > 0)
        started = s.recent[first][0]
        track = Track(obs=float(sum(counts)), windows=len(s.recent) - first, peak=1.0)
        track.last = [r.numerator, 0.0, 0.0, 0.0]
        accumulate(track.parts, expected_parts("volume", r.breakdown, SliceBaseline(), 0.0))
        s.tracks["new"] = track
        inc = Incident(
            id=alert_id(s.key, "new", started),
            kind="new_event",
            group="new",
            owner=member,
            series=dict(s.series),
            started=started,
            members=[member],
            direction=1,
        )
        self.incidents.add(inc, ts + window, out)

    # ------------------------------------------------------------------ series bookkeeping
    @staticmethod
    def _arrivals(rec: WindowRecord) -> float:
        """Events sent: forwarded (`count`, flagged ones included) and quarantined."""
        return float(rec.count + rec.quarantined)

    def _plan_knows(self, series: dict[str, str]) -> bool:
        events = getattr(self.plan, "events", None)
        if not events:
            return True
        names = [series[k] for k in ("event", "from_event", "to_event") if k in series]
        return all(n in events or any(k.endswith(f":{n}") for k in events) for n in names)

    def _new_series(self, ts: float, r: Rolled) -> Series:
        cls = self._classes[r.metric]
        options = dict(self.config.model_options.get(r.metric, {}))
        if self.window:
            options.setdefault("window_seconds", self.window)
        try:
            model = cls(**options)
        except TypeError:  # a model without these options
            model = cls()
        planned = r.planned and self._plan_knows(r.series)
        total = r.metric == "volume" and set(r.series) == {"event"}
        first_seen = ts
        if total and planned:
            first_seen = self.first_seen_events.setdefault(r.series["event"], ts)
        s = Series(
            key=r.key,
            metric=r.metric,
            series=dict(r.series),
            model=model,
            baseline=SliceBaseline(alpha=self.config.baseline_alpha),
            traffic=SliceBaseline(alpha=self.config.baseline_alpha),
            first_seen=first_seen,
            last_active=ts,
            planned=planned,
            is_event_total=total,
        )
        self.series[r.key] = s
        return s

    def _evict(self, ts: float) -> None:
        cfg = self.config
        if len(self.series) <= cfg.max_series and int(ts // self._w) % 60:
            return
        busy = self.incidents.busy()
        horizon = ts - cfg.evict_after_minutes * 60.0
        dead = [k for k, s in self.series.items() if s.last_active < horizon and k not in busy]
        for key in dead:
            del self.series[key]
        if len(self.series) > cfg.max_series:
            idle = sorted(
                (s for s in self.series.values() if s.key not in busy), key=lambda s: s.last_active
            )
            for s in idle[: len(self.series) - cfg.max_series]:
                del self.series[s.key]

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict:
        """A JSON-safe snapshot of everything the engine has learnt and every open alert."""
        return {
            "version": STATE_VERSION,
            "window": self.window,
            "last_ts": self.last_ts,
            "start_ts": self.start_ts,
            "late_windows": self.late_windows,
            "series": [s.to_state() for s in self.series.values()],
            "incidents": [inc.to_state() for inc in self.incidents.open.values()],
            "recent": [list(item) for item in self.incidents.recent],
            "first_seen_events": dict(self.first_seen_events),
            **self.slice_alerts.to_state(),  # "slices", "feed", "platforms", "seq_open"
            "sent_by": self.releases.to_state(),
        }

    @classmethod
    def from_state(
        cls,
        state: dict,
        plan: Any | None = None,
        config: EngineConfig | None = None,
        annotations: Iterable[Annotation] = (),
    ) -> DetectionEngine:
        """Rebuild an engine from `to_state()`; it then behaves exactly as the original would."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError("unsupported engine state (expected a dict with version 1)")
        engine = cls(plan=plan, config=config, annotations=annotations)
        engine.window = state["window"]
        engine.last_ts = state["last_ts"]
        engine.start_ts = state["start_ts"]
        engine.late_windows = state.get("late_windows", 0)
        for item in state["series"]:
            s = Series.from_state(item, engine._classes[item["metric"]])
            engine.series[s.key] = s
        for item in state["incidents"]:
            inc = Incident.from_state(item)
            engine.incidents.open[inc.id] = inc
        engine.incidents.recent = [(i, g, dict(se), st, en) for i, g, se, st, en in state["recent"]]
        engine.first_seen_events = {
            str(k): float(v) for k, v in state.get("first_seen_events", {}).items()
        }
        for s in engine.series.values():  # a state from before it was kept
            if s.is_event_total and s.planned:
                engine.first_seen_events.setdefault(s.series["event"], s.first_seen)
        engine.slice_alerts.load_state(state)
        engine.releases = Releases.from_state(
            state.get("sent_by", {}), engine.config.slices.newer_minutes * 60.0
        )
        return engine
