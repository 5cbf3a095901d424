"""The marketers' page: recent anomalies, a metric explorer and "explain this period", served
read-only from a history file (`streams.history`) by `trackwatch page`.

Everything it needs ships in `streams/page_assets/` (HTML, JS, CSS; charts are inline SVG
drawn by the page): no CDN, works offline. It listens on loopback unless told otherwise; with a
token (`--token`, `TRACKWATCH_PAGE_TOKEN`) every request must carry it (`Authorization: Bearer
T`, or `?token=T` for the first load: the page passes it on to the API; the page's own files
hold no data and need none). The history file is opened
read-only (a worker may be writing it at the same time: WAL).

JSON API (errors: 4xx `{"error": ...}`)
- GET /api/anomalies?days=3        the alerts of the last days (of history time), newest first
- GET /api/dimensions              events, sources, platforms, app versions, funnels known
- GET /api/series?event=&source=&platform=&version=&metric=count&from=&to=
                                   observed per bucket and the expected band (same bucket of
                                   the 7 previous days: mean ± 2 spreads)
- GET /api/funnel?funnel=&source=&platform=&version=&from=&to=
                                   each step pair's users and conversion against usual
- GET /api/explain?event=&source=&platform=&version=&funnel=&from=&to=
                                   the verdict (`trackwatch explain --json`)
"""

from __future__ import annotations

import hmac
import math
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from detectors.records import epoch_seconds
from detectors.verdict import Scope
from streams.history_query import (
    QueryError,
    alerts_between,
    explain,
    series_table,
    span,
    sums_by_series,
)

ASSETS = Path(__file__).with_name("page_assets")
ASSET_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
METRICS = ("count", "users", "violations", "quarantined", "repeats")
MAX_TEXT = 200  # longest parameter value accepted
BAND_DAYS = 7
DAY = 86400


class BadRequest(ValueError):
    pass


def _param(request: web.Request | Mapping[str, str], name: str) -> str | None:
    query = request.query if isinstance(request, web.Request) else request
    value = query.get(name)
    if value is None or value == "":
        return None
    if len(value) > MAX_TEXT or any(ord(ch) < 32 for ch in value):
        raise BadRequest(f"{name}: at most {MAX_TEXT} printable characters")
    return value


def _time(request: web.Request | Mapping[str, str], name: str, default: float) -> float:
    value = _param(request, name)
    if value is None:
        return default
    try:
        moment = epoch_seconds(value)
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(f"{name}: not a time; use ISO-8601 such as 2026-03-05T16:00Z") from None
    if not math.isfinite(moment) or not 0 <= moment < 1e11:
        raise BadRequest(f"{name}: out of range")
    return moment


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        content_type="application/json",
    )


class PageData:
    """Queries behind the page, over one read-only connection."""

    def __init__(self, db_path: str | Path) -> None:
        path = Path(db_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such history file")
        self.db = sqlite3.connect(
            f"file:{path.resolve()}?mode=ro", uri=True, check_same_thread=False
        )
        self.db.execute("PRAGMA busy_timeout=5000")
        self._series: dict[int, Any] = {}
        self._series_at = -math.inf

    def series(self) -> dict[int, Any]:
        """The series table, re-read at most every 30 s (new series appear as traffic does)."""
        if time.monotonic() - self._series_at > 30:
            self._series = series_table(self.db)
            self._series_at = time.monotonic()
        return self._series

    def now(self) -> float:
        """The newest window held: "now" for the page (a replayed history is not live)."""
        _, last = span(self.db)
        return float(last + 60) if last is not None else time.time()

    def anomalies(self, days: float) -> dict[str, Any]:
        end = self.now()
        items = alerts_between(self.db, end - days * DAY, end + DAY, limit=300)
        return {"now": end, "anomalies": items}

    def dimensions(self) -> dict[str, Any]:
        out: dict[str, set[str]] = {"event": set(), "source": set(), "platform": set()}
        versions: set[str] = set()
        funnels: set[str] = set()
        for row in self.series().values():
            labels = row.labels
            if row.kind == "volume":
                for key in out:
                    if labels.get(key):
                        out[key].add(labels[key])
                if labels.get("app_version"):
                    versions.add(labels["app_version"])
            elif row.kind == "conversion" and labels.get("funnel"):
                funnels.add(labels["funnel"])
        first, last = span(self.db)
        return {
            "events": sorted(out["event"]),
            "sources": sorted(out["source"]),
            "platforms": sorted(out["platform"]),
            "versions": sorted(versions),
            "funnels": sorted(funnels),
            "first": first,
            "last": last,
        }

    def _ids(self, scope: Scope, kind: str = "volume") -> list[int]:
        return [
            sid
            for sid, row in self.series().items()
            if row.kind == kind and scope.matches(row.labels)
        ]

    def series_points(self, scope: Scope, metric: str, start: float, end: float) -> dict[str, Any]:
        if metric not in METRICS:
            raise BadRequest(f"metric: one of {', '.join(METRICS)}")
        if not end > start or end - start > 35 * DAY:
            raise BadRequest("from/to: a period of at most 35 days, `to` after `from`")
        length = end - start
        table, col, bucket = (
            ("windows", "start", 300) if length <= 12 * 3600 else ("hourly", "hour", 3600)
        )
        if length > 7 * DAY:
            bucket = 6 * 3600
        ids = self._ids(scope)
        lo = int(start - start % bucket)
        hi = int(end)
        values: dict[int, float] = {}
        if scope.event is None:  # every event: the per-source sums
            rollup = "minute_source" if table == "windows" else "hourly_source"
            where, args = "1", []
            for key in ("source", "platform", "app_version"):
                if getattr(scope, key) is not None:
                    where += f" AND {key} = ?"
                    args.append(getattr(scope, key))
            sql = (
                f"SELECT {col} - ({col} % {bucket}) AS b, sum({metric}) FROM {rollup} "
                f"WHERE {where} AND {col} >= ? AND {col} < ? GROUP BY b"
            )
            for b, v in self.db.execute(sql, [*args, lo - BAND_DAYS * DAY, hi]):
                values[b] = float(v or 0)
            return self._points(values, lo, hi, bucket, metric, len(ids))
        every = len(ids) == sum(1 for r in self.series().values() if r.kind == "volume")
        chunks: list[list[int] | None] = (
            [None] if every else [ids[i : i + 500] for i in range(0, len(ids), 500)]
        )
        for chunk in chunks:  # a few series: by the primary key; all: by the time index
            where = (
                "series_id IN (SELECT id FROM series WHERE kind = 'volume')"
                if chunk is None
                else f"series_id IN ({','.join('?' * len(chunk))})"
            )
            sql = (
                f"SELECT {col} - ({col} % {bucket}) AS b, sum({metric}) FROM {table} "
                f"WHERE {where} AND {col} >= ? AND {col} < ? GROUP BY b"
            )
            for b, v in self.db.execute(sql, [*(chunk or []), lo - BAND_DAYS * DAY, hi]):
                values[b] = values.get(b, 0.0) + float(v or 0)
        return self._points(values, lo, hi, bucket, metric, len(ids))

    def _points(
        self, values: dict[int, float], lo: int, hi: int, bucket: int, metric: str, n: int
    ) -> dict[str, Any]:
        """[start, observed, expected, lower, upper] per bucket."""
        points = []
        first = self._first()
        for b in range(lo, hi, bucket):
            earlier = [
                values.get(b - k * DAY, 0.0)
                for k in range(1, BAND_DAYS + 1)
                if b - k * DAY >= first - first % bucket
            ]
            if earlier:  # the same bucket of the previous days: mean ± 2 spreads
                mean = sum(earlier) / len(earlier)
                var = sum((v - mean) ** 2 for v in earlier) / max(1, len(earlier) - 1)
                sd = math.sqrt(var + mean)
                band = [round(mean, 2), round(max(0.0, mean - 2 * sd), 2), round(mean + 2 * sd, 2)]
            else:
                band = [None, None, None]
            points.append([b, values.get(b, 0.0), *band])
        return {"bucket": bucket, "metric": metric, "series": n, "points": points}

    def _first(self) -> float:
        first, _ = span(self.db)
        return float(first) if first is not None else math.inf

    def funnel(self, scope: Scope, start: float, end: float) -> dict[str, Any]:
        ids = [
            sid
            for sid, row in self.series().items()
            if row.kind == "conversion"
            and row.labels.get("funnel") == scope.funnel
            and "within_minutes" not in row.labels
            and scope.matches(row.labels, with_event=False)
        ]
        pairs: dict[int, tuple[str, str]] = {
            sid: (self.series()[sid].labels["from_event"], self.series()[sid].labels["to_event"])
            for sid in ids
        }
        sums: dict[tuple[str, str], list[float]] = {}
        first = self._first()
        for k in range(BAND_DAYS + 1):
            a, b = int(start - k * DAY), int(end - k * DAY)
            if k and a < first:
                continue
            for sid, *totals in sums_by_series(self.db, "windows", a, b, ids):
                num, den = totals[5], totals[6]
                row = sums.setdefault(pairs[sid], [0.0, 0.0, 0.0, 0.0])
                row[0 if k == 0 else 2] += float(num or 0)
                row[1 if k == 0 else 3] += float(den or 0)
        steps = []
        for (a, b), (num, den, bnum, bden) in sorted(sums.items(), key=_step_order(sums)):
            steps.append(
                {
                    "from": a,
                    "to": b,
                    "users": den,
                    "converted": num,
                    "rate": num / den if den else None,
                    "usual": bnum / bden if bden else None,
                }
            )
        return {"funnel": scope.funnel, "steps": steps}

    def explain(self, scope: Scope, start: float, end: float) -> dict[str, Any]:
        return explain(self.db, scope, start, end, series=self.series()).to_dict()


def _step_order(pairs: dict[tuple[str, str], Any]) -> Any:
    """Sort key of a funnel's step pairs: along the chain (a step whose first event no other
    step leads to comes first), then by name."""
    nxt = {a: b for a, b in pairs}
    heads = sorted(a for a in nxt if a not in set(nxt.values()))
    rank: dict[str, int] = {}
    for head in heads:
        node = head
        while node in nxt and node not in rank:
            rank[node] = len(rank)
            node = nxt[node]
    return lambda item: (rank.get(item[0][0], len(rank)), item[0])


def _scope(request: web.Request | Mapping[str, str]) -> Scope:
    return Scope(
        _param(request, "event"),
        _param(request, "source"),
        _param(request, "platform"),
        _param(request, "version"),
        _param(request, "funnel"),
    )


def explain_query(db_path: str | Path, query: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of `GET /api/explain?…` over the history at `db_path`: what the
    worker's own web server answers when it keeps a history (`worker --history-db`)."""
    try:
        data = PageData(db_path)
    except (FileNotFoundError, sqlite3.Error) as exc:
        return 503, {"error": f"history unreadable: {exc}"}
    try:
        end = _time(query, "to", data.now())
        start = _time(query, "from", end - 3 * 3600)
        return 200, data.explain(_scope(query), start, end)
    except BadRequest as exc:
        return 400, {"error": str(exc)}
    except QueryError as exc:
        return 422, {"error": str(exc)}
    except sqlite3.Error as exc:
        return 503, {"error": f"history unreadable: {exc}"}
    finally:
        data.db.close()


def make_app(db_path: str | Path, token: str | None = None) -> web.Application:
    """The aiohttp application of the page (read-only)."""
    data = PageData(db_path)

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return _json({"error": "read-only: GET only"}, 405)
        if token and request.path.startswith("/api/"):  # the page's files hold no data
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            given = given or request.query.get("token", "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return _json(
                    {"error": "a token is needed: ?token=… or Authorization: Bearer …"}, 401
                )
        try:
            response = await handler(request)
        except BadRequest as exc:
            return _json({"error": str(exc)}, 400)
        except QueryError as exc:
            return _json({"error": str(exc)}, 422)
        except sqlite3.Error as exc:
            return _json({"error": f"history unreadable: {exc}"}, 503)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"
        )
        return response

    async def index(request: web.Request) -> web.StreamResponse:
        return _asset("index.html")

    async def asset(request: web.Request) -> web.StreamResponse:
        return _asset(request.match_info["name"])

    def _asset(name: str) -> web.StreamResponse:
        path = ASSETS / name
        if "/" in name or path.suffix not in ASSET_TYPES or not path.is_file():
            return _json({"error": "no such page"}, 404)
        return web.Response(body=path.read_bytes(), content_type=ASSET_TYPES[path.suffix])

    async def anomalies(request: web.Request) -> web.StreamResponse:
        try:
            days = float(_param(request, "days") or 3)
        except ValueError:
            raise BadRequest("days: a number") from None
        if not 0 < days <= 35:
            raise BadRequest("days: between 0 and 35")
        return _json(data.anomalies(days))

    async def dimensions(request: web.Request) -> web.StreamResponse:
        return _json(data.dimensions())

    def _period(request: web.Request, default_hours: float) -> tuple[float, float]:
        end = _time(request, "to", data.now())
        start = _time(request, "from", end - default_hours * 3600)
        return start, end

    async def series(request: web.Request) -> web.StreamResponse:
        start, end = _period(request, 48)
        metric = _param(request, "metric") or "count"
        return _json(data.series_points(_scope(request), metric, start, end))

    async def funnel(request: web.Request) -> web.StreamResponse:
        start, end = _period(request, 24)
        scope = _scope(request)
        if scope.funnel is None:
            raise BadRequest("funnel: the funnel's name")
        return _json(data.funnel(scope, start, end))

    async def explain_view(request: web.Request) -> web.StreamResponse:
        start, end = _period(request, 3)
        return _json(data.explain(_scope(request), start, end))

    async def not_found(request: web.Request) -> web.StreamResponse:
        return _json({"error": "no such page"}, 404)

    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app.router.add_get("/", index)
    app.router.add_get("/assets/{name}", asset)
    app.router.add_get("/api/anomalies", anomalies)
    app.router.add_get("/api/dimensions", dimensions)
    app.router.add_get("/api/series", series)
    app.router.add_get("/api/funnel", funnel)
    app.router.add_get("/api/explain", explain_view)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
