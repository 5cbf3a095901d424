"""`trackwatch history load/rebuild/info`, `trackwatch explain` and `trackwatch page`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from streams.errors import fail

DB_HELP = "history file (SQLite; `trackwatch history load` or `worker --history-db` fills it)"
DEFAULT_DB = Path("trackwatch-history.sqlite")


def _store(db: Path, **kwargs: Any) -> Any:
    from streams.history import HistoryError, HistoryStore

    if not db.parent.is_dir():
        fail(f"--db {db}: directory {db.parent} does not exist")
    try:
        return HistoryStore(db, **kwargs)
    except HistoryError as exc:
        fail(str(exc))


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def register(app: typer.Typer) -> None:
    history = typer.Typer(help="The history store: window records and alerts, queryable.")
    app.add_typer(history, name="history")

    @history.command("load")
    def load(
        db: Annotated[Path, typer.Option(help=DB_HELP)] = DEFAULT_DB,
        windows: Annotated[
            Path | None, typer.Option(help="window records JSONL (replay --windows-out)")
        ] = None,
        alerts: Annotated[
            Path | None, typer.Option(help="ALERTS.jsonl (replay --alerts-out)")
        ] = None,
        annotations: Annotated[
            Path | None, typer.Option(help="annotations YAML (campaigns)")
        ] = None,
        retention_days: Annotated[
            float, typer.Option(min=1.0, help="days kept before the newest window")
        ] = 35.0,
        max_mb: Annotated[float, typer.Option(min=1.0, help="size bound of the file, MB")] = 4096.0,
    ) -> None:
        """Fill the history from `trackwatch replay` outputs (offline)."""
        from detectors.annotations import AnnotationError, load_annotations
        from streams.history import load_files

        for flag, path in (("--windows", windows), ("--alerts", alerts)):
            if path is not None and not path.is_file():
                fail(f"{flag} {path}: no such file")
        notes = []
        if annotations is not None:
            try:
                notes = load_annotations(annotations)
            except AnnotationError as exc:
                fail(str(exc))
        store = _store(db, retention_days=retention_days, max_bytes=int(max_mb * 1e6))
        try:
            stats = load_files(store, windows, alerts)
            store.add_annotations(notes)
            store.prune()
            info = store.info()
        except OSError as exc:
            fail(f"cannot read the input: {exc}")
        finally:
            store.close()
        skipped = f", {stats.skipped:,} unreadable lines skipped" if stats.skipped else ""
        typer.echo(
            f"{db}: {stats.windows:,} window records, {stats.alerts:,} alert changes, "
            f"{len(notes)} annotations loaded{skipped}; holds {info['days']:.1f} days, "
            f"{_mb(info['bytes'])}"
        )

    @history.command("rebuild")
    def rebuild(
        db: Annotated[Path, typer.Option(help=DB_HELP)] = DEFAULT_DB,
        broker: Annotated[
            str, typer.Option(envvar="TRACKWATCH_BROKER", help="Kafka HOST:PORT")
        ] = "127.0.0.1:9092",
    ) -> None:
        """Rebuild the history from the metrics.windows and anomalies topics (as far back as
        the topics keep: 30 and 90 days)."""
        from streams.history import rebuild_from_kafka

        store = _store(db)
        try:
            stats = rebuild_from_kafka(store, broker.removeprefix("kafka://"))
            store.prune()
        except Exception as exc:
            fail(f"cannot read the topics at {broker}: {exc}")
        finally:
            store.close()
        typer.echo(
            f"{db}: {stats.windows:,} window records, {stats.alerts:,} alert changes from {broker}"
        )

    @history.command("info")
    def info(db: Annotated[Path, typer.Option(help=DB_HELP)] = DEFAULT_DB) -> None:
        """What the history holds, and its size per day of records."""
        store = _store(db, readonly=True)
        try:
            data = store.info()
        finally:
            store.close()
        per_day = data["bytes"] / data["days"] if data["days"] else 0
        typer.echo(
            orjson.dumps(
                {**data, "bytes_per_day": round(per_day)}, option=orjson.OPT_INDENT_2
            ).decode()
        )

    @app.command()
    def explain(
        event: Annotated[str | None, typer.Option(help="event name (none: every event)")] = None,
        source: Annotated[str | None, typer.Option(help="source, e.g. storefront")] = None,
        platform: Annotated[str | None, typer.Option(help="web, ios, android, server")] = None,
        version: Annotated[str | None, typer.Option(help="app version")] = None,
        funnel: Annotated[
            str | None, typer.Option(help="funnel name: explain its conversions")
        ] = None,
        from_: Annotated[
            str, typer.Option("--from", help="start, ISO-8601 UTC (2026-03-05T16:00Z)")
        ] = "",
        to: Annotated[str, typer.Option(help="end, ISO-8601 UTC")] = "",
        db: Annotated[Path, typer.Option(help=DB_HELP)] = DEFAULT_DB,
        annotations: Annotated[
            Path | None, typer.Option(help="annotations YAML (campaigns)")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="the verdict as JSON")] = False,
    ) -> None:
        """Is this metric odd because of tracking, or real? Observed against expected over the
        period, the alerts that covered it, and a verdict with its evidence."""
        from detectors.annotations import AnnotationError, load_annotations
        from detectors.verdict import Scope
        from streams.history_query import QueryError
        from streams.history_query import explain as run

        if not from_ or not to:
            fail("give the period: --from 2026-03-05T16:00Z --to 2026-03-05T21:00Z")
        notes = []
        if annotations is not None:
            try:
                notes = load_annotations(annotations)
            except AnnotationError as exc:
                fail(str(exc))
        scope = Scope(event, source, platform, version, funnel)
        store = _store(db, readonly=True)
        try:
            verdict = run(store.db, scope, from_, to, notes)
        except QueryError as exc:
            fail(str(exc))
        finally:
            store.close()
        if as_json:
            sys.stdout.write(orjson.dumps(verdict.to_dict()).decode() + "\n")
            return
        typer.echo(f"Verdict: {verdict.verdict.upper()}\n")
        typer.echo(verdict.paragraph + "\n")
        typer.echo("Evidence:")
        for item in verdict.evidence:
            mark = {"context": " "}.get(item.side, "•")
            side = "" if item.side == "context" else f" [{item.side}]"
            typer.echo(f" {mark} {item.text}{side}")
        if not verdict.evidence:
            typer.echo("   (none)")
        for alert in verdict.alerts[:10]:
            typer.echo(f"Alert {alert.get('state')}: {alert.get('explanation')}")

    @app.command()
    def page(
        db: Annotated[Path, typer.Option(help=DB_HELP)] = DEFAULT_DB,
        host: Annotated[
            str, typer.Option(help="listen address (0.0.0.0 needs --token)")
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=1, max=65535)] = 6068,
        token: Annotated[
            str | None,
            typer.Option(
                envvar="TRACKWATCH_PAGE_TOKEN", help="required of every request (production)"
            ),
        ] = None,
    ) -> None:
        """The marketers' page (read-only): anomalies, a metric explorer, explain a period."""
        import ipaddress

        from aiohttp import web

        from streams.page import make_app

        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback and not token:
            fail(
                f"--host {host} opens the page to other machines: set --token (or "
                "TRACKWATCH_PAGE_TOKEN)"
            )
        if token is not None and len(token) < 16:
            fail("--token: at least 16 characters")
        try:
            application = make_app(db, token)
        except FileNotFoundError as exc:
            fail(f"--db {exc}")
        suffix = f"/?token={token}" if token else "/"
        typer.echo(f"trackwatch page: http://{host}:{port}{suffix} (history {db}; Ctrl-C stops)")
        try:
            web.run_app(application, host=host, port=port, print=None, access_log=None)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
