"""Roll fine window records up to the levels the engine models, keeping the fine breakdown.

The aggregator emits one record per event × source × platform × app_version (and per funnel step
pair × source × platform for conversions). Modelling every combination would be noisy and large,
so the engine models sums at a few monitored levels and keeps, for each modelled series, how its
current window splits by the remaining dimensions (for attribution).

Metrics:
- "volume": events of an event that arrived; observed = arrivals (see below)
- "violation": share of arrived events breaking the plan; observed = violations / arrivals
- "conversion": step-to-step conversion;   observed = numerator / denominator, weight = denominator
- "activity": distinct users sending anything on a source; observed = users

`count` holds the events forwarded as valid (flagged ones included), `quarantined` the others,
`violations` the events with a violation, forwarded (flag mode) or quarantined (block mode):
tracking sent `count + quarantined` events (`arrivals`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from detectors.attribution import Breakdown
from detectors.records import COMPANION, WITHIN, WindowRecord

Metric = Literal["volume", "violation", "conversion", "activity"]
COUNTS = ("volume", "activity")  # the metrics that are counts (the others are rates)
NOT_DIMENSIONS = ("funnel",)  # labels that name a series but never split it
MISSING = "(none)"


@dataclass(frozen=True, slots=True)
class Level:
    """A monitored level: the metric and the series keys kept (the others are summed over)."""

    metric: Metric
    dims: tuple[str, ...]


# A source's platform follows from the source, so keeping it splits nothing but names the series.
# A whole source (Level("volume", ("source", "platform"))) can be added; it is left out by
# default because all of a source's sessions together are very bursty at night (backtest: most
# false alerts came from it) and per-event series already show a source-wide outage.
DEFAULT_LEVELS: tuple[Level, ...] = (
    Level("volume", ("event",)),
    Level("volume", ("event", "source", "platform")),
    Level("violation", ("event",)),
    Level("conversion", ("from_event", "to_event")),
    Level("conversion", ("from_event", "to_event", "source", "platform")),
    # early conversion records (within a few minutes, published sooner) are series of their own
    Level("conversion", ("from_event", "to_event", WITHIN)),
    Level("conversion", ("from_event", "to_event", "source", "platform", WITHIN)),
    # distinct active users (activity records): a source's running sessions going silent is an
    # outage, seen within minutes (events of each kind take longer to fall short)
    Level("activity", ("source", "platform")),
    Level("activity", ()),
)


@dataclass(slots=True)
class Rolled:
    """One modelled series in one window."""

    key: str
    metric: Metric
    series: dict[str, str]
    numerator: float = 0.0  # count / violations / converted users
    denominator: float = 0.0  # unused / count / users who did the first step
    users: float = 0.0  # volume: distinct users (summed over the fine records)
    arrivals: float = 0.0  # volume: of them, not in the series the window before (visits)
    again: float = 0.0  # activity: users of the window before active again in this one ...
    before: float = 0.0  # ... of the users of the window before (sessions running)
    planned: bool = True
    codes: dict[str, int] = field(default_factory=dict)
    breakdown: Breakdown = field(default_factory=dict)

    @property
    def observed(self) -> float:
        if self.metric in COUNTS:
            return self.numerator
        return self.numerator / self.denominator if self.denominator > 0 else 0.0

    @property
    def weight(self) -> float:
        return 1.0 if self.metric in COUNTS else self.denominator


def series_key(metric: str, series: dict[str, str]) -> str:
    """`metric|k=v|k=v` with keys sorted: stable and readable."""
    return "|".join([metric, *(f"{k}={v}" for k, v in sorted(series.items()))])


def parse_series_key(key: str) -> tuple[str, dict[str, str]]:
    """The metric and the series of a `series_key` (its inverse)."""
    metric, *pairs = key.split("|")
    return metric, dict(p.split("=", 1) for p in pairs if "=" in p)


def compatible(a: dict[str, str], b: dict[str, str]) -> bool:
    """True when two series can be about the same thing: no key has different values."""
    return all(b[k] == v for k, v in a.items() if k in b)


def arrivals_of(rec: WindowRecord) -> float:
    """Events sent: forwarded (`count`) and quarantined."""
    return float(rec.count + rec.quarantined)


def rollup(
    records: Iterable[WindowRecord],
    levels: Iterable[Level],
    arrivals: Callable[[WindowRecord], float] = arrivals_of,
) -> dict[str, Rolled]:
    """Sum the fine records of ONE window into the monitored series of every level."""
    levels = tuple(levels)
    out: dict[str, Rolled] = {}
    index: dict[tuple, Rolled] = {}
    for rec in records:
        if rec.revision or rec.series.get("funnel") == COMPANION:
            # late events told where they belong are history, not evidence; the pairs learnt
            # from the traffic are watched by the slice tests, not modelled as series
            continue
        for level in levels:
            if (level.metric == "conversion") != (rec.kind == "conversion"):
                continue
            if (level.metric == "activity") != (rec.kind == "activity"):
                continue
            if (WITHIN in level.dims) != (WITHIN in rec.series):
                continue  # the whole funnel window and the early horizon are never summed
            sent = arrivals(rec) if rec.kind == "volume" else float(rec.count)
            if level.metric == "violation" and sent <= 0:
                continue
            values = tuple(str(rec.series.get(d, MISSING)) for d in level.dims)
            rolled = index.get((level, values))
            if rolled is None:
                series = dict(zip(level.dims, values, strict=True))
                key = series_key(level.metric, series)
                rolled = out.get(key)
                if rolled is None:
                    rolled = out[key] = Rolled(key=key, metric=level.metric, series=series)
                index[(level, values)] = rolled
            num, den = _contribution(level.metric, rec, sent)
            rolled.numerator += num
            rolled.denominator += den
            rolled.users += rec.distinct_users
            rolled.arrivals += rec.arriving_users
            if level.metric == "activity":
                rolled.again += rec.numerator
                rolled.before += rec.denominator
            rolled.planned = rolled.planned and rec.planned
            if level.metric == "violation":
                for code, n in rec.violation_codes.items():
                    rolled.codes[code] = rolled.codes.get(code, 0) + n
            for dim, value in rec.series.items():
                if dim in level.dims or dim in NOT_DIMENSIONS:
                    continue
                slot = rolled.breakdown.setdefault(dim, {})
                old_num, old_den = slot.get(str(value), (0.0, 0.0))
                slot[str(value)] = (old_num + num, old_den + den)
    return out


def _contribution(metric: Metric, rec: WindowRecord, sent: float) -> tuple[float, float]:
    if metric in COUNTS:
        return sent, 0.0
    if metric == "violation":
        return float(min(rec.violations, sent)), sent
    return float(rec.numerator), float(rec.denominator)
