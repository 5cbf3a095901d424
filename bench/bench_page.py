"""How fast the marketers' page answers with 10k series and 35 days of history.

Builds (once; kept with --db) a history file of `--series` volume series (events × sources ×
app versions, their rates spread like real traffic: a few busy series, a long tail of sparse
ones, a daily cycle) with minute windows for `--days` days, their hourly sums, conversions of
a 4-step funnel, and alerts; then times every request the page makes through the real aiohttp
server, against a baseline measured in the same run: the same requests over a small history
(300 series, 3 days). Prints the median and worst time of each request (goal: under 1 s).

    python bench/bench_page.py [--series 10000] [--days 35] [--per-minute 250] [--db F]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import random
import sqlite3
import statistics
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp.test_utils import TestClient, TestServer

from streams.history import HistoryStore
from streams.page import make_app

END = 1772668800.0  # 2026-03-05 00:00 UTC: the history ends here
SOURCES = (
    ("storefront", "web"),
    ("ios_app", "ios"),
    ("android_app", "android"),
    ("backend", "server"),
)
FUNNEL = ("Item Viewed", "Item Added To Bag", "Checkout Begun", "Order Placed")


def series_labels(n: int) -> list[dict[str, str]]:
    """Events × the three client sources × 5 app versions (web: one), plus a few server events
    (a backend sends a handful of event types, not hundreds)."""
    out = []
    for i in range(n):
        name = FUNNEL[i] if i < len(FUNNEL) else f"Event {i:04d}"
        if i < 10:
            server = "Payment Captured" if i == 0 else f"Server Event {i}"
            labels = {"event": server, "source": "backend", "platform": "server"}
            out.append({**labels, "app_version": "unknown"})
        for source, platform in SOURCES[:3]:
            for v in range(1 if platform == "web" else 5):
                version = "unknown" if platform == "web" else f"7.{v}.0"
                out.append({"event": name, "source": source, "platform": platform,
                            "app_version": version})  # fmt: skip
                if len(out) == n:
                    return out
    return out


def build(path: Path, n_series: int, days: int, per_minute: float, seed: int = 5) -> None:
    """Bulk-writes the tables `streams.history` defines (the store's own schema)."""
    rng = random.Random(seed)
    HistoryStore(path).close()  # the schema
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    labels = series_labels(n_series)
    weights = [1.0 / (i + 1) ** 1.1 for i in range(len(labels))]  # a long tail
    rng.shuffle(weights)
    for i, lab in enumerate(labels):  # the funnel's events and the server's are the busiest
        if lab["event"] in FUNNEL or lab["platform"] == "server":
            weights[i] = 1.0
    total = sum(weights)
    rates = [per_minute * w / total for w in weights]  # events a minute at the daily peak
    rows = [
        (
            i + 1,
            f"volume|{i}",
            "volume",
            lab["event"],
            None,
            None,
            lab["source"],
            lab["platform"],
            lab["app_version"],
            None,
            None,
            1,
            orjson.dumps(lab).decode(),
        )
        for i, lab in enumerate(labels)
    ]
    conv = []
    for k, (a, b) in enumerate(itertools.pairwise(FUNNEL)):
        for source, platform in SOURCES[:3]:
            lab = {
                "funnel": "purchase",
                "from_event": a,
                "to_event": b,
                "source": source,
                "platform": platform,
            }
            sid = len(rows) + 1
            rows.append(
                (
                    sid,
                    f"conversion|{k}|{source}",
                    "conversion",
                    None,
                    a,
                    b,
                    source,
                    platform,
                    None,
                    "purchase",
                    None,
                    1,
                    orjson.dumps(lab).decode(),
                )
            )
            conv.append(sid)
    db.executemany("INSERT INTO series VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    start = int(END - days * 86400)
    busy = [(i + 1, r) for i, r in enumerate(rates)]
    batch: list[tuple] = []
    for minute in range(days * 1440):
        t = start + 60 * minute
        cycle = 0.2 + 0.8 * math.sin(math.pi * ((t % 86400) / 86400)) ** 2
        for sid, rate in busy:
            mean = rate * cycle
            if mean < 1:  # sparse: a record (of one event) now and then
                if rng.random() >= mean:
                    continue
                n = 1
            else:
                n = max(1, round(rng.gauss(mean, math.sqrt(mean))))
            batch.append((sid, t, n, max(1, int(0.8 * n)), 0, 0, 0, 0, 0, 0, None))
        for sid in conv:
            den = max(1, int(rng.gauss(8 * cycle, 2)))
            batch.append((sid, t, 0, 0, 0, 0, 0, int(den * 0.3), den, 0, None))
        if len(batch) > 200_000:
            db.executemany("INSERT INTO windows VALUES (?,?,?,?,?,?,?,?,?,?,?)", batch)
            batch.clear()
    db.executemany("INSERT INTO windows VALUES (?,?,?,?,?,?,?,?,?,?,?)", batch)
    db.commit()
    with HistoryStore(path) as store:
        store.rebuild_rollups()
    alerts = []
    for i in range(days * 3):
        t = start + i * 8 * 3600 + 1800
        lab = labels[rng.randrange(200)]
        iso = lambda s: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s))  # noqa: E731
        data = {
            "id": f"bench{i:05d}",
            "kind": "spike",
            "series": lab,
            "state": "resolved",
            "started_at": iso(t),
            "updated_at": iso(t + 3600),
            "ended_at": iso(t + 3600),
            "observed": 10.0,
            "expected": 5.0,
            "lower": 2.0,
            "upper": 8.0,
            "score": 0.9,
            "explanation": f"{lab['event']} on {lab['source']} was 2× higher than expected",
            "attribution": [],
        }
        alerts.append(
            (
                data["id"],
                "spike",
                "resolved",
                1,
                t,
                t + 3600,
                t + 3600,
                lab["event"],
                lab["source"],
                lab["platform"],
                lab["app_version"],
                orjson.dumps(data).decode(),
            )
        )
    db.executemany("INSERT INTO alerts VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", alerts)
    db.commit()
    db.close()


def requests() -> list[tuple[str, dict[str, str]]]:
    day = 86400
    iso = lambda s: time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(s))  # noqa: E731
    end = END
    return [
        ("/", {}),
        ("/api/dimensions", {}),
        ("/api/anomalies", {"days": "3"}),
        ("/api/series", {"event": "Order Placed", "from": iso(end - 2 * day), "to": iso(end)}),
        (
            "/api/series",
            {
                "event": "Order Placed",
                "source": "ios_app",
                "version": "7.1.0",
                "from": iso(end - 6 * 3600),
                "to": iso(end),
            },
        ),
        ("/api/series", {"from": iso(end - 7 * day), "to": iso(end)}),
        ("/api/series", {"event": "Checkout Begun", "from": iso(end - 35 * day), "to": iso(end)}),
        ("/api/funnel", {"funnel": "purchase", "from": iso(end - day), "to": iso(end)}),
        (
            "/api/explain",
            {
                "event": "Order Placed",
                "source": "storefront",
                "from": iso(end - 5 * 3600),
                "to": iso(end - 3 * 3600),
            },
        ),
        ("/api/explain", {"from": iso(end - 4 * 3600), "to": iso(end - 3 * 3600 - 40 * 60)}),
        ("/api/explain", {"event": "Checkout Begun", "from": iso(end - 3 * day), "to": iso(end)}),
        (
            "/api/explain",
            {
                "funnel": "purchase",
                "source": "ios_app",
                "from": iso(end - 8 * 3600),
                "to": iso(end - 2 * 3600),
            },
        ),
    ]


async def time_requests(path: Path, repeat: int) -> list[tuple[str, float, float, int]]:
    client = TestClient(TestServer(make_app(path)))
    await client.start_server()
    out = []
    try:
        for url, query in requests():
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                response = await client.get(url, params=query)
                await response.read()
                times.append(time.perf_counter() - t0)
                if response.status != 200:
                    raise SystemExit(f"{url} {query}: {response.status} {await response.text()}")
            label = url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
            out.append((label, statistics.median(times), max(times), response.status))
    finally:
        await client.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument(
        "--per-minute", type=float, default=2000.0, help="events a minute at the daily peak"
    )
    parser.add_argument("--db", type=Path, default=Path("/tmp/trackwatch-bench-page.sqlite"))
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    base = args.db.with_name(args.db.stem + "-baseline.sqlite")
    for path, n, days, per_minute in (
        (base, 300, 3, 40.0),
        (args.db, args.series, args.days, args.per_minute),
    ):
        if args.rebuild or not path.exists():
            for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                stale.unlink(missing_ok=True)
            t0 = time.perf_counter()
            build(path, n, days, per_minute)
            print(f"built {path} ({n:,} series, {days} days) in {time.perf_counter() - t0:.0f} s")
    for path in (base, args.db):
        with HistoryStore(path) as store:
            if not store.db.execute("SELECT 1 FROM hourly_source LIMIT 1").fetchone():
                store.rebuild_rollups()  # a file built before that table existed
            info = store.info()
    print(
        f"history: {info['series']:,} series, {info['windows']:,} minute windows, "
        f"{info['hourly']:,} hourly rows, {info['days']:.0f} days, {info['bytes'] / 1e6:.0f} MB "
        f"({info['bytes'] / 1e6 / info['days']:.1f} MB a day)"
    )
    small = asyncio.run(time_requests(base, args.repeat))
    big = asyncio.run(time_requests(args.db, args.repeat))
    print(f"\n{'request':100} {'baseline':>10} {'10k/35d':>10} {'worst':>8}")
    for (label, b_med, _, _), (_, med, worst, _) in zip(small, big, strict=True):
        flag = "" if worst < 1.0 else "  over 1 s"
        print(
            f"{label[:100]:100} {1e3 * b_med:8.0f}ms {1e3 * med:8.0f}ms {1e3 * worst:6.0f}ms{flag}"
        )
    slowest = max(w for _, _, w, _ in big)
    print(
        f"\nslowest request {1e3 * slowest:.0f} ms (goal < 1000 ms): "
        f"{'met' if slowest < 1 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
