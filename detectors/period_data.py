"""Sums over a period and the same hours of earlier periods, and how to compare them: the data
`detectors.verdict` judges (pure). See `detectors.verdict` for what the verdict makes of it."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from detectors.annotations import Annotation

DAY = 86400.0
WEEK_DAYS = 7
Z_MOVE = 2.5  # spreads a move needs
MIN_CHANGE = 0.15  # and this relative change
GONE = 5.0  # nothing where at least this many were expected is a fall whatever the spread
RELEASE_WINDOW = 2 * DAY  # a version first seen this long before the period "started just before"

Side = Literal["tracking", "real change", "traffic quality", "unclear"]
SIDES: tuple[Side, ...] = ("tracking", "real change", "traffic quality")
FIELDS = ("count", "users", "violations", "quarantined", "repeats", "numerator", "denominator")


@dataclass(slots=True)
class Totals:
    """Sums over some windows of one series (users: the sum of each window's users)."""

    count: float = 0.0
    users: float = 0.0
    violations: float = 0.0
    quarantined: float = 0.0
    repeats: float = 0.0
    numerator: float = 0.0
    denominator: float = 0.0

    def add(self, other: Totals) -> None:
        for name in FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(slots=True)
class Cell:
    """One series: its kind, labels and its sums per shift (0: the period itself)."""

    kind: str  # volume, conversion, activity
    labels: dict[str, str]
    shifts: dict[int, Totals] = field(default_factory=dict)
    planned: bool = True
    codes: dict[str, int] = field(default_factory=dict)  # violation codes in the period

    def get(self, k: int) -> Totals:
        return self.shifts.get(k) or _EMPTY


_EMPTY = Totals()


@dataclass(frozen=True, slots=True)
class Scope:
    """What a marketer asks about; None: any."""

    event: str | None = None
    source: str | None = None
    platform: str | None = None
    app_version: str | None = None
    funnel: str | None = None

    def matches(self, labels: dict[str, str], *, with_event: bool = True) -> bool:
        if with_event and self.event is not None and labels.get("event") != self.event:
            return False
        for key in ("source", "platform", "app_version"):
            wanted = getattr(self, key)
            if wanted is not None and labels.get(key) != wanted:
                return False
        return True

    def describe(self) -> str:
        what = self.event or (f"the {self.funnel} funnel" if self.funnel else "all events")
        parts = [f"{k.replace('_', ' ')} {v}" for k, v in self._dims() if v is not None]
        return what + (" on " + ", ".join(parts) if parts else "")

    def describe_where(self) -> str:
        """The sources (platform, version) asked about, in words."""
        parts = [f"{k.replace('_', ' ')} {v}" for k, v in self._dims() if v is not None]
        return ", ".join(parts) if parts else "every source"

    def _dims(self) -> list[tuple[str, str | None]]:
        return [
            ("source", self.source),
            ("platform", self.platform),
            ("app_version", self.app_version),
        ]


@dataclass
class PeriodData:
    """Everything the verdict reads (see the module docstring)."""

    start: float
    end: float
    step: float  # seconds between two shifts (a day, or whole days for longer periods)
    shifts: list[int]  # earlier periods the history fully covers
    cells: list[Cell]
    first_seen: dict[tuple[str, str], float] = field(default_factory=dict)  # (source, version)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[Annotation] = field(default_factory=list)
    history_start: float | None = None
    scale: float = 1.0  # the period's length over a shift's (days before a long period)


@dataclass(slots=True)
class Move:
    """Observed against expected for one sum."""

    observed: float
    expected: float | None  # None: no earlier period to compare with
    spread: float = 0.0
    days: int = 0

    @property
    def z(self) -> float:
        if self.expected is None:
            return 0.0
        return (self.observed - self.expected) / max(self.spread, 1e-9)

    @property
    def direction(self) -> int:
        """+1 rose, -1 fell, 0 no clear move (or nothing to compare with)."""
        if self.expected is None:
            return 0
        if self.observed == 0 and self.expected >= GONE:
            return -1  # none where 5 or more were due: chance gives that less than 1 % of times
        diff = self.observed - self.expected
        if abs(diff) < MIN_CHANGE * max(self.expected, 1.0) or abs(self.z) < Z_MOVE:
            return 0
        return 1 if diff > 0 else -1

    @property
    def ratio(self) -> float:
        if not self.expected:
            return math.inf if self.observed else 1.0
        return self.observed / self.expected


@dataclass
class Evidence:
    side: Side | Literal["context"]
    weight: float
    text: str


# ---------------------------------------------------------------------------- baseline


class Shifts(list[int]):
    """The earlier periods compared with; `scale`: the period's length over theirs."""

    scale: float = 1.0


def chosen_shifts(data: PeriodData) -> tuple[Shifts, str]:
    """The earlier periods to compare with, and how they were chosen (in words)."""
    chosen, text = _chosen(data)
    out = Shifts(chosen)
    out.scale = data.scale
    if data.scale != 1.0 and chosen:
        text = f"the {len(chosen)} whole days before, scaled to the period's {data.scale:g} days"
    return out, text


def _chosen(data: PeriodData) -> tuple[list[int], str]:
    shifts = sorted(data.shifts)
    if not shifts:
        return [], "no earlier period in the history to compare with"
    days = data.step / DAY
    if days == 1:
        same_day = [k for k in shifts if k % WEEK_DAYS == 0]
        if len(same_day) >= 3:
            return (
                same_day,
                f"the same hours on the same weekday of the previous {len(same_day)} weeks",
            )
        kind = _weekend(data.start)
        same_kind = [k for k in shifts if _weekend(data.start - k * DAY) == kind]
        if len(same_kind) >= 2:
            label = "weekend days" if kind else "weekdays"
            return same_kind, f"the same hours of the previous {len(same_kind)} {label}"
        return (
            shifts,
            f"the same hours of the previous {len(shifts)} day{'s' if len(shifts) > 1 else ''}",
        )
    return (
        shifts,
        f"the {len(shifts)} previous period{'s' if len(shifts) > 1 else ''} of {days:g} days",
    )


def _weekend(moment: float) -> bool:
    return datetime.fromtimestamp(moment, UTC).weekday() >= 5


def trimmed_mean(values: list[float]) -> float:
    if len(values) >= 4:
        values = sorted(values)[1:-1]
    return sum(values) / len(values)


def compare(cells: Iterable[Cell], shifts: list[int], attr: str = "count") -> Move:
    """Observed (shift 0) against expected (the shifts) of the sum of `attr` over `cells`."""
    cells = list(cells)
    observed = sum(getattr(c.get(0), attr) for c in cells)
    if not shifts:
        return Move(observed, None)
    scale = getattr(shifts, "scale", 1.0)
    base = [scale * sum(getattr(c.get(k), attr) for c in cells) for k in shifts]
    expected = trimmed_mean(base)
    var = 0.0
    if len(base) >= 2:
        mean = sum(base) / len(base)
        var = sum((b - mean) ** 2 for b in base) / (len(base) - 1)
    spread = math.sqrt(max(expected, 1.0) + var)
    return Move(observed, expected, spread, len(shifts))


def compare_rate(cells: Iterable[Cell], shifts: list[int], num: str, den: str) -> Move:
    """A rate num/den in the period against the earlier periods' pooled rate, as counts of
    `num` (expected = the period's `den` times the usual rate). Spread: the period's binomial
    noise, the pooled rate's own (few earlier users make it loose) and how much the earlier
    periods' rates differ beyond their binomial noise (`between_rate_variance`)."""
    cells = list(cells)
    n_obs = sum(getattr(c.get(0), num) for c in cells)
    d_obs = sum(getattr(c.get(0), den) for c in cells)
    if not shifts:
        return Move(n_obs, None)
    per = [
        (sum(getattr(c.get(k), num) for c in cells), sum(getattr(c.get(k), den) for c in cells))
        for k in shifts
    ]
    n_base = sum(n for n, _ in per)
    d_base = sum(d for _, d in per)
    if d_base <= 0 or d_obs <= 0:
        return Move(n_obs, None)
    rate = min(1.0, n_base / d_base)
    expected = d_obs * rate
    binomial = rate * (1 - rate)
    var = (
        d_obs * binomial
        + d_obs**2 * binomial / d_base
        + d_obs**2 * between_rate_variance(per, rate)
    )
    return Move(n_obs, expected, math.sqrt(max(var, 1.0)), len(shifts))


def between_rate_variance(per: list[tuple[float, float]], rate: float) -> float:
    """How much a rate varies from period to period beyond binomial noise: the method-of-
    moments estimate (DerSimonian–Laird) from the earlier periods' (numerator, denominator);
    0 when they differ no more than their sizes explain, or are fewer than two."""
    rows = [(n, d) for n, d in per if d > 0]
    binomial = rate * (1 - rate)
    if len(rows) < 2 or binomial <= 0:
        return 0.0
    weights = [d / binomial for _, d in rows]
    q = sum(w * (n / d - rate) ** 2 for w, (n, d) in zip(weights, rows, strict=True))
    total = sum(weights)
    scale = total - sum(w * w for w in weights) / total
    return max(0.0, (q - (len(rows) - 1)) / scale) if scale > 0 else 0.0


ALL = "(every event)"


def source_totals(cells: list[Cell]) -> list[Cell]:
    """The volume of every event per source, platform and app version: the "total" cells the
    history gives (its per-source sums), else summed here from the volume cells."""
    given = [c for c in cells if c.kind == "total"]
    if given:
        return given
    out: dict[tuple[str, str, str], Cell] = {}
    for c in cells:
        if c.kind != "volume":
            continue
        key = _dims_key(c.labels)
        into = out.get(key)
        if into is None:
            labels = {"event": ALL, "source": key[0], "platform": key[1], "app_version": key[2]}
            into = out[key] = Cell("total", labels)
        for k, t in c.shifts.items():
            into.shifts.setdefault(k, Totals()).add(t)
    return list(out.values())


def _dims_key(labels: dict[str, str]) -> tuple[str, str, str]:
    return (labels.get("source", ""), labels.get("platform", ""), labels.get("app_version", ""))


def rest_of(
    totals: list[Cell], volume: list[Cell], event: str, keep: Callable[[dict[str, str]], bool]
) -> list[Cell]:
    """Every event but `event`, per source, platform and app version kept by `keep`."""
    own: dict[tuple[str, str, str], list[Cell]] = {}
    for c in volume:
        if c.labels.get("event") == event and keep(c.labels):
            own.setdefault(_dims_key(c.labels), []).append(c)
    out = []
    for t in totals:
        if not keep(t.labels):
            continue
        cell = Cell("total", t.labels)
        mine = own.get(_dims_key(t.labels), [])
        for k, tot in t.shifts.items():
            left = Totals()
            left.add(tot)
            for c in mine:
                for name in FIELDS:
                    setattr(left, name, getattr(left, name) - getattr(c.get(k), name))
            cell.shifts[k] = left
        out.append(cell)
    return out


def beyond_chance(observed: float, expected: float) -> bool:
    """More than chance gives: 3 spreads of counting noise above what was expected."""
    return observed - expected >= 3 * math.sqrt(max(expected, 1.0))


def compare_total(cells: list[Cell], shifts: list[int]) -> Move:
    """Events that arrived, valid or quarantined."""
    merged = []
    for c in cells:
        copy = Cell(
            c.kind,
            c.labels,
            {k: Totals(count=t.count + t.quarantined) for k, t in c.shifts.items()},
        )
        merged.append(copy)
    return compare(merged, shifts)


# ---------------------------------------------------------------------------- words


def n_text(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.1f}".rstrip("0").rstrip(".")


def signed_text(value: float) -> str:
    return ("+" if value >= 0 else "−") + n_text(abs(value))


def pct_text(value: float) -> str:
    return f"{100 * value:.0f} %"


def ratio_text(ratio: float) -> str:
    if ratio == math.inf:
        return "from nothing"
    return f"{ratio:.2f}×"


def clock_text(moment: float | None) -> str:
    if moment is None:
        return "?"
    return datetime.fromtimestamp(moment, UTC).strftime("%a %d %b %H:%M UTC")
