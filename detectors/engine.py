"""The detection engine: window records in, alerts out. Pure (no Kafka), deterministic, resumable.

Per closed window the engine
1. rolls the fine records up to the monitored series (`detectors.rollup`); a known volume series
   with no record in the window counts 0 (that is how `disappeared` is seen);
2. asks each series' model to assess its value (before learning it);
3. feeds the score to one lifecycle per series × direction (`detectors.lifecycle`);
4. groups lifecycles into incidents: a lifecycle that fires joins an open incident of the same
   metric and direction whose series is compatible (no dimension with a different value: e.g.
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
   normal; while the series deviates (score ≥ the resolve score, or a lifecycle pending or
   firing), is annotated, or a related series has an open incident (an event's total, its
   source, its slices), the model learns its own expected value instead (the anomaly does not
   leak into the baseline, and no false "drop" follows the end of a spike). A lasting level
   shift is accepted once its alert has been firing for `accept_after_minutes`: the alert
   resolves, the series learns what it observes and stays quiet in that direction until the
   model has caught up (its score falls below the resolve score). A disappeared series is never
   accepted (it resolves when events come back), nor is a drop that is part of a disappearance
   (an event's total while the event is gone from one source);
6. detects new events: an event the plan does not know (or, after `new_event_after_minutes` of
   watching, one never seen before, while its first events are within the span) with events in
   `new_event_windows` of the last `new_event_span` windows and at least `new_event_min_count`
   of them: one alert per event, resolved after `new_event_hold_minutes`;
7. watches slices (`slice_dims`, e.g. app_version) of each event on each source: a version that
   sends other events but not this one, while the event's rate on the other versions says it
   should have sent `disappear_expected` of them, makes the event `disappeared` for that version;
   and a version whose events of a planned event mostly break the plan (at least half, worth
   `min_excess_units` users, significant against the usual violation share) while the event's
   other versions mostly do not is a `violation_surge` of that version (a release that renamed a
   property), seen from its first users instead of once the event's whole share has risen.

Memory is bounded: series with no events for `evict_after_minutes` and no open alert are
forgotten, and at most `max_series` series are kept (the least recently active go first).
"""

from __future__ import annotations

import importlib
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from detectors.annotations import Annotation, is_annotated
from detectors.attribution import (
    SliceBaseline,
    accumulate,
    attribute,
    expected_parts,
    mix_adjusted,
    notable,
)
from detectors.base import Assessment, SeriesModel
from detectors.explain import Evidence, explain
from detectors.intervals import betabinom_midp, score_from_pvalue
from detectors.lifecycle import Lifecycle, LifecycleConfig, Transition, alert_id
from detectors.records import WITHIN, Anomaly, WindowRecord
from detectors.rollup import (
    DEFAULT_LEVELS,
    MISSING,
    Level,
    Rolled,
    compatible,
    rollup,
    series_key,
)

STATE_VERSION = 1
MODEL_CLASSES = {
    "volume": "detectors.volume:VolumeModel",
    "violation": "detectors.rate:RateModel",
    "conversion": "detectors.rate:RateModel",
}
FAMILIES = {"volume": ("up", "down"), "violation": ("up",), "conversion": ("up", "down")}
KINDS = {
    ("volume", "up"): "spike",
    ("volume", "down"): "drop",
    ("violation", "up"): "violation_surge",
    ("conversion", "up"): "conversion_up",
    ("conversion", "down"): "conversion_down",
}
# a rise of an event itself, by incident group (what `_echo` looks for)
RISES = {f"{metric}:up": KINDS[(metric, "up")] for metric in ("volume", "violation")}


@dataclass(frozen=True)
class EngineConfig:
    levels: tuple[Level, ...] = DEFAULT_LEVELS
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    # metric -> SeriesModel class (or "module:Class") with a `from_state` classmethod
    model_classes: dict[str, Any] = field(default_factory=lambda: dict(MODEL_CLASSES))
    model_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    disappear_windows: int = 3
    # Events come in bursts (a session sends many), so evidence is counted in "units": events
    # divided by the series' usual events per user and window (for rates: the numerator).
    disappear_units: float = 10.0  # expected units during an empty run to call it gone
    min_excess_units: float = 5.0  # a spike/drop must be worth this many users' events
    learn_excess_units: float = 2.0  # a volume window is left unlearnt only if worth this many
    min_change: float = 0.25  # ... and change the total by this fraction
    min_rate_excess: float = 15.0  # a rate change must be worth this many users / events
    quiet_factor: float = 2.0  # gone = empty for longer than this × the longest normal quiet
    quiet_decay: float = 1.0 - 1.0 / (7 * 1440)  # quiet spells are forgotten over ~a week
    # an event nobody planned is not expected at all: what matters is that it keeps coming (in
    # 3 windows, 5 events) within half an hour, not its density (a release rolling out sends
    # it sparsely at first: 5 windows needed 10 events in 5 minutes, i.e. an hour or more; 10
    # events in half an hour took a release 17-51 min after its start, 5 events 10-45 min)
    new_event_windows: int = 3
    new_event_span: int = 30
    new_event_min_count: int = 5
    new_event_after_minutes: float = 12 * 60.0
    new_event_hold_minutes: float = 60.0
    accept_after_minutes: float = 240.0
    merge_minutes: float = 120.0  # a lifecycle joins an incident that began at most this before
    together_minutes: float = 5.0  # ... or one of another event of its source (0: never)
    evict_after_minutes: float = 3 * 24 * 60.0
    annotation_tail_minutes: float = 60.0  # models look back up to an hour: stay quiet after
    max_series: int = 20_000
    max_gap_windows: int = 24 * 60
    attribution_top: int = 3
    baseline_alpha: float = 0.02
    slice_dims: tuple[str, ...] = ("app_version",)  # watched for a slice that stops sending
    slice_alpha: float = 0.01  # EW rate of the event's share of its source's traffic
    slice_min_windows: int = 120  # history needed before that share is trusted
    slice_min_events: int = 2  # a value must send this many other events to be expected to
    max_slice_values: int = 20
    slice_forget_minutes: float = 24 * 60.0  # a value's evidence is kept while it sends nothing
    slice_hold_minutes: float = 60.0  # ... and its open alert, then it calms (e.g. rolled back)
    echo_hours: float = 6.0  # a conversion rise names a rise of its last step this recent


def _load_class(spec: str | type) -> type:
    """A model class, given as itself or as "module:Class"."""
    if not isinstance(spec, str):
        return spec
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class Track:
    """One series × direction: its lifecycle and the evidence gathered since the incident began."""

    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    obs: float = 0.0  # volume: counts; rates: numerators
    exp: float = 0.0  # volume: expected counts; rates: expected numerators
    den: float = 0.0
    windows: int = 0
    peak: float = 0.0
    last: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])  # obs, exp, lo, up
    codes: dict[str, int] = field(default_factory=dict)
    parts: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    fired_at: float | None = None
    silent_windows: int = 0  # longest run of empty windows seen while active
    silent_expected: float = 0.0  # events expected during that run
    muted: bool = False  # its level shift was accepted; quiet until the score is calm
    # the model's most deviating span seen while active (it may have begun before `pending`):
    # sums, for rates the denominators too, and its length in windows
    span_obs: float = 0.0
    span_exp: float = 0.0
    span_den: float = 0.0
    span_windows: int = 0
    # obs, exp, den up to the last window at the firing level, and that window's end: what the
    # sentence tells (the windows an alert lingers in before it resolves would water a burst
    # down to "normal"; a sparse rate has no record in many windows: time, not windows, counts)
    hot: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])

    def reset_evidence(self) -> None:
        self.obs = self.exp = self.den = self.peak = self.silent_expected = 0.0
        self.span_obs = self.span_exp = self.span_den = 0.0
        self.windows = self.silent_windows = self.span_windows = 0
        self.codes, self.parts = {}, {}
        self.last = [0.0, 0.0, 0.0, 0.0]
        self.hot = [0.0, 0.0, 0.0, 0.0]
        self.fired_at = None

    def to_state(self) -> dict:
        return {
            "lifecycle": self.lifecycle.to_state(),
            "obs": self.obs,
            "exp": self.exp,
            "den": self.den,
            "windows": self.windows,
            "peak": self.peak,
            "last": self.last,
            "codes": self.codes,
            "parts": self.parts,
            "fired_at": self.fired_at,
            "silent_windows": self.silent_windows,
            "silent_expected": self.silent_expected,
            "muted": self.muted,
            "span_obs": self.span_obs,
            "span_exp": self.span_exp,
            "span_den": self.span_den,
            "span_windows": self.span_windows,
            "hot": self.hot,
        }

    @classmethod
    def from_state(cls, s: dict) -> Track:
        rest = {k: v for k, v in s.items() if k != "lifecycle"}
        return cls(lifecycle=Lifecycle.from_state(s["lifecycle"]), **rest)


def _run(run: list, first_seen: float) -> list:
    """A slice's run from a saved state, in today's layout: a run saved without the time its
    value was created is taken as no newer than the series; one saved without the time its
    value was last seen, as seen when its empty run began."""
    if len(run) < 4:
        run = [*run, first_seen]
    if len(run) < 5:
        run = [*run, run[2]]
    return run


@dataclass(slots=True)
class Series:
    """Everything the engine keeps about one modelled series."""

    key: str
    metric: str
    series: dict[str, str]
    model: SeriesModel
    baseline: SliceBaseline
    first_seen: float
    last_active: float
    planned: bool = True
    is_event_total: bool = False
    tracks: dict[str, Track] = field(default_factory=dict)
    zero_run: int = 0
    zero_expected: float = 0.0
    zero_since: float | None = None
    recent: deque = field(default_factory=deque)  # [ts, count] of the last windows (new_event)
    announced: bool = False
    # name -> [empty windows, expected, since, created, last seen with traffic]
    slices: dict[str, list] = field(default_factory=dict)
    shares: dict[str, list] = field(default_factory=dict)  # dim -> [EW event, EW traffic, n]
    # violation series: slice name -> [its bad events, its events, the event's bad events, the
    # event's events, since, last seen] while that slice's events mostly break the plan
    broken: dict[str, list] = field(default_factory=dict)
    ew_events: float = 0.0  # EW events and distinct users per window (burstiness)
    ew_users: float = 0.0
    # longest normal run of empty windows, by expected count per window (bucket = log2(exp+1))
    quiet: list[float] = field(default_factory=lambda: [0.0] * 12)
    last: tuple[float, ...] | None = None  # observed, expected, lower, upper, score
    last_weight: float = 0.0  # that window's weight (rates: users); for charts, not saved
    # EW traffic (events of all kinds on the series' source) per slice value, e.g. app_version:
    # with `baseline`, what each version usually sends of this event per event it sends
    traffic: SliceBaseline = field(default_factory=SliceBaseline)

    @property
    def gone(self) -> bool:
        return self.zero_since is not None

    @property
    def burst(self) -> float:
        """Usual events per user and window (≥ 1): how many events one unit of evidence is."""
        if self.metric != "volume" or self.ew_users <= 0:
            return 1.0
        return max(1.0, self.ew_events / self.ew_users)

    def to_state(self) -> dict:
        return {
            "key": self.key,
            "metric": self.metric,
            "series": self.series,
            "model": self.model.to_state(),
            "baseline": self.baseline.to_state(),
            "first_seen": self.first_seen,
            "last_active": self.last_active,
            "planned": self.planned,
            "is_event_total": self.is_event_total,
            "tracks": {f: t.to_state() for f, t in self.tracks.items()},
            "zero_run": self.zero_run,
            "zero_expected": self.zero_expected,
            "zero_since": self.zero_since,
            "recent": [list(x) for x in self.recent],
            "announced": self.announced,
            "slices": self.slices,
            "broken": self.broken,
            "shares": self.shares,
            "ew_events": self.ew_events,
            "ew_users": self.ew_users,
            "quiet": self.quiet,
            "last": list(self.last) if self.last is not None else None,
            "traffic": self.traffic.to_state(),
        }

    @classmethod
    def from_state(cls, s: dict, model_cls: Any) -> Series:
        return cls(
            key=s["key"],
            metric=s["metric"],
            series=s["series"],
            model=model_cls.from_state(s["model"]),
            baseline=SliceBaseline.from_state(s["baseline"]),
            first_seen=s["first_seen"],
            last_active=s["last_active"],
            planned=s["planned"],
            is_event_total=s["is_event_total"],
            tracks={f: Track.from_state(t) for f, t in s["tracks"].items()},
            zero_run=s["zero_run"],
            zero_expected=s["zero_expected"],
            zero_since=s["zero_since"],
            recent=deque(s["recent"]),
            announced=s["announced"],
            slices={name: _run(run, s["first_seen"]) for name, run in s["slices"].items()},
            broken=s.get("broken", {}),
            shares=s["shares"],
            ew_events=s["ew_events"],
            ew_users=s["ew_users"],
            quiet=s["quiet"],
            last=tuple(s["last"]) if s["last"] is not None else None,
            traffic=SliceBaseline.from_state(s["traffic"]) if "traffic" in s else SliceBaseline(),
        )


@dataclass(slots=True)
class Incident:
    """One alert: the series that owns it and the lifecycles (series × direction) in it."""

    id: str
    kind: str
    group: str  # metric:direction, or "new"
    owner: tuple[str, str]  # (series key, family)
    series: dict[str, str]
    started: float
    members: list[tuple[str, str]]
    direction: int

    def to_state(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "group": self.group,
            "owner": list(self.owner),
            "series": self.series,
            "started": self.started,
            "members": [list(m) for m in self.members],
            "direction": self.direction,
        }

    @classmethod
    def from_state(cls, s: dict) -> Incident:
        return cls(
            id=s["id"],
            kind=s["kind"],
            group=s["group"],
            owner=(s["owner"][0], s["owner"][1]),
            series=s["series"],
            started=s["started"],
            members=[(m[0], m[1]) for m in s["members"]],
            direction=s["direction"],
        )


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
        self._classes = {m: _load_class(spec) for m, spec in self.config.model_classes.items()}
        self.window: float | None = None
        self.last_ts: float | None = None
        self.start_ts: float | None = None
        self.series: dict[str, Series] = {}
        self.incidents: dict[str, Incident] = {}  # open incidents by id
        # recently resolved incidents, for reopening: (id, group, series, started, ended)
        self.recent: list[tuple[str, str, dict[str, str], float, float]] = []
        self.late_windows = 0
        # planned event -> when its total was first modelled (bounded by the plan; outlives the
        # series' eviction, so an event back after days of silence is not "never seen before")
        self.first_seen_events: dict[str, float] = {}
        self._forwarded: dict[tuple, bool] = {}  # (event, source) -> violating events forwarded
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
        result = []
        for inc in self.incidents.values():
            anomaly = self._anomaly(inc, "firing", (self.last_ts or inc.started) + self._w)
            if anomaly is not None:
                result.append(anomaly)
        return result

    def gauges(self) -> Iterator[tuple[dict[str, str], float, float, float, float, float, bool]]:
        """(labels, observed, expected, lower, upper, score, firing) per planned series.

        Labels are the Prometheus labels of `streams.metrics.SERIES_LABELS`; series of events the
        plan does not know are left out (unbounded names must not become label values).
        """
        firing = {m[0] for inc in self.incidents.values() for m in inc.members}
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
        rolled = rollup(records, self.config.levels, self._arrivals)
        for key, s in self.series.items():
            if s.metric == "volume" and key not in rolled:
                rolled[key] = Rolled(key=key, metric="volume", series=s.series)
        mix = self._traffic_mix(records) if self.config.slice_dims else {}
        order = sorted(rolled.values(), key=lambda r: (len(r.series), r.key))
        for r in order:
            self._series_window(ts, window, r, mix, out)
        self._evict(ts)
        for observer in self.observers:
            observer(ts, self)

    def _traffic_mix(self, records: list[WindowRecord]) -> dict[str, dict[str, dict[str, list]]]:
        """source -> slice dimension -> value -> [events of all kinds, set of event names]."""
        mix: dict[str, dict[str, dict[str, list]]] = {}
        for rec in records:
            if rec.kind != "volume" or rec.count <= 0:
                continue
            per_source = mix.setdefault(str(rec.series.get("source", MISSING)), {})
            for dim in self.config.slice_dims:
                value = rec.series.get(dim)
                if value is not None:
                    slot = per_source.setdefault(dim, {}).setdefault(str(value), [0.0, set()])
                    slot[0] += rec.count
                    slot[1].add(rec.series.get("event"))
        return mix

    def _series_window(
        self, ts: float, window: float, r: Rolled, mix: dict, out: list[Anomaly]
    ) -> None:
        cfg = self.config
        s = self.series.get(r.key)
        if r.metric != "volume" and r.denominator <= 0:
            return  # nobody to measure a rate on: no evidence, as when no record came
        if s is None:
            s = self._new_series(ts, r)
        if r.numerator > 0 or r.metric != "volume":
            s.last_active = ts
        s.planned = s.planned and r.planned and self._plan_knows(r.series)
        a = s.model.assess(ts, r.numerator, r.weight)
        annotated = quiet = False
        if self.annotations:
            annotated = is_annotated(self.annotations, r.series, ts, ts + window)
            tail = cfg.annotation_tail_minutes * 60.0
            quiet = annotated or is_annotated(self.annotations, r.series, ts - tail, ts + window)
        score = 0.0 if (a.learning or quiet) else a.score
        s.last = (a.observed, a.expected, a.lower, a.upper, score)
        s.last_weight = r.weight

        disappeared = False
        if r.metric == "volume":
            if r.numerator <= 0 and not annotated:
                if s.zero_since is None:
                    s.zero_since, s.zero_run, s.zero_expected = ts, 0, 0.0
                s.zero_run += 1
                s.zero_expected += a.expected
                # total silence for longer than this series is ever quiet at this time of
                # expected traffic, worth enough users, and the model finds it significant
                bucket = self._bucket(s.zero_expected / s.zero_run)
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
                    bucket = self._bucket(s.zero_expected / s.zero_run)
                    s.quiet[bucket] = max(s.quiet[bucket], float(s.zero_run))
                s.zero_since, s.zero_run, s.zero_expected = None, 0, 0.0
            s.quiet = [q * cfg.quiet_decay for q in s.quiet] if any(s.quiet) else s.quiet
            if s.is_event_total:
                self._new_event_check(ts, window, s, r, annotated, out)
            if "event" in s.series and "source" in s.series and not a.learning:
                self._slices(ts, window, s, r, mix, annotated, out)
        elif r.metric == "violation" and "event" in s.series and not a.learning:
            self._broken_slices(ts, window, s, r, a, annotated, out)

        deviating = annotated or (score >= cfg.lifecycle.resolve_score and self._unusual(s, a))
        accepted = False
        for family in FAMILIES[r.metric]:
            track = s.tracks.setdefault(family, Track())
            sign = 1 if family == "up" else -1
            fam_score = score if a.direction == sign else 0.0
            if track.muted:  # an accepted level shift: quiet until the model has caught up
                if fam_score < cfg.lifecycle.resolve_score:
                    track.muted = False
                else:
                    accepted = True
                    fam_score = 0.0
            if family == "down" and disappeared:
                fam_score = 1.0
            before = track.lifecycle.state
            transition = track.lifecycle.step(ts, fam_score, window, cfg.lifecycle)
            if family == "down" and disappeared and track.lifecycle.state == "pending":
                # the silence itself is the evidence: no need to wait for more windows
                transition = track.lifecycle.escalate(cfg.lifecycle)
            if before not in ("pending", "firing") and track.lifecycle.active:
                track.reset_evidence()
                if family == "down" and disappeared and s.zero_since is not None:
                    track.lifecycle.started = min(track.lifecycle.started or ts, s.zero_since)
            if track.lifecycle.active:
                deviating = True
                self._gather(track, s, r, a, fam_score, mix, ts + window)
            if transition in ("fire", "reopen") and not (disappeared or self._enough(s, track)):
                track.lifecycle.hold(transition)
                transition = None
            if transition in ("fire", "reopen"):
                track.fired_at = ts + window
                kind = "disappeared" if disappeared else KINDS[(s.metric, family)]
                self._on_fire(ts, window, s, family, kind, dict(s.series), out)
            elif transition == "resolve":
                self._on_resolve(ts, window, s, family, out)
            elif track.lifecycle.state == "firing" and family == "down" and disappeared:
                self._to_disappeared(ts, window, s, family, dict(s.series), out)
            elif (
                track.lifecycle.state == "firing"
                and family == "down"
                and r.numerator > 0
                and fam_score >= cfg.lifecycle.fire_score
                and r.numerator <= 0.6 * a.expected
            ):
                self._to_drop(ts, window, s, family, out)
            if (
                track.lifecycle.state == "firing"
                and track.fired_at is not None
                and ts + window - track.fired_at >= cfg.accept_after_minutes * 60.0
                and not (family == "down" and (s.gone or self._in_disappearance(s.key)))
            ):
                # a lasting level shift: accept it as the new normal, close this alert
                accepted = track.muted = True
                track.lifecycle.force_resolve(ts + window)
                self._on_resolve(ts, window, s, family, out)

        if not deviating and self.incidents:
            deviating = self._near_incident(ts, s)
        self._learn(ts, s, r, a, deviating and not accepted, mix)

    def _unusual(self, s: Series, a: Assessment) -> bool:
        """Is a significant deviation of a volume worth at least two units of evidence (two users'
        events)? A sparse series (refunds, a few a day) expects a small fraction of an event a
        minute, so its every event is "significant"; left unlearnt, only its empty minutes
        would be learnt and its expectation would fall towards nothing, day after day."""
        if s.metric != "volume":
            return True
        return abs(a.span_observed - a.span_expected) / s.burst >= self.config.learn_excess_units

    def _in_disappearance(self, key: str) -> bool:
        """Is this series' drop part of an open `disappeared` incident (an event gone from one
        source drags the event's total down)? That gap is never the new normal: accepted, the
        events' return would look like a spike."""
        inc = self._incident_of((key, "down"))
        return inc is not None and inc.kind == "disappeared"

    def _incident_of(self, member: tuple[str, str]) -> Incident | None:
        """The open incident a lifecycle (series key, family) is part of."""
        return next((i for i in self.incidents.values() if member in i.members), None)

    def _near_incident(self, ts: float, s: Series) -> bool:
        """Is an open incident about this series or a related one (its total, one of its slices)?
        Then this window is not normal either, even if the series itself looks calm."""
        limit = self.config.accept_after_minutes * 60.0
        prefix = f"{s.metric}:"
        return any(
            inc.group.startswith(prefix)
            and ts - inc.started < limit
            and compatible(inc.series, s.series)
            for inc in self.incidents.values()
        )

    def _slices(
        self,
        ts: float,
        window: float,
        s: Series,
        r: Rolled,
        mix: dict,
        annotated: bool,
        out: list[Anomaly],
    ) -> None:
        """Disappearance of one slice (e.g. an app version) of an event on a source.

        The event's share of all events on its source is learnt (EW) while no slice is missing;
        a value's expected count is that share times the value's own traffic in the window. So
        a release that stops sending one event is seen while it is still rolling out, and a
        version that is fading out (little traffic) is not blamed. A value is only expected to
        send the event if it sends `slice_min_events` other events and either sent this one
        before or appeared after the event did (a new event of one release is not "missing"
        from the older ones). When the whole series is silent, its own alert says it all.
        A value's evidence (its empty run) outlives windows in which it sent nothing at all, as
        a release reaching a few users does at first, and so does its open alert (for
        `slice_hold_minutes` after the value was last seen: then it calms, e.g. rolled back);
        the share is learnt on the traffic of the values that send the event, so such a
        release does not lower it meanwhile.
        """
        cfg = self.config
        traffic_by_dim = mix.get(s.series["source"], {})
        for dim in cfg.slice_dims:
            traffic = {v: slot[0] for v, slot in traffic_by_dim.get(dim, {}).items()}
            broad = {
                v for v, slot in traffic_by_dim.get(dim, {}).items()
                if len(slot[1] - {s.series["event"]}) >= cfg.slice_min_events
            }  # fmt: skip
            senders = {v for v in s.baseline.values(dim) if s.baseline.share(dim, v) > 0.01}
            counts = r.breakdown.get(dim, {})
            values = sorted(traffic, key=lambda v: -traffic[v])[: cfg.max_slice_values]
            share = s.shares.setdefault(dim, [0.0, 0.0, 0])
            busy = any(
                t.lifecycle.active for n, t in s.tracks.items() if n.startswith(f"slice:{dim}=")
            )
            # the share is of the traffic of values that send the event: a release that does
            # not must not lower it while its evidence gathers
            sending = sum(n for v, n in traffic.items() if v in senders)
            if not busy and not annotated and sending > 0:
                a = cfg.slice_alpha
                share[0] = (1 - a) * share[0] + a * r.numerator
                share[1] = (1 - a) * share[1] + a * sending
                share[2] += 1
            ratio = share[0] / share[1] if share[1] > 0 else 0.0
            trusted = share[2] >= cfg.slice_min_windows
            several = len(values) >= 2  # one value alone: the series' own alert covers it
            seen = set()
            for value in values:
                name = f"slice:{dim}={value}"
                seen.add(name)
                observed = counts.get(value, (0.0, 0.0))[0]
                run = s.slices.setdefault(name, [0, 0.0, ts, ts, ts])
                run[4] = ts
                # expected from v: it sent the event before, or the event is older than v
                older = s.first_seen + 3600 < run[3]
                eligible = value in broad and (
                    value in senders or (bool(senders - {value}) and older)
                )
                if observed > 0 or annotated or not trusted:
                    run[0], run[1], run[2] = 0, 0.0, ts
                elif eligible and several and r.numerator > 0:  # else: no evidence either way
                    if run[0] == 0:
                        run[2] = ts
                    run[0] += 1
                    run[1] += ratio * traffic[value]
                self._slice_step(ts, window, s, name, dim, value, self._gone(s, run), run, out)
            prefix = f"slice:{dim}="
            for name in [n for n in s.slices if n.startswith(prefix) and n not in seen]:
                # a value that sent nothing at all in this window is no evidence either way: it
                # keeps its evidence (a release rolling out is absent from most minutes at
                # first) and its open alert, for a while
                track, run = s.tracks.get(name), s.slices[name]
                if track is not None and track.lifecycle.active:
                    value = name[len(prefix) :]
                    held = ts - run[4] < cfg.slice_hold_minutes * 60.0
                    gone = held and self._gone(s, run)
                    self._slice_step(ts, window, s, name, dim, value, gone, run, out)
                elif (track is None or track.lifecycle.state == "idle") and (
                    run[0] == 0 or ts - run[2] > cfg.slice_forget_minutes * 60.0
                ):
                    s.slices.pop(name, None)
                    s.tracks.pop(name, None)

    def _broken_slices(
        self,
        ts: float,
        window: float,
        s: Series,
        r: Rolled,
        a: Assessment,
        annotated: bool,
        out: list[Anomaly],
    ) -> None:
        """A slice (e.g. an app version) whose events of this event mostly break the plan while
        the event's other slices mostly do not: a release that renamed a property.

        Evidence gathers over the slice's consecutive windows that are mostly bad (a window
        without its events is no evidence either way) and is worth an alert when its bad events
        are worth `min_excess_units` users, chance at the usual violation share puts them at the
        firing level, and the event's other slices mostly do not break (when every version
        breaks, the event's own violation series tells it once). Its alert joins the event's
        `violation_surge`; it calms `slice_hold_minutes` after the slice stops sending bad events.
        """
        cfg = self.config
        if not s.planned:
            return  # an event nobody planned breaks the plan by nature: `new_event` tells it
        base = min(max(a.expected, 1e-4), 0.999)
        total_series = self.series.get(series_key("volume", {"event": s.series["event"]}))
        burst = total_series.burst if total_series is not None else 1.0
        for dim in cfg.slice_dims:
            counts = r.breakdown.get(dim, {})
            values = sorted(counts, key=lambda v: -counts[v][0])[: cfg.max_slice_values]
            for value in values:
                bad, sent = counts[value]
                name = f"broken:{dim}={value}"
                run = s.broken.get(name)
                if sent <= 0 or value == MISSING:
                    continue
                if annotated or bad < 0.5 * sent:
                    if run is not None:
                        run[:4] = [0.0, 0.0, 0.0, 0.0]
                        run[4] = ts
                else:
                    if run is None:
                        run = s.broken[name] = [0.0, 0.0, 0.0, 0.0, ts, ts]
                    run[0] += bad
                    run[1] += sent
                    run[2] += r.numerator
                    run[3] += r.denominator
                    run[5] = ts
                if run is not None:
                    self._broken_step(ts, window, s, r, name, dim, value, run, base, burst, out)
            for name in [n for n in s.broken if n.startswith(f"broken:{dim}=")]:
                run = s.broken[name]
                value = name.split("=", 1)[1]
                if value in counts:
                    continue
                held = ts - run[5] < cfg.slice_hold_minutes * 60.0
                if not held:
                    run[:4] = [0.0, 0.0, 0.0, 0.0]
                self._broken_step(ts, window, s, r, name, dim, value, run, base, burst, out)

    def _broken_step(
        self,
        ts: float,
        window: float,
        s: Series,
        r: Rolled,
        name: str,
        dim: str,
        value: str,
        run: list,
        base: float,
        burst: float,
        out: list[Anomaly],
    ) -> None:
        cfg = self.config
        track = s.tracks.get(name)
        if track is not None and track.lifecycle.active and track.den > 0:
            base = track.exp / track.den  # the usual share when it began (the event's own
            # model learns the new share once its alert is accepted as a level shift)
        bad, sent, all_bad, all_sent = run[:4]
        broken = (
            bad / burst >= cfg.min_excess_units
            and bad >= 0.5 * sent
            and all_bad - bad < 0.5 * (all_sent - sent)
            # chance at the usual share, counted in users (a session's events come together)
            and score_from_pvalue(betabinom_midp(bad / burst, sent / burst, base, 1e6)[0])
            >= cfg.lifecycle.fire_score
        )
        track, transition = self._verdict(ts, window, s, name, broken, since=run[4])
        if track is None:
            if not bad:
                s.broken.pop(name, None)
            return
        if track.lifecycle.active and value in r.breakdown.get(dim, {}):
            parts = expected_parts(r.metric, r.breakdown, s.baseline, base)
            accumulate(track.parts, parts)
        if broken:
            track.obs, track.exp, track.den = bad, base * sent, sent
            track.windows = max(1, round((run[5] - run[4]) / window) + 1)
            for code, n in r.codes.items():
                track.codes[code] = track.codes.get(code, 0) + n
            track.peak = 1.0
            track.last = [bad / sent, base, 0.0, 0.0]
        kind = KINDS[("violation", "up")]
        self._announce(ts, window, s, name, track, transition, kind, {**s.series, dim: value}, out)
        if not bad and track.lifecycle.state == "idle":  # calm, and past reopening: forget it
            s.broken.pop(name, None)
            s.tracks.pop(name, None)

    def _gone(self, s: Series, run: list) -> bool:
        """Has this slice sent none of the event for long enough, and enough of it expected?"""
        cfg = self.config
        return run[0] >= cfg.disappear_windows and run[1] / s.burst >= cfg.disappear_units

    def _slice_step(
        self,
        ts: float,
        window: float,
        s: Series,
        name: str,
        dim: str,
        value: str,
        gone: bool,
        run: list,
        out: list[Anomaly],
    ) -> None:
        track, transition = self._verdict(ts, window, s, name, gone, since=run[2])
        if track is None:
            return
        if gone:
            track.windows += 1
            track.silent_windows, track.silent_expected = int(run[0]), float(run[1])
            track.peak = 1.0
            track.last = [0.0, float(run[1]) / max(run[0], 1), 0.0, 0.0]
        series = {**s.series, dim: value}
        self._announce(ts, window, s, name, track, transition, "disappeared", series, out)

    def _verdict(
        self, ts: float, window: float, s: Series, name: str, hot: bool, since: float
    ) -> tuple[Track | None, Transition | None]:
        """Step the lifecycle of slice track `name` on a yes/no verdict whose evidence is
        already gathered (a slice gone, a release broken): a yes fires at once, and an incident
        starts when its evidence did (`since`). No track is made for a no."""
        cfg = self.config.lifecycle
        track = s.tracks.get(name)
        if track is None:
            if not hot:
                return None, None
            track = s.tracks[name] = Track()
        before = track.lifecycle.state
        transition = track.lifecycle.step(ts, 1.0 if hot else 0.0, window, cfg)
        if hot and track.lifecycle.state == "pending":
            transition = track.lifecycle.escalate(cfg)
        if before not in ("pending", "firing") and track.lifecycle.active:
            track.reset_evidence()
            track.lifecycle.started = min(track.lifecycle.started or ts, since)
        return track, transition

    def _announce(
        self,
        ts: float,
        window: float,
        s: Series,
        name: str,
        track: Track,
        transition: Transition | None,
        kind: str,
        series: dict[str, str],
        out: list[Anomaly],
    ) -> None:
        """Open (or join) the incident of a slice track that fired, or resolve it."""
        if transition in ("fire", "reopen"):
            track.fired_at = ts + window
            self._on_fire(ts, window, s, name, kind, series, out)
        elif transition == "resolve":
            self._on_resolve(ts, window, s, name, out)

    @staticmethod
    def _bucket(expected: float) -> int:
        return min(11, int(math.log2(max(expected, 0.0) + 1.0)))

    def _enough(self, s: Series, track: Track) -> bool:
        """Is the evidence worth an alert (not only significant)? The evidence: what the track
        gathered since it became pending or, for rates, the model's most deviating span if that
        says more (a conversion rate on a few users an hour is significant only once it has
        lasted long: the windows before `pending` count then too). Volumes keep their own
        evidence: a long span's excess is often the model's own error over hours."""
        cfg = self.config
        obs, exp = track.obs, track.exp
        if self._span_says_more(s, track, obs, exp):
            obs, exp = track.span_obs, track.span_exp
        excess = abs(obs - exp)
        if s.metric == "volume" and track.silent_windows and track.obs < track.exp:
            run, expected = track.silent_windows, track.silent_expected
            usual = cfg.quiet_factor * s.quiet[self._bucket(expected / run)]
            if run <= usual and expected >= 0.5 * (track.exp - track.obs):
                return False  # mostly a silence no longer than this series often has
        change = excess / exp if exp > 0 else math.inf
        if s.metric == "volume":
            return excess / s.burst >= cfg.min_excess_units and change >= cfg.min_change
        return excess >= cfg.min_rate_excess and change >= cfg.min_change

    @staticmethod
    def _span_says_more(s: Series, track: Track, observed: float, expected: float) -> bool:
        """For a rate: does the model's most deviating span show a larger excess than these
        sums? (Then it is the evidence, both for deciding and for telling.)"""
        excess = abs(track.span_obs - track.span_exp)
        return s.metric != "volume" and excess > abs(observed - expected)

    def _source_mix(self, s: Series, mix: dict) -> dict[str, dict[str, float]]:
        """dim -> value -> this window's traffic (all events) of the series' source, for the
        slice dimensions (volume series of one source only)."""
        if s.metric != "volume" or "source" not in s.series or not mix:
            return {}
        per_source = mix.get(s.series["source"], {})
        return {
            dim: {v: slot[0] for v, slot in per_source[dim].items()}
            for dim in self.config.slice_dims
            if dim in per_source
        }

    @staticmethod
    def _newcomers(s: Series, dim: str) -> set[str]:
        """Values of `dim` (e.g. app versions) first seen on the series' source an hour or more
        after the series, that do not send it (as in `_slices`: expected to, being newer)."""
        prefix = f"slice:{dim}="
        return {
            name[len(prefix) :]
            for name, run in s.slices.items()
            if name.startswith(prefix)
            and s.first_seen + 3600 < run[3]
            and s.baseline.share(dim, name[len(prefix) :]) <= 0.01
        }

    def _learn(
        self, ts: float, s: Series, r: Rolled, a: Assessment, substitute: bool, mix: dict
    ) -> None:
        if a.learning and substitute:
            return  # cold start and anomalous/annotated: skip rather than learn it
        if substitute:
            if r.metric == "volume":
                s.model.learn(ts, a.expected, 1.0)
            else:
                s.model.learn(ts, a.expected * r.denominator, r.denominator)
            return
        s.model.learn(ts, r.numerator, r.weight)
        s.baseline.learn(r.breakdown)
        now = self._source_mix(s, mix)
        if now:
            s.traffic.learn({d: {v: (n, 0.0) for v, n in vals.items()} for d, vals in now.items()})
        if r.metric == "volume" and r.users > 0:
            alpha = self.config.baseline_alpha
            s.ew_events += alpha * (r.numerator - s.ew_events)
            s.ew_users += alpha * (r.users - s.ew_users)

    def _gather(
        self,
        track: Track,
        s: Series,
        r: Rolled,
        a: Assessment,
        score: float,
        mix: dict,
        until: float,
    ) -> None:
        """Add this window to the evidence of an active lifecycle."""
        track.obs += r.numerator
        if r.metric == "volume":
            track.exp += a.expected
        else:
            track.exp += a.expected * r.denominator
            track.den += r.denominator
        for code, n in r.codes.items():
            track.codes[code] = track.codes.get(code, 0) + n
        parts = expected_parts(r.metric, r.breakdown, s.baseline, a.expected)
        for dim, now in self._source_mix(s, mix).items():
            mix_adjusted(
                parts, dim, s.baseline, s.traffic, now, a.expected, self._newcomers(s, dim)
            )
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

    # ------------------------------------------------------------------ incidents
    @staticmethod
    def _group(s: Series, family: str) -> str:
        if family == "new":
            return "new"
        if family.startswith("broken:"):
            return f"{s.metric}:up"
        direction = "down" if family.startswith("slice:") else family
        return f"{s.metric}:{direction}"

    def _find(
        self, group: str, series: dict[str, str], since: float | None = None
    ) -> Incident | None:
        """An open incident of `group` about a compatible series (that began no more than
        `merge_minutes` before `since`, when given: an old alert does not swallow a new one),
        or about another event of the same source that began at most `together_minutes` from
        `since` (one burst of a source's traffic moves several of its events at once)."""
        limit = self.config.merge_minutes * 60.0
        for inc in self.incidents.values():
            if inc.group != group:
                continue
            if not compatible(inc.series, series):
                if since is None or not self._together(inc, series, since):
                    continue
                return inc
            if since is None or since - inc.started <= limit:
                return inc
        return None

    def _together(self, inc: Incident, series: dict[str, str], since: float) -> bool:
        """Did `series` start deviating with `inc`, on the same source?"""
        source, limit = series.get("source"), self.config.together_minutes * 60.0
        return (
            limit > 0.0
            and source is not None
            and inc.series.get("source") == source
            and abs(since - inc.started) <= limit
        )

    def _open_slice(self, group: str, series: dict[str, str]) -> Incident | None:
        """An open incident of `group` on a slice of `series` (its keys and more: one source of
        this event), however old: a total moving the way one of its open slices already does
        is that slice's incident (a new one elsewhere still fires on its own slice)."""
        for inc in self.incidents.values():
            if inc.group == group and series.items() < inc.series.items():
                return inc
        return None

    def _on_fire(
        self,
        ts: float,
        window: float,
        s: Series,
        family: str,
        kind: str,
        series: dict[str, str],
        out: list[Anomaly],
    ) -> None:
        """A lifecycle fired: join a compatible open incident, or open (or reopen) one."""
        group = self._group(s, family)
        member = (s.key, family)
        inc = self._find(group, series, since=s.tracks[family].lifecycle.started or ts)
        if inc is None:
            inc = self._open_slice(group, series)
        if inc is not None:
            if member not in inc.members:
                inc.members.append(member)
            if kind == "disappeared":
                self._to_disappeared(ts, window, s, family, series, out)
            return
        started = s.tracks[family].lifecycle.started or ts
        reopen_limit = self.config.lifecycle.reopen_minutes * 60.0
        inc_id = alert_id(series_key(s.metric, series), group, started)
        for i, (old_id, old_group, old_series, old_started, ended) in enumerate(self.recent):
            if old_group == group and compatible(old_series, series) and ts - ended <= reopen_limit:
                inc_id, started = old_id, old_started
                del self.recent[i]
                break
        sign = -1 if group.endswith(":down") else 1
        inc = Incident(inc_id, kind, group, member, series, started, [member], sign)
        self.incidents[inc_id] = inc
        self._emit(inc, "firing", ts + window, out)

    def _to_disappeared(
        self,
        ts: float,
        window: float,
        s: Series,
        family: str,
        series: dict[str, str],
        out: list[Anomaly],
    ) -> None:
        """A drop whose series (or one of its slices) went silent becomes `disappeared`."""
        inc = self._find(self._group(s, family), series)
        if inc is None or inc.kind != "drop":
            return
        inc.kind = "disappeared"
        inc.owner = (s.key, family)
        inc.series = dict(series)
        if inc.owner not in inc.members:
            inc.members.append(inc.owner)
        self._emit(inc, "firing", ts + window, out)

    def _to_drop(
        self, ts: float, window: float, s: Series, family: str, out: list[Anomaly]
    ) -> None:
        """A `disappeared` series that sends again, but far less than usual, is a `drop`."""
        member = (s.key, family)
        inc = next((i for i in self.incidents.values() if i.owner == member), None)
        if inc is None or inc.kind != "disappeared":
            return
        inc.kind = "drop"
        self._emit(inc, "firing", ts + window, out)

    def _on_resolve(
        self, ts: float, window: float, s: Series, family: str, out: list[Anomaly]
    ) -> None:
        """A lifecycle calmed down: the incident resolves when its last member has."""
        member = (s.key, family)
        inc = self._incident_of(member)
        if inc is None:
            return
        inc.members.remove(member)
        if inc.members:
            return
        ended = s.tracks[family].lifecycle.ended or ts
        owner = self.series.get(inc.owner[0])
        if owner is None or inc.owner[1] not in owner.tracks:
            owner_ref = (s, family)
        else:
            owner_ref = (owner, inc.owner[1])
        self._emit(inc, "resolved", ended, out, owner_ref)
        del self.incidents[inc.id]
        self.recent.append((inc.id, inc.group, inc.series, inc.started, ended))
        if len(self.recent) > 1000:
            del self.recent[:500]

    def _emit(
        self,
        inc: Incident,
        state: str,
        at: float,
        out: list[Anomaly],
        owner_ref: tuple[Series, str] | None = None,
    ) -> None:
        anomaly = self._anomaly(inc, state, at, owner_ref)
        if anomaly is not None:
            out.append(anomaly)

    def _anomaly(
        self,
        inc: Incident,
        state: str,
        at: float,
        owner_ref: tuple[Series, str] | None = None,
    ) -> Anomaly | None:
        if owner_ref is not None:
            s, family = owner_ref
        else:
            found = self.series.get(inc.owner[0])
            if found is None:
                return None
            s, family = found, inc.owner[1]
        track = s.tracks.get(family)
        if track is None:
            return None
        observed, expected, denominator, until = track.hot
        start = track.lifecycle.started or inc.started
        minutes = (until - start) / 60.0
        if until <= start:  # not gathered window by window (a slice, a new event)
            observed, expected, denominator = track.obs, track.exp, track.den
            minutes = track.windows * self._w / 60.0
        if track.span_windows > 0 and self._span_says_more(s, track, observed, expected):
            # as in `_enough`: a sparse rate is told on the span that made it significant
            observed, expected = track.span_obs, track.span_exp
            denominator, minutes = track.span_den, track.span_windows * self._w / 60.0
        if inc.kind == "disappeared":
            observed, expected = 0.0, track.silent_expected
            minutes = track.silent_windows * self._w / 60.0
        attribution = attribute(track.parts, inc.direction, self.config.attribution_top)
        margin = 0.0 if inc.kind == "new_event" else 0.15
        evidence = Evidence(
            kind=inc.kind,
            series=inc.series,
            started=inc.started,
            minutes=minutes,
            observed=observed,
            expected=expected,
            denominator=denominator,
            planned=s.planned,
            codes=track.codes,
            attribution=notable(track.parts, attribution, margin=margin),
            ended=at if state == "resolved" else None,
            echo=self._echo(inc) if inc.kind == "conversion_up" else None,
        )
        obs, exp, lo, up = track.last
        return Anomaly(
            id=inc.id,
            kind=inc.kind,  # type: ignore[arg-type]
            series=dict(inc.series),
            state=state,  # type: ignore[arg-type]
            started_at=_iso(inc.started),
            updated_at=_iso(at),
            ended_at=_iso(at) if state == "resolved" else None,
            observed=float(obs),
            expected=float(exp),
            lower=float(lo),
            upper=float(up),
            score=float(track.peak),
            explanation=explain(evidence),
            attribution=attribution,
        )

    def _echo(self, inc: Incident) -> tuple[str, float] | None:
        """For a conversion rise: the earliest rise of the last step's own events on its source
        (or over all sources), open or resolved, from `echo_hours` before it began."""
        event, source = inc.series.get("to_event"), inc.series.get("source")
        since = inc.started - self.config.echo_hours * 3600.0
        rises = [(i.group, i.series, i.started) for i in self.incidents.values()]
        rises += [(group, series, started) for _, group, series, started, _ in self.recent]
        found = [
            (started, group)
            for group, series, started in rises
            if group in RISES
            and series.get("event") == event
            and series.get("source", source) == source
            and started >= since
        ]
        if not found:
            return None
        started, group = min(found)
        return RISES[group], started

    # ------------------------------------------------------------------ new events
    def _new_event_check(
        self, ts: float, window: float, s: Series, r: Rolled, annotated: bool, out: list[Anomaly]
    ) -> None:
        cfg = self.config
        s.recent.append([ts, r.numerator])
        while len(s.recent) > cfg.new_event_span:
            s.recent.popleft()
        member = (s.key, "new")
        inc = self._incident_of(member)
        if inc is not None:
            track = s.tracks["new"]
            track.obs += r.numerator
            track.windows += 1
            accumulate(track.parts, expected_parts("volume", r.breakdown, SliceBaseline(), 0.0))
            track.last = [r.numerator, 0.0, 0.0, 0.0]
            if ts + window - inc.started >= cfg.new_event_hold_minutes * 60.0:
                self._emit(inc, "resolved", ts + window, out)
                del self.incidents[inc.id]
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
        self.incidents[inc.id] = inc
        self._emit(inc, "firing", ts + window, out)

    # ------------------------------------------------------------------ series bookkeeping
    def _arrivals(self, rec: WindowRecord) -> float:
        """Events sent: `count`, plus the violating ones if the plan quarantines them."""
        source = rec.series.get("source")
        key = (rec.series.get("event"), source)
        flagged = self._forwarded.get(key)
        if flagged is None:
            flagged = False
            mode_for = getattr(self.plan, "mode_for", None)
            if mode_for is not None:
                spec = self.plan.events.get(key[0] or "")  # type: ignore[union-attr]
                flagged = str(mode_for(spec, source)) != "block"
            if len(self._forwarded) < 10_000:
                self._forwarded[key] = flagged
        return float(rec.count if flagged else rec.count + rec.violations)

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
        busy = {m[0] for inc in self.incidents.values() for m in inc.members}
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
            "incidents": [inc.to_state() for inc in self.incidents.values()],
            "recent": [list(item) for item in self.recent],
            "first_seen_events": dict(self.first_seen_events),
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
            engine.incidents[inc.id] = inc
        engine.recent = [(i, g, dict(se), st, en) for i, g, se, st, en in state["recent"]]
        engine.first_seen_events = {
            str(k): float(v) for k, v in state.get("first_seen_events", {}).items()
        }
        for s in engine.series.values():  # a state from before it was kept
            if s.is_event_total and s.planned:
                engine.first_seen_events.setdefault(s.series["event"], s.first_seen)
        return engine
