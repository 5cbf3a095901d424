"""Records that flow into and out of the detectors. Pure data, JSON-friendly.

Times are UTC epoch seconds (floats) inside the detectors; ISO-8601 strings only at the edges
(ALERTS.jsonl, the `anomalies` topic, the API).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal


def epoch_seconds(value: str | float) -> float:
    """Seconds since the epoch of a number, a numeric string or an ISO-8601 time (naive: UTC)."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


SeriesKind = Literal["volume", "conversion", "activity"]
# The label of an early conversion record: users who did the next step within this many minutes
# (a string), published that soon instead of after the whole funnel window.
WITHIN = "within_minutes"
# The `funnel` label of the conversion records of a companion pair (learnt from the traffic).
COMPANION = "(companion)"
AnomalyKind = Literal[
    "spike",
    "drop",
    "disappeared",
    "new_event",
    "conversion_up",
    "conversion_down",
    "violation_surge",
]
AlertState = Literal["pending", "firing", "resolved"]


@dataclass(slots=True)
class WindowRecord:
    """What the aggregate stage emits for one series and one closed event-time window.

    Volume series: `series` = {"event": name, <dim>: value, ...} (dims such as source, platform,
    app_version), `count` events, `distinct_users`, `violations` = events of this series that broke
    the plan (quarantined or flagged) with `violation_codes` counting each code once per event,
    `repeats` = events of this series (forwarded or quarantined) that repeat a business key seen
    within its horizon under another messageId (a plan `unique` key, or the automatic "same
    payload" key of events that declare none: see `tracking_plan.business_keys`).
    Conversion series: `series` = {"from_event", "to_event", <dims>}, `kind` = "conversion",
    `denominator` = users who did `from_event`, `numerator` = those of them who then did
    `to_event` within the funnel's window; `count` = numerator. An early conversion record is
    the same count within fewer minutes (`series[WITHIN]`), published that much sooner;
    `series["app_version"]` is the first step's. Companion pairs (learnt from the traffic, see
    `streams.companions`) are conversion series with `series["funnel"]` = "(companion)".
    Activity series: `kind` = "activity", `series` = {"source", "platform", "app_version"},
    `count` = `distinct_users` = users who sent any event on that source in the window;
    `denominator` = users of the previous few windows, `numerator` = those of them who sent
    again in this one (sessions still running).
    `arrivals` (volume): of the `distinct_users`, those who did not send this series' event in
    the window before (a visit of several minutes counts once, in its first: summed over
    windows they count visits, where `distinct_users` count a user once per minute); None in
    records from before it was counted (then read as `distinct_users`).
    A revision (`revision` = True) is a volume record of a window already published: what
    arrived for it late (`count`, `violations`, `violation_codes`, `repeats`; `distinct_users`
    0), since the last revision of the same series and window.
    """

    series: dict[str, str]
    window_start: float
    window_end: float
    count: int = 0
    distinct_users: int = 0
    violations: int = 0
    violation_codes: dict[str, int] = field(default_factory=dict)
    kind: SeriesKind = "volume"
    numerator: int = 0
    denominator: int = 0
    planned: bool = True  # False for events the plan does not know (candidates for new_event)
    repeats: int = 0  # volume: events repeating a business key under another messageId
    revision: bool = False  # late events of a window already published (never a new window)
    quarantined: int = 0  # volume: events quarantined (not in `count`): count + this arrived
    arrivals: int | None = None  # volume: users not seen in this series the window before

    @property
    def arriving_users(self) -> int:
        """`arrivals`, or `distinct_users` in a record made before arrivals were counted."""
        return self.distinct_users if self.arrivals is None else self.arrivals

    def series_key(self) -> str:
        """A stable, human-readable key: `kind|k=v|k=v` with keys sorted."""
        parts = [f"{k}={v}" for k, v in sorted(self.series.items())]
        return "|".join([self.kind, *parts])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowRecord:
        """From `to_dict` output; fields added since (such as `revision`) take their defaults."""
        return cls(**data)


@dataclass(slots=True)
class Attribution:
    """How much of a deviation one dimension value explains (shares of one dimension sum to ~1)."""

    dimension: str
    value: str
    share: float


@dataclass(slots=True)
class Anomaly:
    """An alert about one series: the ALERTS.jsonl line and the `anomalies` topic value."""

    id: str
    kind: AnomalyKind
    series: dict[str, str]
    state: AlertState
    started_at: str  # ISO-8601 UTC
    updated_at: str
    ended_at: str | None
    observed: float
    expected: float
    lower: float
    upper: float
    score: float
    explanation: str
    attribution: list[Attribution] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-friendly record, numbers rounded (7 significant digits, shares to 4
        decimals): two runs over the same input write the same bytes."""
        data = asdict(self)
        for key in ("observed", "expected", "lower", "upper", "score"):
            data[key] = _round(data[key])
        for item in data["attribution"]:
            item["share"] = round(item["share"], 4)
        return data


def _round(value: float) -> float:
    """`value` to 7 significant digits (a float's last bits depend on the order of sums)."""
    return float(f"{value:.7g}")
