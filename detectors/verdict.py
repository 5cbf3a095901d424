"""Is a metric odd because of tracking, or real? The verdict of `trackwatch explain`. Pure.

Input: `PeriodData`, the sums of the series of interest over the period asked about (shift 0)
and over the same hours of earlier periods (shift k: k periods of `step` seconds before; a
period of up to a day is compared with the same hours of earlier days): the asked event's own
series ("volume"), every event's sums per source, platform and app version ("total"; summed
from the volume cells when not given), active users ("activity") and conversions. Output: a
`Verdict`, one of tracking / real change / traffic quality / unclear, a paragraph, the evidence.

Expected = the trimmed mean of the earlier periods (the highest and lowest dropped from four
on): the same weekday when three or more are there, else days of the same kind (weekday or
weekend) when two or more are, else every earlier day. Spread = Poisson noise plus the
earlier periods' own variance. A move is a change of at least 15 % and 2.5 spreads, or none
where five or more were due. A new app version (no past) is compared with its peers.

The rules (each piece of evidence weighs 1, or 2 when it is close to proof):
- tracking: the share of events breaking the plan, or repeating a business key, rose beyond
  chance (repeats: as a good part of the excess); an app version sends fewer of the event
  (or none) than its peers, or than its source sent before, and was released just before;
  the event stopped while the step before went on (or the source's other events did);
  every source fell by more than 80 % at once, or the users active a minute before went
  silent mid-session (lost on the way); the event moved on one source only; a server event
  that mirrors it (usually as many), which no tracker sends, did not move;
- real change: an annotated campaign covers it; every source moved together; the whole
  traffic moved with the funnel's conversions holding; as many more users, each as usual,
  with no more visitors; the mirroring server event moved by about as much;
- traffic quality: the excess came from visitors who did nothing else (the source's active
  users rose with it while its other events did not), or from few users sending many events.
The verdict is the side with at least 2 and twice the weight of any other; else (or when
nothing moved and no strong tracking sign is there) unclear, with what more data would tell.
"""

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


@dataclass
class Verdict:
    verdict: Side
    paragraph: str
    evidence: list[Evidence]
    main: Move
    baseline: str  # how "expected" was made
    scores: dict[str, float]
    alerts: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        m = self.main
        return {
            "verdict": self.verdict,
            "paragraph": self.paragraph,
            "evidence": [
                {"side": e.side, "weight": e.weight, "text": e.text} for e in self.evidence
            ],
            "observed": m.observed,
            "expected": None if m.expected is None else round(m.expected, 2),
            "lower": None if m.expected is None else round(max(0.0, m.expected - 2 * m.spread), 2),
            "upper": None if m.expected is None else round(m.expected + 2 * m.spread, 2),
            "baseline": self.baseline,
            "scores": self.scores,
            "alerts": self.alerts,
        }


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
    `num` (expected = the period's `den` times the usual rate; binomial spread)."""
    cells = list(cells)
    n_obs = sum(getattr(c.get(0), num) for c in cells)
    d_obs = sum(getattr(c.get(0), den) for c in cells)
    if not shifts:
        return Move(n_obs, None)
    n_base = sum(getattr(c.get(k), num) for c in cells for k in shifts)
    d_base = sum(getattr(c.get(k), den) for c in cells for k in shifts)
    if d_base <= 0 or d_obs <= 0:
        return Move(n_obs, None)
    rate = min(1.0, n_base / d_base)
    expected = d_obs * rate
    spread = math.sqrt(max(d_obs * rate * (1 - rate), 1.0) + (0.1 * expected) ** 2)
    return Move(n_obs, expected, spread, len(shifts))


# ---------------------------------------------------------------------------- the verdict


def explain_period(data: PeriodData, scope: Scope) -> Verdict:
    shifts, baseline = chosen_shifts(data)
    volume = [c for c in data.cells if c.kind == "volume"]
    conversions = [
        c for c in data.cells if c.kind == "conversion" and "within_minutes" not in c.labels
    ]
    activity = [c for c in data.cells if c.kind == "activity"]
    totals = source_totals(data.cells)
    ev: list[Evidence] = []

    def sel(pred: Callable[[dict[str, str]], bool], cells: list[Cell] = volume) -> list[Cell]:
        return [c for c in cells if pred(c.labels)]

    event = scope.event
    focus = _funnel_focus(conversions, scope, shifts) if scope.funnel else None
    if focus is not None:  # a funnel: the step pair that moved most
        event = focus[0]
    if event is None:  # every event: the sums per source
        in_scope = sel(lambda labels: scope.matches(labels, with_event=False), totals)
    else:
        in_scope = sel(
            lambda labels: labels.get("event") == event and scope.matches(labels, with_event=False)
        )
    main = compare(in_scope, shifts)
    main_with_q = compare_total(in_scope, shifts)
    if focus is not None:
        event, main, step_text = focus
        ev.append(Evidence("context", 0, step_text))
    if (
        scope.app_version is not None
        and event is not None
        and scope.source is not None
        and (main.expected is None or main.expected < 1)
    ):  # a version new in the history: compared with its peers in the same period
        cross = version_cross(volume, totals, scope.source, scope.app_version, event, shifts)
        if cross is not None:
            main, main_with_q = cross, cross
            baseline = f"what the other versions of {scope.source} send for as much traffic"
    direction = main.direction or main_with_q.direction

    # ---- annotations and alerts: context first
    for note in data.annotations:
        if note.end > data.start and note.start < data.end and _annotation_matches(note, scope):
            ev.append(
                Evidence(
                    "real change", 2, f"the announced campaign “{note.name}” covers this period"
                )
            )
    alerts = [a for a in data.alerts if _alert_matches(a, scope, event)]

    # ---- tracking: the plan's own checks
    total = in_scope
    obs_all = sum(c.get(0).count + c.get(0).quarantined for c in total)
    obs_bad = sum(c.get(0).violations for c in total)
    base_all = sum(c.get(k).count + c.get(k).quarantined for c in total for k in shifts)
    base_bad = sum(c.get(k).violations for c in total for k in shifts)
    usual_bad = base_bad / base_all if base_all else 0.0
    if (
        ((obs_all >= 5 and obs_bad / obs_all >= 0.1) or (obs_bad >= 3 and obs_bad / obs_all >= 0.5))
        and obs_bad / obs_all > 2 * usual_bad + 0.05
        and _beyond_chance(obs_bad, usual_bad * obs_all)
    ):
        codes = _top_codes(total)
        ev.append(
            Evidence(
                "tracking",
                2,
                f"{_pct(obs_bad / obs_all)} of these events break the tracking plan{codes} "
                f"(usually {_pct(base_bad / base_all) if base_all else 'none'})",
            )
        )
    obs_rep = sum(c.get(0).repeats for c in total)
    base_rep = sum(c.get(k).repeats for c in total for k in shifts)
    usual_rep = base_rep / base_all if base_all else 0.0
    extra_rep = obs_rep - usual_rep * obs_all
    excess = main_with_q.observed - (main_with_q.expected or 0.0)
    if (
        obs_rep >= 5
        and extra_rep >= 0.3 * max(excess, 0.2 * obs_all)
        and _beyond_chance(obs_rep, usual_rep * obs_all)
    ):
        ev.append(
            Evidence(
                "tracking",
                2,
                f"{_pct(obs_rep / obs_all)} of these events repeat a business key already "
                f"received (usually {_pct(usual_rep)}): the same purchase or action sent twice",
            )
        )

    # ---- versions: one version alone, or a new one lacking the event
    if scope.app_version is not None or direction:
        ev += _version_evidence(data, scope, volume, totals, event, direction, shifts)

    # ---- the event stopped while what leads to it went on
    if (
        event is not None
        and main.expected is not None
        and main.observed <= 0.05 * main.expected
        and main.expected >= 5
    ):
        before = _step_before(conversions, event, scope)
        if before is not None:
            ev.append(Evidence("tracking", 2, before))
        else:
            others = compare(
                rest_of(
                    totals, volume, event, lambda labels: scope.matches(labels, with_event=False)
                ),
                shifts,
            )
            if others.expected and others.direction >= 0:
                ev.append(
                    Evidence(
                        "tracking",
                        2,
                        f"{event} stopped (none, about {_n(main.expected)} expected) while the "
                        "other events of the same sources went on",
                    )
                )

    # ---- across sources: together, alone
    if event is not None and direction:
        ev += _sources_evidence(volume, event, scope, shifts, direction)

    # ---- the server's view (no tracker feeds it)
    if direction and not _is_server_scope(volume, scope):
        ev += _server_evidence(volume, scope, event, shifts, main)

    # ---- everything at once: lost on the way, or a real audience change
    if event is None and scope.funnel is None and direction:
        ev += _whole_traffic_evidence(totals, activity, conversions, scope, shifts, direction)

    # ---- traffic quality
    if direction > 0 and event is not None:
        sent_twice = any("repeat a business key" in e.text for e in ev)
        ev += _quality_evidence(volume, totals, activity, scope, event, shifts, main, sent_twice)

    scores = {side: sum(e.weight for e in ev if e.side == side) for side in SIDES}
    verdict: Side = "unclear"
    best = max(SIDES, key=lambda s: scores[s])
    rest = max(scores[s] for s in SIDES if s != best)
    if direction == 0 and not any(e.side == "tracking" and e.weight >= 2 for e in ev):
        verdict = "unclear"
    elif scores[best] >= 2 and scores[best] >= 2 * rest:
        verdict = best
    paragraph = _paragraph(verdict, scope, data, main, direction, baseline, ev, alerts, shifts)
    return Verdict(verdict, paragraph, ev, main, baseline, scores, alerts)


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


def _beyond_chance(observed: float, expected: float) -> bool:
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


def _funnel_focus(
    conversions: list[Cell], scope: Scope, shifts: list[int]
) -> tuple[str, Move, str] | None:
    cells = [
        c
        for c in conversions
        if c.labels.get("funnel") == scope.funnel and scope.matches(c.labels, with_event=False)
    ]
    pairs: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        pairs.setdefault((c.labels.get("from_event", ""), c.labels.get("to_event", "")), []).append(
            c
        )
    best: tuple[float, str, Move, str] | None = None
    for (a, b), group in pairs.items():
        move = compare_rate(group, shifts, "numerator", "denominator")
        if move.expected is None:
            continue
        den = sum(c.get(0).denominator for c in group)
        text = (
            f"the step from {a} to {b}: {_n(move.observed)} of {_n(den)} users went on "
            f"(about {_n(move.expected)} usually, {_pct(move.observed / den) if den else '–'} vs "
            f"{_pct(move.expected / den) if den else '–'})"
        )
        if best is None or abs(move.z) > best[0]:
            best = (abs(move.z), b, move, text)
    return None if best is None else (best[1], best[2], best[3])


def _annotation_matches(note: Annotation, scope: Scope) -> bool:
    if note.events and scope.event is not None and scope.event not in note.events:
        return False
    return not (note.sources and scope.source is not None and scope.source not in note.sources)


def _alert_matches(alert: dict[str, Any], scope: Scope, event: str | None) -> bool:
    series = alert.get("series") or {}
    names = {series.get("event"), series.get("from_event"), series.get("to_event")}
    if event is not None and series and event not in names:
        return False
    for key in ("source", "platform", "app_version"):
        wanted = getattr(scope, key)
        if wanted is not None and series.get(key) not in (None, wanted):
            return False
    return True


def _top_codes(cells: list[Cell]) -> str:
    from detectors.explain import CODE_PHRASES

    codes: dict[str, int] = {}
    for c in cells:
        for code, n in c.codes.items():
            codes[code] = codes.get(code, 0) + n
    if not codes:
        return ""
    top = max(codes, key=lambda k: codes[k])
    return f", mostly for {CODE_PHRASES.get(top, top)}"


def version_cross(
    volume: list[Cell],
    totals: list[Cell],
    source: str,
    version: str,
    event: str,
    shifts: list[int] | None = None,
) -> Move | None:
    """`event` on one app version of `source` in the period against what its other versions
    send for the same amount of other events (a cross-section: no history needed); when they
    are too few to tell (every user updated within hours), against what the source sent for
    as many other events in the earlier periods `shifts`."""
    per: dict[str, list[float]] = {}
    for c in totals:
        if c.labels.get("source") == source:
            per.setdefault(c.labels.get("app_version", ""), [0.0, 0.0])[1] += c.get(0).count
    for c in volume:
        if c.labels.get("source") == source and c.labels.get("event") == event:
            row = per.setdefault(c.labels.get("app_version", ""), [0.0, 0.0])
            row[0] += c.get(0).count
            row[1] -= c.get(0).count  # the totals hold it: other events only
    versions = [v for v in per if v not in ("", "unknown")]
    if version not in versions or len(versions) < 2:
        return None
    mine, base = per[version]
    peers_e = sum(per[w][0] for w in versions if w != version)
    peers_b = sum(per[w][1] for w in versions if w != version)
    if peers_e < 10 and shifts:  # peers too quiet to compare with: the source's past
        peers_e = sum(
            c.get(k).count
            for c in volume
            if c.labels.get("source") == source and c.labels.get("event") == event
            for k in shifts
        )
        peers_b = (
            sum(c.get(k).count for c in totals if c.labels.get("source") == source for k in shifts)
            - peers_e
        )
    if peers_b <= 0 or base <= 0 or peers_e < 10:
        return None
    expected = base * peers_e / peers_b
    # counting noise, the peers' own (a rate from few events is loose) and 20 % for versions
    # being used a little differently
    var = max(expected, 1.0) + expected**2 / max(peers_e, 1.0) + (0.2 * expected) ** 2
    return Move(mine, expected, math.sqrt(var), 0)


def _sources_of(volume: list[Cell], scope: Scope, event: str) -> list[str]:
    if scope.source is not None:
        return [scope.source]
    found = {c.labels.get("source") for c in volume if c.labels.get("event") == event}
    return sorted(s for s in found if s and scope.matches({"source": s}, with_event=False))


def _version_evidence(
    data: PeriodData,
    scope: Scope,
    volume: list[Cell],
    totals: list[Cell],
    event: str | None,
    direction: int = 0,
    data_shifts: list[int] | None = None,
) -> list[Evidence]:
    """An app version that sends the event unlike its peers (and was released just before)."""
    if event is None:
        return []
    out: list[Evidence] = []
    for source in _sources_of(volume, scope, event):
        versions = sorted(
            {c.labels.get("app_version", "") for c in totals if c.labels.get("source") == source}
        )
        for v in versions:
            if scope.app_version is not None and v != scope.app_version:
                continue
            move = version_cross(volume, totals, source, v, event, data_shifts)
            if move is None or move.expected is None or move.expected < 5:
                continue
            if move.direction == 0 or abs(move.observed - move.expected) < 0.3 * move.expected:
                continue
            if move.direction > 0:
                continue  # a version sending more (a new feature, its update events) is no
                # sign of broken tracking by itself; sending twice shows in the repeats
            if scope.app_version is None and move.direction != direction:
                continue  # a version going the other way does not explain the change
            mine, expected = move.observed, move.expected
            how = f"sends no {event}" if mine == 0 else f"sends only {_n(mine)} {event}"
            out.append(
                Evidence(
                    "tracking",
                    2,
                    f"app version {v} on {source} {how} where about {_n(expected)} were due "
                    "for its share of the traffic",
                )
            )
            first = data.first_seen.get((source, v))
            if first is not None and data.start - RELEASE_WINDOW <= first <= data.end:
                out.append(
                    Evidence(
                        "tracking",
                        1,
                        f"app version {v} on {source} was released just before (first seen "
                        f"{_clock(first)})",
                    )
                )
    return out


def _step_before(conversions: list[Cell], event: str, scope: Scope) -> str | None:
    """A step leading to `event` (a funnel step or a learnt companion) that went on while
    the users who did it no longer sent `event`."""
    for c_group in _group_pairs(
        conversions,
        lambda labels: labels.get("to_event") == event and scope.matches(labels, with_event=False),
    ).values():
        den = sum(c.get(0).denominator for c in c_group)
        num = sum(c.get(0).numerator for c in c_group)
        if den >= 10 and num <= 0.05 * den:
            before = c_group[0].labels.get("from_event", "the step before")
            sent = "none" if num == 0 else _n(num)
            return (
                f"{_n(den)} users did {before} but {sent} of them sent {event} next: "
                "the step before went on"
            )
    return None


def _group_pairs(
    cells: list[Cell], pred: Callable[[dict[str, str]], bool]
) -> dict[tuple[str, str], list[Cell]]:
    out: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        if pred(c.labels):
            out.setdefault(
                (c.labels.get("from_event", ""), c.labels.get("to_event", "")), []
            ).append(c)
    return out


def _sources_evidence(
    volume: list[Cell], event: str, scope: Scope, shifts: list[int], direction: int
) -> list[Evidence]:
    sources = sorted(
        {c.labels.get("source", "") for c in volume if c.labels.get("event") == event} - {""}
    )
    if len(sources) < 2:
        return []
    moves = {
        s: compare(
            [c for c in volume if c.labels.get("event") == event and c.labels.get("source") == s],
            shifts,
        )
        for s in sources
    }
    sizable = {s: m for s, m in moves.items() if m.expected is not None and m.expected >= 0.5}
    if len(sizable) < 2:
        return []
    # every source in the same direction: each at least 1.5 spreads (the total is significant)
    same = [s for s, m in sizable.items() if m.z * direction >= 1.5]
    still = [s for s, m in sizable.items() if m.direction == 0 and abs(m.ratio - 1) < 0.2]
    if len(same) == len(sizable):
        return [
            Evidence(
                "real change", 1, f"{event} moved the same way on every source ({', '.join(same)})"
            )
        ]
    if scope.source is not None and scope.source in same and len(same) == 1 and still:
        return [
            Evidence(
                "tracking",
                1,
                f"{event} moved on {scope.source} only; {', '.join(still)} stayed as usual",
            )
        ]
    return []


def _is_server_scope(volume: list[Cell], scope: Scope) -> bool:
    return scope.platform == "server" or any(
        c.labels.get("platform") == "server" and c.labels.get("source") == scope.source
        for c in volume
    )


def _server_evidence(
    volume: list[Cell], scope: Scope, event: str | None, shifts: list[int], main: Move
) -> list[Evidence]:
    """A server event (platform "server": no tracker feeds it) that mirrors `event` (usually
    as many, within 30 %, over every source: the same business fact, such as orders and
    captured payments) and whose change matches the one asked about (the server saw it: real)
    or stayed at zero (the server did not see it: tracking). Nothing when the server's noise
    cannot tell the two apart."""
    if event is None or main.expected is None:
        return []
    own = compare(
        [
            c
            for c in volume
            if c.labels.get("event") == event and scope.matches(c.labels, with_event=False)
        ],
        shifts,
    )
    if own.expected is not None:  # the server counts events (orders), not a conversion's users
        main = own
    diff = main.observed - (main.expected or 0.0)
    usual_all = compare([c for c in volume if c.labels.get("event") == event], shifts).expected
    server = [c for c in volume if c.labels.get("platform") == "server"]
    for name in sorted({c.labels.get("event", "") for c in server}):
        move = compare([c for c in server if c.labels.get("event") == name], shifts)
        if move.expected is None or not usual_all or not 0.7 <= move.expected / usual_all <= 1.3:
            continue
        sdiff = move.observed - move.expected
        # counting noise only: a day-level swing moves the client's events and the server's
        # alike, so it cannot tell the two stories apart
        noise = math.sqrt(max(move.expected, 1.0))
        z_none, z_same = sdiff / noise, (sdiff - diff) / noise
        # how much closer the server is to one story than to the other, in spreads: 1.2 is
        # a hint (weight 1), 2.5 close to proof (weight 2)
        lead = abs(z_none) - abs(z_same)
        weight = 2 if abs(lead) >= 2.5 else (1 if abs(lead) >= 1.2 else 0)
        if weight and lead > 0 and abs(z_same) < 1.5:
            return [
                Evidence(
                    "real change",
                    weight,
                    f"the server's {name}, which no tracker sends, moved by about as much "
                    f"({_signed(sdiff)} vs {_signed(diff)}): the change is in the business, not "
                    "in the tracking",
                )
            ]
        if weight and lead < 0 and abs(z_none) < 1.5:
            return [
                Evidence(
                    "tracking",
                    weight,
                    f"the server's {name}, which no tracker sends, did not move "
                    f"({_n(move.observed)} vs about {_n(move.expected)}) while {event} moved by "
                    f"{_signed(diff)}: the server did not see it",
                )
            ]
    return []


def _whole_traffic_evidence(
    volume: list[Cell],
    activity: list[Cell],
    conversions: list[Cell],
    scope: Scope,
    shifts: list[int],
    direction: int,
) -> list[Evidence]:
    out: list[Evidence] = []
    sources = sorted({c.labels.get("source", "") for c in volume if scope.matches(c.labels)} - {""})
    moves = {
        s: compare([c for c in volume if c.labels.get("source") == s], shifts) for s in sources
    }
    sizable = {s: m for s, m in moves.items() if m.expected and m.expected >= 20}
    together = len(sizable) >= 2 and all(m.direction == direction for m in sizable.values())
    running = [c for c in activity if scope.matches(c.labels, with_event=False)]
    keep = compare_rate(running, shifts, "numerator", "denominator")
    funnel = [
        c
        for c in conversions
        if scope.matches(c.labels, with_event=False) and c.labels.get("funnel") != "(companion)"
    ]
    conv = compare_rate(funnel, shifts, "numerator", "denominator")
    lost = keep.direction < 0 and keep.expected and keep.observed < 0.7 * keep.expected
    if (
        direction < 0
        and len(sizable) >= 2
        and all(m.observed < 0.2 * m.expected for m in sizable.values())
    ):
        out.append(
            Evidence(
                "tracking",
                2,
                "every source fell by more than 80 % at once ("
                + ", ".join(
                    f"{s} {_n(m.observed)} vs about {_n(m.expected)}" for s, m in sizable.items()
                )
                + "): audiences do not vanish together within minutes; the collection lost them",
            )
        )
        together = False
    if lost:
        out.append(
            Evidence(
                "tracking",
                2,
                "users active a minute before went silent mid-session: "
                f"{_pct(keep.observed / max(1.0, sum(c.get(0).denominator for c in running)))} "
                "sent anything again (usually "
                f"{_pct(keep.expected / max(1.0, sum(c.get(0).denominator for c in running)))}): "
                "events are lost on the way",
            )
        )
    if together and not lost:
        out.append(
            Evidence(
                "real change",
                1,
                "every source moved together "
                f"({', '.join(f'{s} {_ratio_text(m.ratio)}' for s, m in sizable.items())})",
            )
        )
    den = sum(c.get(0).denominator for c in funnel)
    if conv.expected and direction and den >= 20:
        if conv.direction == 0:
            out.append(
                Evidence(
                    "real change",
                    1,
                    "the funnel's conversions held: more (or fewer) people, behaving as usual",
                )
            )
        elif conv.direction < 0 and direction < 0:
            out.append(
                Evidence(
                    "tracking",
                    1,
                    "users' next funnel steps went missing too (conversions fell with the volume)",
                )
            )
    return out


def _quality_evidence(
    volume: list[Cell],
    totals: list[Cell],
    activity: list[Cell],
    scope: Scope,
    event: str,
    shifts: list[int],
    main: Move,
    sent_twice: bool = False,
) -> list[Evidence]:
    """Excess events from visitors who did nothing else, or from few users."""
    out: list[Evidence] = []
    cells = [c for c in volume if scope.matches(c.labels)]
    users = compare(cells, shifts, "users")
    if main.expected is None or users.expected is None:
        return out
    excess = main.observed - main.expected
    excess_users = users.observed - users.expected
    sources = {c.labels.get("source") for c in cells}
    others = compare(
        rest_of(
            totals,
            volume,
            event,
            lambda labels: (
                labels.get("source") in sources and scope.matches(labels, with_event=False)
            ),
        ),
        shifts,
    )
    active = compare(
        [
            c
            for c in activity
            if c.labels.get("source") in sources and scope.matches(c.labels, with_event=False)
        ],
        shifts,
    )
    if (
        excess_users > 0
        and active.direction > 0
        and active.expected is not None
        and active.observed - active.expected >= 0.5 * excess_users
        and excess >= 10
        and (others.expected or 0) > 0
        and others.direction <= 0
        and others.ratio - 1 <= 0.25 * (main.ratio - 1)  # the rest did not follow
    ):
        out.append(
            Evidence(
                "traffic quality",
                2,
                f"the extra {event} came from {_n(active.observed - active.expected)} more "
                "active user-minutes who sent nothing else (the other events stayed at "
                f"{_ratio_text(others.ratio)})",
            )
        )
    per_user_now = main.observed / max(users.observed, 1.0)
    per_user_usual = main.expected / max(users.expected, 1.0)
    if (
        excess > 0
        and not sent_twice  # the same users' repeated keys: told as tracking already
        and per_user_now > 2 * per_user_usual
        and excess_users < 0.25 * excess
    ):
        out.append(
            Evidence(
                "traffic quality",
                1,
                f"few users sent most of the excess: {per_user_now:.1f} events per user a minute "
                f"(usually {per_user_usual:.1f})",
            )
        )
    if (
        main.direction > 0
        and per_user_now <= 1.3 * per_user_usual
        and active.direction <= 0
        and users.direction > 0
    ):
        out.append(
            Evidence(
                "real change",
                1,
                f"as many more users sent it ({_n(users.observed)} user-minutes vs about "
                f"{_n(users.expected)}), each as often as usual, while no more visitors came: "
                "the usual visitors doing more of it",
            )
        )
    return out


# ---------------------------------------------------------------------------- words


def _paragraph(
    verdict: Side,
    scope: Scope,
    data: PeriodData,
    main: Move,
    direction: int,
    baseline: str,
    ev: list[Evidence],
    alerts: list[dict[str, Any]],
    shifts: list[int],
) -> str:
    what = scope.describe()
    span = f"from {_clock(data.start)} to {_clock(data.end)}"
    if main.expected is None:
        level = f"{what} {span}: {_n(main.observed)} (nothing to compare with: {baseline})"
    else:
        how = {1: "higher than", -1: "lower than", 0: "in line with"}[direction]
        level = (
            f"{what} {span} was {how} expected: {_n(main.observed)} vs about "
            f"{_n(main.expected)} ({baseline})"
        )
    reasons = [e.text for e in sorted(ev, key=lambda e: -e.weight) if e.side == verdict][:2]
    if verdict == "tracking":
        head = "This looks like a tracking problem, not a real change"
    elif verdict == "real change":
        head = "This looks like a real change in what people do"
    elif verdict == "traffic quality":
        head = "This looks like low-quality traffic (bots or a few users), not more customers"
    else:
        head = "It is not clear yet whether this is tracking or real"
        reasons = [_more_data(main, data, shifts)]
    if not scope.event:  # an event's name is written as the plan spells it
        level = level[0].upper() + level[1:]
    text = f"{head}. {level}."
    if reasons:
        text += (
            " "
            + "; ".join(r[0].upper() + r[1:] if i == 0 else r for i, r in enumerate(reasons))
            + "."
        )
    if alerts:
        text += f" {len(alerts)} alert{'s' if len(alerts) > 1 else ''} covered this period."
    return text


def _more_data(main: Move, data: PeriodData, shifts: list[int]) -> str:
    if not shifts:
        return (
            "the history holds no earlier period to compare with; one more day of history "
            "(better a week) would tell"
        )
    z = abs(main.z)
    hours = (data.end - data.start) / 3600
    if z >= Z_MOVE:
        return (
            f"the change is clear ({_ratio_text(main.ratio)} the usual) but not yet what caused "
            "it: over a period two to four times as long, the per-source and server counts "
            "would tell"
        )
    if z < 0.5:
        return (
            f"the metric moved within its usual range; nothing to explain over these {hours:.1f} h"
        )
    need = hours * ((Z_MOVE / z) ** 2 - 1)
    return (
        f"the move is within what chance gives over {hours:.1f} h; about {need:.0f} more "
        "hours at this level would tell"
    )


def _n(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.1f}".rstrip("0").rstrip(".")


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "−") + _n(abs(value))


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %"


def _ratio_text(ratio: float) -> str:
    if ratio == math.inf:
        return "from nothing"
    return f"{ratio:.2f}×"


def _clock(moment: float | None) -> str:
    if moment is None:
        return "?"
    return datetime.fromtimestamp(moment, UTC).strftime("%a %d %b %H:%M UTC")
