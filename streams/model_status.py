"""Are the models still learning? A summary of a `DetectionEngine` for people and for Prometheus.

Each series' model learns for its first stretch of event time (volumes a day, rates six hours and
enough users) and does not alert meanwhile. Without this summary a first run looks broken: no
anomaly, and nothing says why. It reads only the engine's public state (`series`, each model's
`is_learning`, `first_ts` and `warmup_seconds`) and works on any engine that has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

BACKLOG = 600.0  # event time this far behind the wall clock: the models read old traffic


@dataclass(frozen=True)
class ModelStatus:
    """How many series are watched, how many still learn, and until when (event time)."""

    series: int = 0
    learning: int = 0
    learning_until: float | None = None  # when the series learning now may alert (epoch s)
    event_time: float | None = None  # end of the last window the models saw

    @property
    def ready(self) -> int:
        return self.series - self.learning

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        return {
            "series": self.series,
            "learning": self.learning,
            "ready": self.ready,
            "learning_until": _iso(self.learning_until),
            "event_time": _iso(self.event_time),
            "summary": self.summary(now),
        }

    def summary(self, now: float | None = None) -> str:
        """One line for a banner or a log, e.g. 'learning until Tue 14:05 UTC (…)'. With `now`
        (wall clock), says so when the models are reading a backlog (history, a catch-up)."""
        if self.series == 0:
            return "waiting for traffic: models learn from the first day of events, then alert"
        backlog = ""
        if now is not None and self.event_time is not None and now - self.event_time > BACKLOG:
            behind = (now - self.event_time) / 3600
            backlog = f"reading a backlog ({behind:.1f} h behind, at {_human(self.event_time)}); "
        if self.learning == 0:
            return f"{backlog}watching {self.series:,} series, all past learning"
        until = _human(self.learning_until) if self.learning_until is not None else "?"
        if self.learning * 2 >= self.series:
            return (
                f"{backlog}learning until {until} (event time; {self.learning:,} of "
                f"{self.series:,} series learning): no alerts before"
            )
        return (
            f"{backlog}watching {self.series:,} series; {self.learning:,} newer ones learn "
            f"until {until}"
        )


def model_status(engine: Any) -> ModelStatus:
    """The status of `engine` (None or an engine that saw no window: no series)."""
    if engine is None:
        return ModelStatus()
    last_ts = getattr(engine, "last_ts", None)
    if last_ts is None:
        return ModelStatus()
    window = getattr(engine, "window", None) or 60.0
    learning = 0
    until: float | None = None
    series = list(getattr(engine, "series", {}).values())
    for s in series:
        model = s.model
        if not model.is_learning(last_ts):
            continue
        learning += 1
        first = getattr(model, "first_ts", None)
        warmup = getattr(model, "warmup_seconds", None)
        if first is not None and warmup is not None:
            # not before its warm-up, and never in the past: it still learns now
            ends = max(float(first) + float(warmup), float(last_ts) + window)
            until = ends if until is None else max(until, ends)
    return ModelStatus(len(series), learning, until, float(last_ts) + window)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _human(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%a %d %b %H:%M UTC")
