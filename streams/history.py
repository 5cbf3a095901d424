"""The history store: window records and alerts kept queryable in one SQLite file (WAL).

The Kafka topics stay the source of truth: the store is filled by the detect agent as windows
are released (`trackwatch worker --history-db F`), offline from `trackwatch replay`'s outputs
(`trackwatch history load`), or rebuilt from the `metrics.windows` and `anomalies` topics
(`trackwatch history rebuild`, as far back as the topics keep: 30 and 90 days).

Tables
- `series`: one row per series (kind and labels, split into columns for filtering).
- `windows`: one row per series and 1-minute window (counts, users, violations, quarantined,
  repeats, numerator/denominator, violation codes as JSON); a revision record (late events)
  adds its counts to its window's row (and to `late`).
- `hourly`: the same sums per series and hour (`users` is the sum of the windows' users:
  user-minutes), so that a query over days reads 60 times fewer rows; `hourly_source`: the
  volume sums of every event per source, platform, app version and hour, and `minute_source`
  the same per minute (what "every event" and "the other events" are read from).
- `alerts`: the last state of each alert (`Anomaly.to_dict()`), `fired` once it ever fired.
- `annotations`: known campaigns (name, start, end, sources, events).

Retention: windows and alerts older than `retention_days` (35) before the newest window are
deleted (event time, so that a replay of last month is kept), at most once an hour of event
time; then, while the file holds more than `max_bytes`, the oldest day goes too.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from detectors.annotations import Annotation
from detectors.records import WindowRecord, epoch_seconds

log = logging.getLogger(__name__)

RETENTION_DAYS = 35.0
MAX_BYTES = 4 * 1024**3  # 4 GiB
PRUNE_EVERY = 3600.0  # seconds of event time between two retention passes
DAY = 86400.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS series(
    id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, kind TEXT NOT NULL,
    event TEXT, from_event TEXT, to_event TEXT, source TEXT, platform TEXT, app_version TEXT,
    funnel TEXT, within TEXT, planned INTEGER NOT NULL DEFAULT 1, labels TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS series_event ON series(event);
CREATE TABLE IF NOT EXISTS windows(
    series_id INTEGER NOT NULL, start INTEGER NOT NULL, count INTEGER NOT NULL,
    users INTEGER NOT NULL, violations INTEGER NOT NULL, quarantined INTEGER NOT NULL,
    repeats INTEGER NOT NULL, numerator INTEGER NOT NULL, denominator INTEGER NOT NULL,
    late INTEGER NOT NULL DEFAULT 0, codes TEXT,
    PRIMARY KEY(series_id, start)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS windows_start ON windows(start);
CREATE TABLE IF NOT EXISTS hourly(
    series_id INTEGER NOT NULL, hour INTEGER NOT NULL, count INTEGER NOT NULL,
    users INTEGER NOT NULL, violations INTEGER NOT NULL, quarantined INTEGER NOT NULL,
    repeats INTEGER NOT NULL, numerator INTEGER NOT NULL, denominator INTEGER NOT NULL,
    PRIMARY KEY(series_id, hour)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hourly_hour ON hourly(hour);
CREATE TABLE IF NOT EXISTS minute_source(
    start INTEGER NOT NULL, source TEXT NOT NULL, platform TEXT NOT NULL,
    app_version TEXT NOT NULL, count INTEGER NOT NULL, users INTEGER NOT NULL,
    violations INTEGER NOT NULL, quarantined INTEGER NOT NULL, repeats INTEGER NOT NULL,
    PRIMARY KEY(start, source, platform, app_version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hourly_source(
    hour INTEGER NOT NULL, source TEXT NOT NULL, platform TEXT NOT NULL,
    app_version TEXT NOT NULL, count INTEGER NOT NULL, users INTEGER NOT NULL,
    violations INTEGER NOT NULL, quarantined INTEGER NOT NULL, repeats INTEGER NOT NULL,
    PRIMARY KEY(hour, source, platform, app_version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts(
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, fired INTEGER NOT NULL,
    started REAL NOT NULL, updated REAL NOT NULL, ended REAL,
    event TEXT, source TEXT, platform TEXT, app_version TEXT, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_started ON alerts(started);
CREATE TABLE IF NOT EXISTS annotations(
    name TEXT NOT NULL, start REAL NOT NULL, end REAL NOT NULL, sources TEXT NOT NULL,
    events TEXT NOT NULL, PRIMARY KEY(name, start));
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_WINDOW_UPSERT = """
INSERT INTO windows(series_id, start, count, users, violations, quarantined, repeats,
                    numerator, denominator, late, codes)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)
ON CONFLICT(series_id, start) DO UPDATE SET
    count = excluded.count, users = excluded.users, violations = excluded.violations,
    quarantined = excluded.quarantined, repeats = excluded.repeats,
    numerator = excluded.numerator, denominator = excluded.denominator, codes = excluded.codes
"""
_REVISION_UPSERT = """
INSERT INTO windows(series_id, start, count, users, violations, quarantined, repeats,
                    numerator, denominator, late, codes)
VALUES (?, ?, ?, 0, ?, ?, ?, 0, 0, ?, NULL)
ON CONFLICT(series_id, start) DO UPDATE SET
    count = count + excluded.count, violations = violations + excluded.violations,
    quarantined = quarantined + excluded.quarantined, repeats = repeats + excluded.repeats,
    late = late + excluded.late
"""
_SOURCE_ADD = """
INSERT INTO {table}({col}, source, platform, app_version, count, users, violations,
                    quarantined, repeats)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT({col}, source, platform, app_version) DO UPDATE SET
    count = count + excluded.count, users = users + excluded.users,
    violations = violations + excluded.violations, quarantined = quarantined + excluded.quarantined,
    repeats = repeats + excluded.repeats
"""
_MINUTE_SOURCE_ADD = _SOURCE_ADD.format(table="minute_source", col="start")
_HOURLY_SOURCE_ADD = _SOURCE_ADD.format(table="hourly_source", col="hour")
_HOURLY_ADD = """
INSERT INTO hourly(series_id, hour, count, users, violations, quarantined, repeats,
                   numerator, denominator)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(series_id, hour) DO UPDATE SET
    count = count + excluded.count, users = users + excluded.users,
    violations = violations + excluded.violations, quarantined = quarantined + excluded.quarantined,
    repeats = repeats + excluded.repeats, numerator = numerator + excluded.numerator,
    denominator = denominator + excluded.denominator
"""


class HistoryError(RuntimeError):
    """A history file that cannot be used (the message names it and what to do)."""


@dataclass
class LoadStats:
    windows: int = 0
    alerts: int = 0
    skipped: int = 0  # lines that were not a window record or an alert


class HistoryStore:
    """Writes to (and opens) the history file. One writer at a time; readers may be many."""

    def __init__(
        self,
        path: str | Path,
        *,
        retention_days: float = RETENTION_DAYS,
        max_bytes: int = MAX_BYTES,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.retention = retention_days * DAY
        self.max_bytes = max_bytes
        self._series: dict[str, int] = {}
        self._pruned_at = -float("inf")
        self._newest = -float("inf")
        try:
            if readonly:
                if not self.path.is_file():
                    raise HistoryError(f"{self.path}: no such history file")
                uri = f"file:{self.path.resolve()}?mode=ro"
                self.db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            else:
                self.db = sqlite3.connect(self.path, check_same_thread=False)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.executescript(SCHEMA)
            self.db.execute("PRAGMA busy_timeout=5000")
            row = self.db.execute("SELECT max(start) FROM windows").fetchone()
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"{self.path}: not a usable history file ({exc})") from exc
        if row and row[0] is not None:
            self._newest = float(row[0])

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def _series_id(self, rec: WindowRecord) -> int:
        key = rec.series_key()
        found = self._series.get(key)
        if found is not None:
            return found
        row = self.db.execute("SELECT id FROM series WHERE key = ?", (key,)).fetchone()
        if row is None:
            s = rec.series
            cur = self.db.execute(
                "INSERT INTO series(key, kind, event, from_event, to_event, source, platform,"
                " app_version, funnel, within, planned, labels)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    rec.kind,
                    s.get("event"),
                    s.get("from_event"),
                    s.get("to_event"),
                    s.get("source"),
                    s.get("platform"),
                    s.get("app_version"),
                    s.get("funnel"),
                    s.get("within_minutes"),
                    int(rec.planned),
                    orjson.dumps(s).decode(),
                ),
            )
            found = int(cur.lastrowid or 0)
        else:
            found = int(row[0])
        self._series[key] = found
        return found

    def add_windows(self, records: Iterable[WindowRecord], *, commit: bool = True) -> int:
        """Store window records (a revision adds to its window); returns how many."""
        n = 0
        newest = self._newest
        for rec in records:
            sid = self._series_id(rec)
            start = int(rec.window_start)
            hour = start - start % 3600
            codes = orjson.dumps(rec.violation_codes).decode() if rec.violation_codes else None
            if rec.revision:
                self.db.execute(
                    _REVISION_UPSERT,
                    (
                        sid,
                        start,
                        rec.count,
                        rec.violations,
                        rec.quarantined,
                        rec.repeats,
                        rec.count,
                    ),
                )
                users = numerator = denominator = 0
            else:
                self.db.execute(
                    _WINDOW_UPSERT,
                    (
                        sid,
                        start,
                        rec.count,
                        rec.distinct_users,
                        rec.violations,
                        rec.quarantined,
                        rec.repeats,
                        rec.numerator,
                        rec.denominator,
                        codes,
                    ),
                )
                users, numerator, denominator = rec.distinct_users, rec.numerator, rec.denominator
            self.db.execute(
                _HOURLY_ADD,
                (
                    sid,
                    hour,
                    rec.count,
                    users,
                    rec.violations,
                    rec.quarantined,
                    rec.repeats,
                    numerator,
                    denominator,
                ),
            )
            if rec.kind == "volume":  # every event's sums per source, platform, version
                dims = tuple(rec.series.get(k) or "" for k in ("source", "platform", "app_version"))
                sums = (rec.count, users, rec.violations, rec.quarantined, rec.repeats)
                self.db.execute(_MINUTE_SOURCE_ADD, (start, *dims, *sums))
                self.db.execute(_HOURLY_SOURCE_ADD, (hour, *dims, *sums))
            newest = max(newest, float(start))
            n += 1
        self._newest = newest
        if newest - self._pruned_at >= PRUNE_EVERY:
            self.prune()
        if commit:
            self.db.commit()
        return n

    def add_alerts(self, alerts: Iterable[dict[str, Any]], *, commit: bool = True) -> int:
        """Store alert changes (`Anomaly.to_dict()`): the last change of each id is kept."""
        n = 0
        for a in alerts:
            series = a.get("series") or {}
            ended = a.get("ended_at")
            self.db.execute(
                "INSERT INTO alerts(id, kind, state, fired, started, updated, ended, event, source,"
                " platform, app_version, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET kind = excluded.kind, state = excluded.state,"
                " fired = max(fired, excluded.fired), started = excluded.started,"
                " updated = excluded.updated, ended = excluded.ended, data = excluded.data",
                (
                    str(a["id"]),
                    str(a["kind"]),
                    str(a["state"]),
                    int(a["state"] == "firing"),
                    epoch_seconds(a["started_at"]),
                    epoch_seconds(a["updated_at"]),
                    epoch_seconds(ended) if ended else None,
                    series.get("event") or series.get("to_event"),
                    series.get("source"),
                    series.get("platform"),
                    series.get("app_version"),
                    orjson.dumps(a).decode(),
                ),
            )
            n += 1
        if commit:
            self.db.commit()
        return n

    def add_annotations(self, annotations: Iterable[Annotation]) -> int:
        n = 0
        for a in annotations:
            self.db.execute(
                "INSERT OR REPLACE INTO annotations(name, start, end, sources, events)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    a.name,
                    a.start,
                    a.end,
                    orjson.dumps(sorted(a.sources)).decode(),
                    orjson.dumps(sorted(a.events)).decode(),
                ),
            )
            n += 1
        self.db.commit()
        return n

    def prune(self) -> int:
        """Apply the retention, then the size bound; returns the windows deleted."""
        if self._newest == -float("inf"):
            return 0
        self._pruned_at = self._newest
        cutoff = self._newest - self.retention
        deleted = self._delete_before(cutoff)
        while self.size_bytes() > self.max_bytes:
            oldest = self.db.execute("SELECT min(start) FROM windows").fetchone()[0]
            if oldest is None or oldest >= self._newest - DAY:
                break  # never the last day
            deleted += self._delete_before(float(oldest) + DAY)
            self.db.commit()
            self.db.execute("VACUUM")
        return deleted

    def _delete_before(self, cutoff: float) -> int:
        cur = self.db.execute("DELETE FROM windows WHERE start < ?", (int(cutoff),))
        for table in ("hourly", "hourly_source"):
            self.db.execute(f"DELETE FROM {table} WHERE hour < ?", (int(cutoff - cutoff % 3600),))
        self.db.execute("DELETE FROM minute_source WHERE start < ?", (int(cutoff),))
        self.db.execute("DELETE FROM alerts WHERE updated < ?", (cutoff,))
        return cur.rowcount

    def size_bytes(self) -> int:
        """Bytes the data takes in the file (pages in use; the WAL not counted)."""
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self.db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def rebuild_rollups(self) -> None:
        """Recompute the hourly sums (`hourly`, `hourly_source`) from the minute windows."""
        for table in ("hourly", "hourly_source", "minute_source"):
            self.db.execute(f"DELETE FROM {table}")
        self.db.execute(
            "INSERT INTO hourly SELECT series_id, start - start % 3600, sum(count), sum(users), "
            "sum(violations), sum(quarantined), sum(repeats), sum(numerator), sum(denominator) "
            "FROM windows GROUP BY series_id, start - start % 3600"
        )
        for table, col, source in (("minute_source", "start", "windows"),
                                   ("hourly_source", "hour", "hourly")):  # fmt: skip
            self.db.execute(
                f"INSERT INTO {table} SELECT w.{col}, coalesce(s.source, ''), "
                "coalesce(s.platform, ''), coalesce(s.app_version, ''), sum(w.count), "
                "sum(w.users), sum(w.violations), sum(w.quarantined), sum(w.repeats) "
                f"FROM {source} w JOIN series s ON s.id = w.series_id WHERE s.kind = 'volume' "
                "GROUP BY 1, 2, 3, 4"
            )
        self.db.commit()

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))
        self.db.commit()

    def info(self) -> dict[str, Any]:
        """What the file holds: counts, the time span, the size."""
        q = self.db.execute
        (first,), (last,) = (
            q(f"SELECT {f}(start) FROM windows").fetchone() for f in ("min", "max")
        )
        return {
            "path": str(self.path),
            "series": q("SELECT count(*) FROM series").fetchone()[0],
            "windows": q("SELECT count(*) FROM windows").fetchone()[0],
            "hourly": q("SELECT count(*) FROM hourly").fetchone()[0],
            "alerts": q("SELECT count(*) FROM alerts").fetchone()[0],
            "annotations": q("SELECT count(*) FROM annotations").fetchone()[0],
            "first": first,
            "last": last,
            "days": ((last - first) / DAY + 1 / 1440) if first is not None else 0.0,
            "bytes": self.size_bytes(),
            "retention_days": self.retention / DAY,
            "max_bytes": self.max_bytes,
        }


# ---------------------------------------------------------------------- filling it


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of a JSONL file (plain or .gz); unreadable lines give None."""
    import gzip

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield number, orjson.loads(line)
            except orjson.JSONDecodeError:
                yield number, None


def load_files(
    store: HistoryStore,
    windows: Path | None = None,
    alerts: Path | None = None,
    batch: int = 20_000,
) -> LoadStats:
    """Fill the store from `trackwatch replay --windows-out W --alerts-out A` outputs."""
    stats = LoadStats()
    if windows is not None:
        chunk: list[WindowRecord] = []
        for _, item in iter_jsonl(windows):
            try:
                chunk.append(WindowRecord.from_dict(item))
            except (TypeError, KeyError):
                stats.skipped += 1
                continue
            if len(chunk) >= batch:
                stats.windows += store.add_windows(chunk)
                chunk = []
        stats.windows += store.add_windows(chunk)
    if alerts is not None:
        items = []
        for _, item in iter_jsonl(alerts):
            if isinstance(item, dict) and {"id", "kind", "state", "started_at"} <= item.keys():
                items.append(item)
            else:
                stats.skipped += 1
        stats.alerts += store.add_alerts(items)
    return stats


def rebuild_from_kafka(store: HistoryStore, bootstrap: str, timeout_s: float = 30.0) -> LoadStats:
    """Read `metrics.windows` and `anomalies` from their first offsets to their ends into the
    store: the flushes are merged across partitions like the detect agent does (re-sent flushes
    skipped). Raises HistoryError when a topic cannot be read to its end (no progress for
    `timeout_s` seconds): a partial history is never passed off as whole."""
    from kafka import KafkaConsumer, TopicPartition

    from streams.merge import WindowMerger, merge_records
    from streams.topics import ANOMALIES, WINDOWS

    stats = LoadStats()
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=30_000,
        max_partition_fetch_bytes=8_000_000,
    )
    try:
        for topic in (WINDOWS, ANOMALIES):
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            if not parts:
                continue
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            ends = consumer.end_offsets(parts)
            mergers: dict[int, WindowMerger] = {}
            seen: dict[tuple[int, str], int] = {}
            alerts: list[dict[str, Any]] = []
            progress = time.monotonic()
            while not all(consumer.position(p) >= ends[p] for p in parts):
                batches = consumer.poll(timeout_ms=1000)
                if batches:
                    progress = time.monotonic()
                elif time.monotonic() - progress > timeout_s:
                    raise HistoryError(
                        f"{topic}: no progress for {timeout_s:g} s before its end; try again"
                    )
                for message in (m for batch in batches.values() for m in batch):
                    try:
                        value = orjson.loads(message.value or b"")
                    except orjson.JSONDecodeError:
                        stats.skipped += 1
                        continue
                    if topic == WINDOWS and isinstance(value, dict):
                        source, seq = str(value.get("partition")), int(value.get("flush", -1))
                        if seq <= seen.get((message.partition, source), -1):
                            continue  # re-sent by a restarted aggregate stage
                        seen[(message.partition, source)] = seq
                        merger = mergers.setdefault(message.partition, WindowMerger(math.inf))
                        records = [WindowRecord.from_dict(r) for r in value.get("records", [])]
                        closed = value.get("closed_until")
                        released = merger.add(
                            source, -math.inf if closed is None else closed, records
                        )
                        stats.windows += store.add_windows(released, commit=False)
                    elif topic == ANOMALIES and isinstance(value, dict):
                        alerts.append(value)
            for merger in mergers.values():  # what was still held: released as it is
                rest = [r for recs in merger.pending.values() for r in recs] + merger.revisions
                stats.windows += store.add_windows(merge_records(rest), commit=False)
            stats.alerts += store.add_alerts(alerts, commit=False)
            store.db.commit()
    finally:
        consumer.close()
    return stats


# ---------------------------------------------------------------------- the service's hook


def open_history(path: str | Path | None) -> HistoryStore | None:
    """The store the detect agent fills (None when no `--history-db` is set)."""
    return None if path is None else HistoryStore(path)


def record_history(
    store: HistoryStore, records: list[WindowRecord], alerts: list[dict[str, Any]]
) -> None:
    """Store released windows and alert changes; a failure is logged, never raised: the
    history is a copy of the topics (rebuild it with `trackwatch history rebuild`)."""
    try:
        if records:
            store.add_windows(records)
        if alerts:
            store.add_alerts(alerts)
    except sqlite3.Error as exc:
        log.error("history %s: not written (%s); rebuild it from the topics later", store.path, exc)
