"""A backtest run: simulated traffic with labelled incidents → the offline replay (the same code
as the streaming path) → the detection engine → scores and the charted series of every incident.

`run_backtest` uses the ecommerce simulator (`streams.simulator`) and an incident schedule;
`run_profile_backtest` a profile of the independent generator (`simulation.profiles`: its own
plan, traffic and incidents); `replay_scored` any envelopes and labels. The scoring itself is pure
and lives in `detectors.backtest`; this module drives it, so it sits on the service side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

import streams.replay as replay_module
from detectors.annotations import Annotation
from detectors.backtest import AlertSpan, Label, Row, Score, alert_spans, score
from detectors.engine import DetectionEngine
from detectors.records import WITHIN, Anomaly, epoch_seconds
from detectors.rollup import compatible, parse_series_key, series_key
from simulation.generator import generate
from simulation.profiles import get_profile, scenario
from streams.simulator.incidents import load_incidents
from streams.simulator.traffic import simulate
from streams.windows import EARLY_MINUTES
from tracking_plan.loader import load_plan


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

    replay_module.replay(
        plan, lines(), annotations=annotations, engine=engine, on_alert=alerts.append
    )
    result = score(labels, alert_spans(alerts), days)
    for name, key in early.items():
        plotted[name] = charted(plotted[name], key, result.found.get(name), bool(history[key]))
    return BacktestRun(seed, result, alerts, history, plotted, count)
