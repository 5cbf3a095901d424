"""Backtest: score alerts against labelled incidents (recall, false alerts, detection latency).

Pure: alert lines in, alert spans and scores out. A whole run (simulated traffic with labelled
incidents → the offline replay → the engine → these scores and one PNG per incident) is driven by
`streams.backtest_run`, on the service side, since it needs the simulators and the replay.

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
  not count. An alert's start is an estimate (a disappearance is dated at the series' last
  arrival, half an hour and more before the stop for an event that comes twice an hour; a
  sparse rate's change can be dated no finer than its trials): an alert that first fired
  during the incident (from its start to its end plus the slack) finds it however early it
  dated the onset; one that started earlier and fired before the incident began was about
  something else.
An alert that finds no label expecting one is a false alert (alerts during an announced
campaign are false alerts too), unless it matches, by the same rule, one of the `related`
deviations a label lists (what the incident itself does to other series, e.g. the extra
`Order Completed` calls of a conversion_up tag are also a volume spike): such an alert is about
a labelled incident; it is counted apart, neither as a find nor as false. Latency: minutes from
the label's start to the first firing of the first alert that finds it.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from detectors.records import Anomaly, Attribution, epoch_seconds

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
    late = label.end + slack_minutes * 60
    if span.started > late:
        return False
    if span.started < label.start - LEAD_MINUTES * 60 and not label.start <= span.fired <= late:
        return False  # it began before, and did not first fire during the incident
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
