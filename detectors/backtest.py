"""Backtest: score alerts against labelled incidents (recall, false alerts, detection latency).

The pure part (this module) folds alert lines into alert spans and matches them to labels.
`run_backtest` drives a whole run: simulated traffic with the default incident schedule → the
offline replay (`streams.replay`, the same code as the streaming path) → the engine → scores
and one PNG per incident. `run_profile_backtest` does the same with a profile of the
independent generator (`simulation.profiles`: its own plan, traffic and incidents), and
`replay_scored` with any envelopes and labels. It lives here because it is the detectors'
evaluation, but it imports the simulators and the replay lazily, so `detectors` itself stays
free of them.

Matching rule (an alert "finds" a label):
- same kind: the alert was reported with the label's kind at some point of its life (an alert
  that starts as `disappeared` because a source went silent for a few minutes and goes on as a
  `drop` finds a drop; a `drop` never reported as `disappeared` does not find a disappearance);
- compatible series: every key of the label's series is either in the alert's series with the
  same value, or named by the alert's attribution (that dimension = that value with a share of
  at least `MIN_SHARE`); `platform` is implied by `source` (the plan maps one to the other);
- time overlap: the alert starts no earlier than `LEAD_MINUTES` before the label's start, and
  no later than `slack_minutes` after its end (conversion rates are known only once the funnel
  window has passed, an hour by default); an alert that resolved before the label began does
  not count.
An alert that finds no label expecting one is a false alert (alerts during an announced
campaign are false alerts too), unless it matches, by the same rule, one of the `related`
deviations a label lists (what the incident itself does to other series, e.g. the extra
`Order Completed` calls of a conversion_up tag are also a volume spike): such an alert is about
a labelled incident; it is counted apart, neither as a find nor as false. Latency: minutes from
the label's start to the first firing of the first alert that finds it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from detectors.records import WITHIN, Anomaly, Attribution, epoch_seconds

# One modelled window of a charted series: ts, observed, expected, lower, upper, score, weight
# (rates: the users or events the rate is measured on; volumes: 1). A rate's window without
# users has no row.
Row = tuple[float, float, float, float, float, float, float]

MIN_SHARE = 0.5
LEAD_MINUTES = 10.0
DEFAULT_SLACK_MINUTES = 120.0
IMPLIED_KEYS = {"platform": "source"}  # label key -> key that implies it


@dataclass(frozen=True)
class Label:
    """One labelled incident (the simulator's ground truth)."""

    name: str
    kind: str
    series: dict[str, str]
    start: float
    end: float
    expect_alert: bool = True
    related: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()  # (kind, series items)
    incident_class: str = ""  # the generator's incident class ("class" in labels.json), if any

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Label:
        return cls(
            name=str(data.get("name") or data["kind"]),
            kind=str(data["kind"]),
            series={str(k): str(v) for k, v in (data.get("series") or {}).items()},
            start=epoch_seconds(data["start"]),
            end=epoch_seconds(data["end"]),
            expect_alert=bool(data.get("expect_alert", True)),
            related=tuple(
                (str(r["kind"]), tuple((str(k), str(v)) for k, v in r["series"].items()))
                for r in data.get("related") or ()
            ),
            incident_class=str(data.get("class") or ""),
        )

    def related_labels(self) -> list[Label]:
        """The related deviations as labels of their own (same window)."""
        return [
            Label(f"{self.name} ({kind})", kind, dict(series), self.start, self.end)
            for kind, series in self.related
        ]


@dataclass
class AlertSpan:
    """One alert (all its lines folded): kind and series as last updated, when it fired."""

    id: str
    kind: str
    series: dict[str, str]
    attribution: list[Attribution]
    started: float
    fired: float  # first time it was seen firing
    ended: float | None = None
    explanation: str = ""
    kinds: set[str] = field(default_factory=set)  # every kind it was reported as
    reopened: int = 0  # times it fired again after resolving (flapping, if more than rarely)


def alert_spans(alerts: Iterable[Anomaly | dict[str, Any]]) -> list[AlertSpan]:
    """Fold alert lines (Anomaly objects or ALERTS.jsonl dicts) into one span per alert id."""
    spans: dict[str, AlertSpan] = {}
    for item in alerts:
        data = item.to_dict() if isinstance(item, Anomaly) else item
        attribution = [
            a if isinstance(a, Attribution) else Attribution(a["dimension"], a["value"], a["share"])
            for a in data.get("attribution") or []
        ]
        span = spans.get(data["id"])
        updated = epoch_seconds(data.get("updated_at") or data["started_at"])
        if span is None:
            span = spans[data["id"]] = AlertSpan(
                id=data["id"],
                kind=data["kind"],
                series=dict(data["series"]),
                attribution=attribution,
                started=epoch_seconds(data["started_at"]),
                fired=updated,
                explanation=data.get("explanation", ""),
            )
        span.kinds.add(data["kind"])
        if data.get("state") == "resolved":
            span.ended = epoch_seconds(data.get("ended_at") or updated)
        else:
            if span.ended is not None:  # it had resolved: firing again
                span.reopened += 1
            span.ended = None
            span.kind, span.series = data["kind"], dict(data["series"])
            span.attribution, span.explanation = attribution, data.get("explanation", "")
    return list(spans.values())


def series_match(label: dict[str, str], span: AlertSpan) -> bool:
    """Does the alert's series (or its attribution) cover every key of the label's series?"""
    named = {(a.dimension, a.value) for a in span.attribution if a.share >= MIN_SHARE}
    for key, value in label.items():
        if key in span.series:
            if span.series[key] != value:
                return False
        elif key in IMPLIED_KEYS and IMPLIED_KEYS[key] in label:
            continue
        elif (key, value) not in named:
            return False
    return True


def matches(label: Label, span: AlertSpan, slack_minutes: float = DEFAULT_SLACK_MINUTES) -> bool:
    if label.kind not in (span.kinds or {span.kind}) or not series_match(label.series, span):
        return False
    if not label.start - LEAD_MINUTES * 60 <= span.started <= label.end + slack_minutes * 60:
        return False
    return span.ended is None or span.ended >= label.start


@dataclass
class Score:
    """What a backtest measured."""

    days: float
    labels: list[Label]
    spans: list[AlertSpan]
    found: dict[str, AlertSpan] = field(default_factory=dict)  # label name -> first alert
    latency: dict[str, float] = field(default_factory=dict)  # label name -> minutes
    false_alerts: list[AlertSpan] = field(default_factory=list)
    related_alerts: list[AlertSpan] = field(default_factory=list)  # about a labelled incident

    @property
    def expected(self) -> list[Label]:
        return [label for label in self.labels if label.expect_alert]

    def recall_by_kind(self) -> dict[str, tuple[int, int]]:
        """kind -> (found, labelled)."""
        out: dict[str, tuple[int, int]] = {}
        for label in self.expected:
            found, total = out.get(label.kind, (0, 0))
            out[label.kind] = (found + (label.name in self.found), total + 1)
        return dict(sorted(out.items()))

    def by_class(self) -> dict[str, dict[str, Any]]:
        """incident class -> found, total, and each incident's latency (None: missed); labels
        without a class are grouped by kind."""
        out: dict[str, dict[str, Any]] = {}
        for label in self.expected:
            entry = out.setdefault(
                label.incident_class or label.kind, {"found": 0, "total": 0, "latency": {}}
            )
            entry["total"] += 1
            entry["found"] += label.name in self.found
            entry["latency"][label.name] = self.latency.get(label.name)
        return dict(sorted(out.items()))

    @property
    def recall(self) -> float:
        return len(self.found) / len(self.expected) if self.expected else 1.0

    @property
    def false_per_day(self) -> float:
        return len(self.false_alerts) / self.days if self.days > 0 else 0.0

    @property
    def reopened(self) -> int:
        """How often alerts fired again after resolving, over all alerts."""
        return sum(s.reopened for s in self.spans)

    @property
    def median_latency(self) -> float | None:
        return statistics.median(self.latency.values()) if self.latency else None

    @property
    def max_latency(self) -> float | None:
        return max(self.latency.values()) if self.latency else None

    def summary(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "incidents": len(self.expected),
            "found": len(self.found),
            "recall": self.recall,
            "recall_by_kind": {
                k: {"found": f, "total": t} for k, (f, t) in self.recall_by_kind().items()
            },
            "by_class": self.by_class(),
            "alerts": len(self.spans),
            "false_alerts": len(self.false_alerts),
            "false_alerts_per_day": self.false_per_day,
            "related_alerts": len(self.related_alerts),
            "reopened": self.reopened,
            "median_latency_minutes": self.median_latency,
            "max_latency_minutes": self.max_latency,
            "latency_minutes": self.latency,
            "missed": [lb.name for lb in self.expected if lb.name not in self.found],
            "false": [
                {"id": s.id, "kind": s.kind, "series": s.series, "explanation": s.explanation}
                for s in self.false_alerts
            ],
            "related": [
                {"id": s.id, "kind": s.kind, "series": s.series, "explanation": s.explanation}
                for s in self.related_alerts
            ],
        }


def score(
    labels: Iterable[Label],
    spans: Iterable[AlertSpan],
    days: float,
    slack_minutes: float = DEFAULT_SLACK_MINUTES,
) -> Score:
    """Match alert spans to labels (see the module docstring for the rule)."""
    labels, spans = list(labels), list(spans)
    result = Score(days=days, labels=labels, spans=spans)
    true_ids: set[str] = set()
    for label in labels:
        hits = sorted((s for s in spans if matches(label, s, slack_minutes)), key=lambda s: s.fired)
        if not label.expect_alert or not hits:
            continue
        true_ids.update(s.id for s in hits)
        result.found[label.name] = hits[0]
        result.latency[label.name] = max(0.0, (hits[0].fired - label.start) / 60.0)
    related = [r for label in labels if label.expect_alert for r in label.related_labels()]
    related_ids = {
        s.id
        for s in spans
        if s.id not in true_ids and any(matches(r, s, slack_minutes) for r in related)
    }
    result.related_alerts = [s for s in spans if s.id in related_ids]
    result.false_alerts = [s for s in spans if s.id not in true_ids and s.id not in related_ids]
    return result


# ---------------------------------------------------------------------------------- a whole run


@dataclass
class BacktestRun:
    seed: int
    score: Score
    alerts: list[Anomaly]
    history: dict[str, list[Row]]
    plotted: dict[str, str]  # label name -> series key plotted
    events: int


START = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday: the default schedule's start


def _metric(kind: str) -> str:
    if kind.startswith("conversion"):
        return "conversion"
    return "violation" if kind == "violation_surge" else "volume"


def watched_series(label: Label, levels: Iterable[Any]) -> str | None:
    """The key of the most specific modelled series that shows a label's incident; when no
    level fits (e.g. a whole source), the key of the label's own series, which the backtest
    then draws as the sum of the modelled series inside it."""
    from detectors.rollup import series_key

    metric = _metric(label.kind)
    best: tuple[int, str] | None = None
    for level in levels:
        if level.metric != metric or not all(d in label.series for d in level.dims):
            continue
        key = series_key(metric, {d: label.series[d] for d in level.dims})
        if best is None or len(level.dims) > best[0]:
            best = (len(level.dims), key)
    if best is None and label.series and label.kind != "campaign":
        return series_key(metric, label.series)
    return best[1] if best else None


def charted(key: str, early_key: str, found: AlertSpan | None, early_rows: bool) -> str:
    """The series to draw for a conversion incident: the early rate ("within 10 minutes") when
    the alert that found it was about that rate, else the whole funnel window's."""
    return early_key if found is not None and WITHIN in found.series and early_rows else key


def run_backtest(
    days: float,
    users_per_day: int,
    seed: int,
    *,
    plan_path: Path,
    schedule_path: Path,
    engine_config: Any = None,
    progress: Callable[[float], None] = lambda hours: None,
) -> BacktestRun:
    """Simulate `days` of traffic with the schedule's incidents (`streams.simulator`, the
    `ecommerce` profile), replay it through the pipeline and the engine (`engine_config`: a
    tuning, None for the defaults), and score the alerts. `progress` gets the simulated hours
    done."""
    from streams.sim_incidents import load_incidents
    from streams.simulator import simulate
    from tracking_plan.loader import load_plan

    plan = load_plan(plan_path)
    end = START.timestamp() + days * 86400
    incidents = [i for i in load_incidents(schedule_path, START, plan) if i.start.timestamp() < end]
    labels = [Label.from_dict(i.label()) for i in incidents]
    annotations = [a for i in incidents if (a := i.annotation()) is not None]
    envelopes = simulate(plan, START, days, users_per_day, seed, incidents)
    return replay_scored(plan, envelopes, labels, annotations, days, seed, engine_config, progress)


def run_profile_backtest(
    profile_name: str,
    seed: int,
    *,
    days: float | None = None,
    users_per_day: int | None = None,
    engine_config: Any = None,
    progress: Callable[[float], None] = lambda hours: None,
) -> BacktestRun:
    """The same for a traffic profile of the independent generator (`simulation.profiles`):
    its own plan, traffic, incidents and announced campaigns."""
    from simulation.generator import generate
    from simulation.profiles import get_profile, scenario
    from tracking_plan.loader import load_plan

    profile = get_profile(profile_name)
    plan = load_plan(profile.plan_path())
    run = scenario(profile, days=days, users_per_day=users_per_day)
    labels = [Label.from_dict(label) for label in run.labels()]
    envelopes = generate(run, seed)
    return replay_scored(
        plan, envelopes, labels, run.annotations(), run.days, seed, engine_config, progress
    )


def replay_scored(
    plan: Any,
    envelopes: Iterable[dict[str, Any]],
    labels: list[Label],
    annotation_entries: list[dict[str, Any]],
    days: float,
    seed: int,
    engine_config: Any = None,
    progress: Callable[[float], None] = lambda hours: None,
) -> BacktestRun:
    """Replay `envelopes` (in `received_at` order) through the pipeline and the engine with the
    announced campaigns `annotation_entries` (annotation-file entries), and score the alerts
    against `labels`; keep the charted series of every label."""
    from unittest import mock

    import orjson

    import streams.replay as replay_module
    from detectors.annotations import Annotation
    from detectors.engine import DetectionEngine
    from detectors.rollup import compatible, parse_series_key, series_key
    from streams.windows import EARLY_MINUTES

    annotations = [
        Annotation(
            name=entry["name"],
            start=epoch_seconds(entry["start"]),
            end=epoch_seconds(entry["end"]),
            sources=frozenset(entry.get("sources") or ()),
            events=frozenset(entry.get("events") or ()),
        )
        for entry in annotation_entries
    ]
    engine = DetectionEngine(plan=plan, config=engine_config, annotations=annotations)
    plotted = {}
    early: dict[str, str] = {}  # conversion label -> its early rate's key (drawn if alerted on)
    spans_of: dict[str, list[tuple[float, float]]] = {}
    for label in labels:
        key = watched_series(label, engine.config.levels)
        if key is not None:
            plotted[label.name] = key
            around = (label.start - 6 * 3600, label.end + 3 * 3600)
            spans_of.setdefault(key, []).append(around)
            metric, series = parse_series_key(key)
            if metric == "conversion":
                early[label.name] = series_key(metric, {**series, WITHIN: str(EARLY_MINUTES)})
                spans_of.setdefault(early[label.name], []).append(around)
    history: dict[str, list[Row]] = {k: [] for k in spans_of}
    parsed = {k: parse_series_key(k) for k in spans_of}

    def observe(ts: float, eng: DetectionEngine) -> None:
        for key, windows in spans_of.items():
            if not any(a <= ts <= b for a, b in windows):
                continue
            s = eng.series.get(key)
            if s is not None and s.last is not None:
                # a rate without users in this window measured nothing: no row (not the last
                # value again)
                if s.metric == "volume" or s.last_active == ts:
                    history[key].append((ts, *s.last, s.last_weight))
            elif s is None:  # not modelled as such: the sum of the finest series inside it
                metric, want = parsed[key]
                rows = [
                    x.last
                    for x in eng.series.values()
                    if x.metric == metric and x.last is not None and len(x.series) == 3
                    and "event" in x.series and compatible(want, x.series)
                ]  # fmt: skip
                if rows:
                    sums = [sum(r[i] for r in rows) for i in range(4)]
                    history[key].append((ts, *sums, max(r[4] for r in rows), 1.0))

    engine.observers.append(observe)
    alerts: list[Anomaly] = []
    count = 0

    def lines():
        nonlocal count
        hour, hours = "", 0
        for envelope in envelopes:
            count += 1
            if envelope["received_at"][:13] != hour:
                hour, hours = envelope["received_at"][:13], hours + 1
                progress(float(hours))
            yield orjson.dumps(envelope)

    with mock.patch.object(replay_module, "make_engine", lambda *args: engine):
        replay_module.replay(plan, lines(), annotations=annotations, on_alert=alerts.append)
    result = score(labels, alert_spans(alerts), days)
    for name, key in early.items():
        plotted[name] = charted(plotted[name], key, result.found.get(name), bool(history[key]))
    return BacktestRun(seed, result, alerts, history, plotted, count)
