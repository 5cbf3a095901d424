"""`trackwatch worker` (the Faust worker) and `trackwatch replay` (the offline replay)."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from streams.companions import COMPANION_MINUTES
from streams.errors import fail
from streams.pipeline import writable_quarantine_record
from streams.windows import DEFAULT_DIMENSIONS, EARLY_MINUTES, LATE_HORIZON_SECONDS

EARLY_HELP = (
    "also count each funnel step's conversion within this many minutes and publish it that"
    " much sooner than the whole funnel window's (0: off)"
)

LATE_HELP = (
    "a late event whose window closed less than this many minutes ago is still counted, in a"
    " revision record of its window; later ones are counted as too late (0: no revisions)"
)
COMPANION_HELP = (
    "learn which event normally follows which within this many minutes and publish their"
    " conversions like a funnel's (0: off)"
)

WORKER_GC = (50_000, 50, 100)  # garbage-collector thresholds of the worker process


def _dimensions(text: str) -> tuple[str, ...]:
    dims = tuple(d.strip() for d in text.split(",") if d.strip())
    if not dims:
        fail("--dimensions needs at least one name, e.g. source,platform,app_version")
    for dim in dims:
        if not all(part.replace("_", "").isalnum() for part in dim.split(".")):
            fail(f"--dimensions: {dim!r} is not a dimension name or dotted context path")
    return dims


def _plan(path: Path) -> Any:
    from tracking_plan.loader import PlanError, load_plan

    try:
        return load_plan(path)
    except PlanError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{path}: {exc.strerror or exc}")


def _annotations(path: Path | None) -> list[Any]:
    if path is None:
        return []
    from detectors.annotations import AnnotationError, load_annotations

    try:
        return load_annotations(path)
    except AnnotationError as exc:
        fail(str(exc))


def tuning_option(path: Path | None) -> Any:
    """The detectors' `EngineConfig` from a tuning file (None: the defaults)."""
    if path is None:
        return None
    from detectors.tuning import TuningError, load_tuning

    try:
        return load_tuning(path)
    except TuningError as exc:
        fail(f"--detectors {exc}")


TUNING_HELP = "detector tuning YAML (examples/detectors.yaml lists every setting)"


def register(app: typer.Typer) -> None:
    @app.command()
    def worker(
        broker: Annotated[
            str,
            typer.Option(
                envvar="TRACKWATCH_BROKER",
                help="Kafka bootstrap HOST:PORT [env TRACKWATCH_BROKER; default: the running "
                "`trackwatch run`'s, else 127.0.0.1:9092]",
            ),
        ] = "127.0.0.1:9092",
        plan: Annotated[Path, typer.Option(help="tracking plan YAML")] = Path(
            "examples/ecommerce.yaml"
        ),
        metrics_port: Annotated[int, typer.Option(help="Prometheus /metrics port (0: off)")] = 9108,
        web_port: Annotated[
            int, typer.Option("--web-port", "--port", help="port of /api/anomalies (0: off)")
        ] = 6066,
        host: Annotated[
            str,
            typer.Option(
                help="listen address of /metrics and /api/anomalies (0.0.0.0: every interface)"
            ),
        ] = "127.0.0.1",
        dimensions: Annotated[
            str, typer.Option(help="series dimensions, comma-separated")
        ] = ",".join(DEFAULT_DIMENSIONS),
        annotations: Annotated[
            Path | None, typer.Option(help="annotations YAML (known campaigns)")
        ] = None,
        detectors: Annotated[Path | None, typer.Option(help=TUNING_HELP)] = None,
        app_id: Annotated[str, typer.Option(help="Faust app id = consumer group")] = "trackwatch",
        data_dir: Annotated[Path | None, typer.Option(help="Faust data directory")] = None,
        window_seconds: Annotated[int, typer.Option(min=1)] = 60,
        lateness_seconds: Annotated[int, typer.Option(min=0)] = 120,
        early_minutes: Annotated[int, typer.Option(min=0, help=EARLY_HELP)] = EARLY_MINUTES,
        late_horizon_minutes: Annotated[
            int, typer.Option(min=0, max=7 * 24 * 60, help=LATE_HELP)
        ] = LATE_HORIZON_SECONDS // 60,
        companion_minutes: Annotated[
            int, typer.Option(min=0, max=24 * 60, help=COMPANION_HELP)
        ] = COMPANION_MINUTES,
        snapshot_interval: Annotated[
            float, typer.Option(min=0.0, help="seconds between state snapshots per partition")
        ] = 5.0,
        loglevel: Annotated[str, typer.Option(help="debug, info, warning, error")] = "warning",
        history_db: Annotated[
            Path | None,
            typer.Option(help="SQLite file to keep window records and alerts in (trackwatch page)"),
        ] = None,
    ) -> None:
        """Run the stream worker: validate -> quarantine -> windows -> anomalies."""
        from kafka.errors import KafkaError

        from streams.app import create_app
        from streams.exporter import start_exporter
        from streams.worker import WorkerConfig

        if ":" not in broker.removeprefix("kafka://"):
            fail(f"--broker must be HOST:PORT, got {broker!r}")
        config = WorkerConfig(
            dimensions=_dimensions(dimensions),
            window_seconds=window_seconds,
            allowed_lateness_seconds=lateness_seconds,
            early_minutes=early_minutes,
            late_horizon_seconds=late_horizon_minutes * 60,
            companion_minutes=companion_minutes,
            snapshot_interval=snapshot_interval,
            annotations=_annotations(annotations),
            engine=tuning_option(detectors),
            history_db=str(history_db) if history_db is not None else None,
        )
        if history_db is not None:
            from streams.history import HistoryError, HistoryStore

            if not history_db.parent.is_dir():
                fail(f"--history-db {history_db}: directory {history_db.parent} does not exist")
            try:
                HistoryStore(history_db).close()
            except HistoryError as exc:
                fail(f"--history-db {exc}")
        loaded = _plan(plan)
        try:
            faust_app = create_app(
                broker,
                loaded,
                app_id=app_id,
                config=config,
                web_port=web_port or None,
                web_host=host,
                data_dir=data_dir,
            )
        except (KafkaError, OSError, RuntimeError, ValueError) as exc:
            fail(f"cannot reach the broker at {broker}: {exc}")
        if metrics_port:
            try:
                start_exporter(metrics_port, host)
            except OSError as exc:
                fail(f"--metrics-port {metrics_port} on {host}: {exc.strerror or exc}")
            except (UnicodeError, ValueError) as exc:  # e.g. an empty or odd --host
                fail(f"--host {host!r} is not an address to listen on ({exc})")
        from faust.worker import Worker

        # The worker holds large, long-lived state (dedupe ids, user sets): with the default
        # thresholds the garbage collector rescans it every few hundred allocations.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*WORKER_GC)
        runner = Worker(faust_app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
        if not sys.stdout.isatty():  # a log file: no spinner, no cursor codes in it
            runner.spinner = None
        runner.execute_from_commandline()  # handles SIGINT/SIGTERM: stops cleanly, exits 0

    @app.command()
    def replay(
        plan: Annotated[Path, typer.Option(help="tracking plan YAML")],
        events: Annotated[Path, typer.Option(help="EVENTS.jsonl[.gz]: one envelope a line")],
        alerts_out: Annotated[Path, typer.Option(help="ALERTS.jsonl to write")],
        annotations: Annotated[Path | None, typer.Option(help="annotations YAML")] = None,
        detectors: Annotated[Path | None, typer.Option(help=TUNING_HELP)] = None,
        quarantine_out: Annotated[Path | None, typer.Option(help="Q.jsonl to write")] = None,
        windows_out: Annotated[Path | None, typer.Option(help="window records JSONL")] = None,
        dimensions: Annotated[str, typer.Option(help="series dimensions")] = ",".join(
            DEFAULT_DIMENSIONS
        ),
        window_seconds: Annotated[int, typer.Option(min=1)] = 60,
        lateness_seconds: Annotated[int, typer.Option(min=0)] = 120,
        early_minutes: Annotated[int, typer.Option(min=0, help=EARLY_HELP)] = EARLY_MINUTES,
        late_horizon_minutes: Annotated[
            int, typer.Option(min=0, max=7 * 24 * 60, help=LATE_HELP)
        ] = LATE_HORIZON_SECONDS // 60,
        companion_minutes: Annotated[
            int, typer.Option(min=0, max=24 * 60, help=COMPANION_HELP)
        ] = COMPANION_MINUTES,
    ) -> None:
        """Replay a JSONL file of envelopes offline (event time, no Kafka, deterministic)."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        from streams.replay import open_events
        from streams.replay import replay as run_replay

        loaded = _plan(plan)
        notes = _annotations(annotations)
        tuning = tuning_option(detectors)
        dims = _dimensions(dimensions)
        if not events.is_file():
            fail(f"--events {events}: no such file")
        outputs = [alerts_out, quarantine_out, windows_out]
        for out in outputs:
            if out is not None and not out.parent.exists():
                fail(f"{out}: directory {out.parent} does not exist")
        size = os.path.getsize(events)
        handles = [out.open("wb") if out is not None else None for out in outputs]
        alerts_f, quarantine_f, windows_f = handles

        def writer(handle: Any, convert: Any) -> Any:
            if handle is None:
                return lambda item: None
            return lambda item: handle.write(orjson.dumps(convert(item)) + b"\n")

        try:
            with (
                open_events(events) as source,
                Progress(
                    TextColumn("replay"),
                    BarColumn(),
                    TextColumn("{task.completed:,} envelopes"),
                    TimeRemainingColumn(),
                    transient=True,
                ) as progress,
            ):
                task = progress.add_task("replay", total=size)
                raw = getattr(source, "fileobj", None) or source

                def advance(_: int) -> None:
                    progress.update(task, completed=raw.tell())

                stats = run_replay(
                    loaded,
                    source,
                    annotations=notes,
                    dimensions=dims,
                    window_seconds=window_seconds,
                    allowed_lateness_seconds=lateness_seconds,
                    early_minutes=early_minutes,
                    late_horizon_seconds=late_horizon_minutes * 60,
                    companion_minutes=companion_minutes,
                    engine_config=tuning,
                    on_quarantine=writer(quarantine_f, writable_quarantine_record),
                    on_window=writer(windows_f, lambda r: r.to_dict()),
                    on_alert=writer(alerts_f, lambda a: a.to_dict()),
                    on_progress=advance,
                )
        except (OSError, EOFError) as exc:
            fail(f"--events {events}: {exc}")
        finally:
            for handle in handles:
                if handle is not None:
                    handle.close()
        detectors = "" if stats.detectors else " (detectors not installed: no alerts)"
        typer.echo(
            f"{stats.envelopes:,} envelopes: {stats.valid:,} valid, {stats.quarantined:,} "
            f"quarantined, {stats.duplicates:,} duplicates, {stats.late:,} late "
            f"({stats.late_revised:,} revised, {stats.too_late:,} too late), "
            f"{stats.duplicate_keys:,} duplicate keys, {stats.repeated_payloads:,} repeated "
            "payloads; "
            f"{stats.windows:,} window records, {stats.alerts:,} alert changes{detectors}"
        )
