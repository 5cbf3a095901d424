"""Read-only questions to the history store (`streams.history`): what `trackwatch explain`, the
page and its API ask. Each opens no connection of its own: pass a `sqlite3.Connection`."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from detectors.annotations import Annotation
from detectors.records import epoch_seconds
from detectors.verdict import (
    ALL,
    Cell,
    PeriodData,
    Scope,
    Totals,
    Verdict,
    chosen_shifts,
    explain_period,
)

DAY = 86400
LOOKBACK_DAYS = 28  # earlier periods an explanation compares with
MINUTE_LIMIT = 6 * 3600  # periods up to this long read minute windows; longer ones hourly sums
MAX_PERIOD = 35 * DAY
MAX_SHIFTS = 7  # earlier periods compared with, at most
FEW_SERIES = 300  # up to this many series are read by their key, more by the time index

_SUMS = (
    "sum(count), sum(users), sum(violations), sum(quarantined), sum(repeats), "
    "sum(numerator), sum(denominator)"
)


class QueryError(ValueError):
    """A question the history cannot answer as asked (the message says what to change)."""


@dataclass(frozen=True)
class SeriesRow:
    id: int
    kind: str
    labels: dict[str, str]
    planned: bool


def series_table(db: sqlite3.Connection) -> dict[int, SeriesRow]:
    rows = db.execute("SELECT id, kind, labels, planned FROM series").fetchall()
    return {r[0]: SeriesRow(r[0], r[1], orjson.loads(r[2]), bool(r[3])) for r in rows}


def span(db: sqlite3.Connection) -> tuple[float | None, float | None]:
    """The first and last window starts held."""
    # two statements: SQLite reads a lone min() or max() from the index, both at once by a scan
    (first,) = db.execute("SELECT min(start) FROM windows").fetchone()
    (last,) = db.execute("SELECT max(start) FROM windows").fetchone()
    return first, last


def _wanted(row: SeriesRow, scope: Scope, steps: frozenset[str] = frozenset()) -> bool:
    """Series an explanation of `scope` reads one by one: the event on every source (a
    funnel: its steps), the server's events, activity, and the conversions into or out of the
    event (a funnel: its own; every event: all). The other events are read as sums per
    source (`minute_source`, `hourly_source`)."""
    labels = row.labels
    if row.kind == "activity":
        return True
    if row.kind == "conversion":
        if scope.funnel is not None:  # its steps, and the pairs into or out of its events
            return labels.get("funnel") == scope.funnel or bool(
                {labels.get("from_event"), labels.get("to_event")} & steps
            )
        return scope.event is None or scope.event in (
            labels.get("from_event"),
            labels.get("to_event"),
        )
    if labels.get("platform") == "server":
        return True
    return labels.get("event") == scope.event or labels.get("event") in steps


def sums_by_series(
    db: sqlite3.Connection, table: str, a: int, b: int, ids: Iterable[int] | None = None
) -> Iterator[tuple]:
    """(series_id, count, users, violations, quarantined, repeats, numerator, denominator)
    summed over [a, b) of `table` (windows or hourly), for `ids` only (None: every series;
    the primary key makes a few series cheap to read, whatever the history's size)."""
    col = "start" if table == "windows" else "hour"
    if ids is None:
        yield from db.execute(
            f"SELECT series_id, {_SUMS} FROM {table} WHERE {col} >= ? AND {col} < ? "
            "GROUP BY series_id",
            (a, b),
        )
        return
    ids = list(ids)
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        yield from db.execute(
            f"SELECT series_id, {_SUMS} FROM {table} WHERE series_id IN "
            f"({','.join('?' * len(chunk))}) AND {col} >= ? AND {col} < ? GROUP BY series_id",
            (*chunk, a, b),
        )


def period_data(
    db: sqlite3.Connection,
    scope: Scope,
    start: float,
    end: float,
    lookback_days: int = LOOKBACK_DAYS,
    series: dict[int, SeriesRow] | None = None,
) -> PeriodData:
    """The sums `detectors.verdict` needs: the period (shift 0) and the same hours of up to
    `lookback_days` earlier days (for a period longer than a day: earlier periods of as many
    whole days) that the history fully covers."""
    if not end > start:
        raise QueryError("--to must be after --from")
    if end - start > MAX_PERIOD:
        raise QueryError("the period is longer than the history keeps (35 days): shorten it")
    first, _ = span(db)
    step = DAY * max(1, math.ceil((end - start) / DAY))
    table, unit = ("windows", 60) if end - start <= MINUTE_LIMIT else ("hourly", 3600)
    lo = int(start - start % unit) if unit == 3600 else int(start)
    hi = int(math.ceil(end / unit) * unit) if unit == 3600 else int(end)
    shifts = []
    if first is not None:
        for k in range(1, lookback_days * DAY // step + 1):
            if lo - k * step >= first - (first % unit):
                shifts.append(k)
    length = hi - lo  # the span each shift sums over
    scale = 1.0
    if not shifts and step > DAY and first is not None:
        # a period of days with too little history before it: compare with the whole days
        # before it, scaled to its length
        step, length = DAY, DAY
        scale = (hi - lo) / DAY
        shifts = [k for k in range(1, lookback_days + 1) if lo - k * DAY >= first - first % unit]
    # only the earlier periods the verdict will compare with (the same weekday, else the same
    # kind of day, the most recent first): fewer rows to read
    probe = PeriodData(float(start), float(end), float(step), shifts, [], scale=scale)
    shifts = sorted(chosen_shifts(probe)[0])[:MAX_SHIFTS]
    rows = series if series is not None else series_table(db)
    steps = frozenset(
        name
        for r in rows.values()
        if r.kind == "conversion" and r.labels.get("funnel") == scope.funnel
        for name in (r.labels.get("from_event"), r.labels.get("to_event"))
        if name
    )
    wanted = {sid: r for sid, r in rows.items() if _wanted(r, scope, steps)}
    cells = {sid: Cell(r.kind, r.labels, planned=r.planned) for sid, r in wanted.items()}
    totals: dict[tuple[str, str, str], Cell] = {}
    for k in [0, *shifts]:
        a = lo - k * step
        b = a + (hi - lo if k == 0 else length)
        few = wanted if len(wanted) <= FEW_SERIES else None  # else: by the time index
        for sid, *sums in sums_by_series(db, table, a, b, few):
            cell = cells.get(sid)
            if cell is not None:
                cell.shifts[k] = Totals(*(float(x or 0) for x in sums))
        rollup, col = (
            ("minute_source", "start") if table == "windows" else ("hourly_source", "hour")
        )
        for source, platform, version, *sums in db.execute(
            f"SELECT source, platform, app_version, sum(count), sum(users), sum(violations), "
            f"sum(quarantined), sum(repeats) FROM {rollup} WHERE {col} >= ? AND {col} < ? "
            "GROUP BY 1, 2, 3",
            (a, b),
        ):
            labels = {"event": ALL, "source": source, "platform": platform, "app_version": version}
            key = (source, platform, version)
            cell = totals.get(key) or totals.setdefault(key, Cell("total", labels))
            cell.shifts[k] = Totals(*(float(x or 0) for x in sums))
    if scope.event is not None:
        codes_rows = db.execute(
            "SELECT w.series_id, w.codes FROM windows w JOIN series s ON s.id = w.series_id "
            "WHERE s.event = ? AND w.start >= ? AND w.start < ? AND w.codes IS NOT NULL",
            (scope.event, int(start), int(end)),
        )
        for sid, codes in codes_rows:
            cell = cells.get(sid)
            if cell is not None:
                for code, n in orjson.loads(codes).items():
                    cell.codes[code] = cell.codes.get(code, 0) + n
    first_seen: dict[tuple[str, str], float] = {}
    for sid, row in wanted.items():  # the versions' activity series: one index seek each
        source, version = row.labels.get("source"), row.labels.get("app_version")
        if row.kind != "activity" or source is None or version is None:
            continue
        (at,) = db.execute("SELECT min(hour) FROM hourly WHERE series_id = ?", (sid,)).fetchone()
        if at is not None and at < first_seen.get((source, version), math.inf):
            first_seen[(source, version)] = float(at)
    return PeriodData(
        start=float(start),
        end=float(end),
        step=float(step),
        shifts=shifts,
        scale=scale,
        cells=[c for c in (*cells.values(), *totals.values()) if c.shifts],
        first_seen=first_seen,
        alerts=alerts_between(db, start, end),
        annotations=annotations(db),
        history_start=first,
    )


def alerts_between(
    db: sqlite3.Connection, start: float, end: float, *, fired_only: bool = True, limit: int = 500
) -> list[dict[str, Any]]:
    """The alerts (last state of each) that overlap [start, end), newest first."""
    rows = db.execute(
        "SELECT data FROM alerts WHERE started < ? AND coalesce(ended, updated) >= ?"
        + (" AND fired = 1" if fired_only else "")
        + " ORDER BY started DESC LIMIT ?",
        (end, start, limit),
    )
    return [orjson.loads(r[0]) for r in rows]


def annotations(db: sqlite3.Connection) -> list[Annotation]:
    return [
        Annotation(name, start, end, frozenset(orjson.loads(src)), frozenset(orjson.loads(evs)))
        for name, start, end, src, evs in db.execute(
            "SELECT name, start, end, sources, events FROM annotations"
        )
    ]


def explain(
    db: sqlite3.Connection,
    scope: Scope,
    start: float | str,
    end: float | str,
    extra_annotations: list[Annotation] | None = None,
    series: dict[int, SeriesRow] | None = None,
) -> Verdict:
    """The verdict on `scope` over [start, end) (ISO-8601 or epoch seconds)."""
    try:
        a, b = epoch_seconds(start), epoch_seconds(end)
    except (ValueError, TypeError) as exc:
        raise QueryError(f"not a time: {exc}; use ISO-8601 such as 2026-03-05T16:00Z") from exc
    series = series if series is not None else series_table(db)
    known = series.values()
    for key, value in (
        ("event", scope.event),
        ("source", scope.source),
        ("platform", scope.platform),
        ("app_version", scope.app_version),
        ("funnel", scope.funnel),
    ):
        if value is not None and not any(r.labels.get(key) == value for r in known):
            raise QueryError(f"the history knows no {key.replace('_', ' ')} {value!r}")
    data = period_data(db, scope, a, b, series=series)
    if extra_annotations:
        data.annotations = [*data.annotations, *extra_annotations]
    if not data.cells:
        raise QueryError(f"the history holds nothing about {scope.describe()} in that period")
    return explain_period(data, scope)
