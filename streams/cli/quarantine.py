"""`trackwatch quarantine list|show|tail|serve` (read what was quarantined and why),
`trackwatch quarantine replay` (re-validate quarantined events after a plan fix) and
`trackwatch plans publish|current` (the plan the running workers validate with, hot reloaded)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams.errors import fail

console = Console(highlight=False)
quarantine_app = typer.Typer(
    help="Read quarantined events (list, show, tail, serve) and replay them after a plan fix.",
    no_args_is_help=True,
)
plans_app = typer.Typer(
    help="Share the tracking plan with every running worker (hot reload, no restart).",
    no_args_is_help=True,
)

T = TypeVar("T")
BrokerOption = Annotated[
    str,
    typer.Option(
        "--broker",
        envvar="TRACKWATCH_BROKER",
        help="Kafka bootstrap HOST:PORT [env TRACKWATCH_BROKER]",
    ),
]


def _broker_failure(broker: str, exc: BaseException) -> NoReturn:
    name, text = type(exc).__name__, str(exc) or "timed out"
    detail = text if text.startswith(name) else f"{name}: {text}"
    fail(
        f"cannot reach Kafka at {broker} ({detail}); "
        "start it (`trackwatch broker`) or pass --broker HOST:PORT"
    )


def _run(broker: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run `work` and turn broker trouble into one clear line."""
    from aiokafka.errors import KafkaError as AioKafkaError
    from kafka.errors import KafkaError

    from streams.plan_sync import PlanSyncError
    from streams.quarantine import ReplayError

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # failures are reported below
    try:
        return asyncio.run(work())
    except (ReplayError, PlanSyncError) as exc:
        fail(str(exc))
    except (AioKafkaError, KafkaError, OSError, TimeoutError) as exc:
        _broker_failure(broker, exc)


def _load_plan_text(path: Path) -> tuple[Any, str]:
    from tracking_plan.loader import PlanError, load_plan

    try:
        plan = load_plan(path)
    except PlanError as exc:
        fail(str(exc))
    return plan, path.read_text(encoding="utf-8")


def _csv(values: list[str] | None) -> frozenset[str]:
    return frozenset(v.strip() for item in values or [] for v in item.split(",") if v.strip())


@quarantine_app.command("replay")
def replay_command(
    since: Annotated[
        str, typer.Option(help="quarantined since: a duration (30m, 2h, 7d) or an ISO-8601 time")
    ],
    broker: BrokerOption = "127.0.0.1:9092",
    plan: Annotated[
        Path | None,
        typer.Option(help="plan YAML to validate with [default: the plan published to workers]"),
    ] = None,
    event: Annotated[
        list[str] | None, typer.Option(help="only these event names (repeat or comma-separate)")
    ] = None,
    source: Annotated[list[str] | None, typer.Option(help="only these sources")] = None,
    code: Annotated[
        list[str] | None, typer.Option(help="only records with one of these violation codes")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="count what would be republished; send nothing")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    force: Annotated[
        bool, typer.Option(help="start although an unfinished replay looks alive (it crashed)")
    ] = False,
) -> None:
    """Re-validate quarantined events with the fixed plan and republish the valid ones once."""
    from streams.plan_sync import ActivePlan, fetch_current
    from streams.quarantine import ReplayFilter, parse_since, replay_quarantine

    try:
        since_at = parse_since(since)
    except ValueError as exc:
        fail(str(exc))
    active: ActivePlan | None = None
    if plan is not None:
        active = ActivePlan.of(_load_plan_text(plan)[0])
    else:
        active = _run(broker, lambda: fetch_current(broker))
        if active is None:
            fail(
                f"no plan given and none published on {broker}; pass --plan PLAN.yaml "
                "(or publish it first: trackwatch plans publish PLAN.yaml)"
            )
    filt = ReplayFilter(_csv(event), _csv(source), _csv(code))

    with _progress(disable=as_json) as progress:
        task = progress.add_task("replaying quarantine", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        summary = _run(
            broker,
            lambda: replay_quarantine(
                broker,
                active,
                since=since_at,
                replay_filter=filt,
                dry_run=dry_run,
                force=force,
                on_progress=on_progress,
            ),
        )
    if as_json:
        typer.echo(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        _print_summary(summary, since_at)


def _progress(disable: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=disable,
    )


def _print_summary(s: Any, since: datetime) -> None:
    verb = "would republish" if s.dry_run else "republished"
    table = Table(title=f"quarantine replay with plan {escape(s.plan_version)}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("quarantined since", since.isoformat(timespec="seconds"))
    table.add_row("messages read", str(s.messages))
    if s.before_since:
        table.add_row("  skipped: quarantined before --since", str(s.before_since))
    table.add_row("records read", str(s.records))
    table.add_row("not matching the filters", str(s.filtered_out))
    table.add_row(f"[green]{verb}[/]", f"[green]{s.republished}[/]")
    if s.flagged:
        table.add_row("  of which flagged", str(s.flagged))
    table.add_row("skipped: already replayed", str(s.already_replayed + s.repeated))
    table.add_row("[yellow]still invalid[/]", f"[yellow]{s.still_invalid_events}[/]")
    for code, n in s.still_invalid.most_common():
        table.add_row(f"  {escape(code)}", str(n))
    for reason, n in s.unreadable.most_common():
        table.add_row(f"[red]skipped: {escape(reason)}[/]", f"[red]{n}[/]")
    if s.recovered:
        table.add_row("recovered from an interrupted run", str(s.recovered))
    console.print(table)
    if s.by_event:
        events = Table(title=verb)
        events.add_column("event")
        events.add_column("events", justify="right")
        for name, n in s.by_event.most_common(20):
            events.add_row(escape(name), str(n))
        console.print(events)
    if s.dry_run:
        console.print("[dim]dry run: nothing was sent[/]")


@plans_app.command("publish")
def publish_command(
    plan: Annotated[Path, typer.Argument(help="plan YAML to hand to every worker")],
    broker: BrokerOption = "127.0.0.1:9092",
) -> None:
    """Publish a plan to the `plans` topic: running workers switch to it between two batches."""
    from streams.plan_sync import publish

    loaded, text = _load_plan_text(plan)
    result = _run(broker, lambda: publish(broker, loaded, text))
    if result.offset < 0:
        console.print(f"plan {escape(result.version)} is already the current plan: nothing sent")
    else:
        was = f" (was {escape(result.previous)})" if result.previous else ""
        console.print(
            f"published plan [bold]{escape(result.version)}[/]{was} at plans offset {result.offset}"
        )


@plans_app.command("current")
def current_command(
    broker: BrokerOption = "127.0.0.1:9092",
    show: Annotated[bool, typer.Option(help="print the plan YAML too")] = False,
) -> None:
    """The plan version the workers validate with (the last valid plan on the `plans` topic)."""
    from streams.plan_sync import fetch_current

    active = _run(broker, lambda: fetch_current(broker))
    if active is None:
        fail(f"no plan published on {broker}; workers use their --plan file")
    console.print(f"plan [bold]{escape(active.version)}[/] (plans offset {active.offset})")
    if show:
        from tracking_plan.plan_dump import dump_plan

        typer.echo(dump_plan(active.plan))


# ----------------------------------------------------------------------------- reading it

SinceOption = Annotated[
    str | None,
    typer.Option(help="quarantined since: a duration (30m, 2h, 7d) or an ISO-8601 time"),
]
SourceOption = Annotated[
    list[str] | None, typer.Option(help="only these sources (repeat or comma-separate)")
]
EventOption = Annotated[
    list[str] | None, typer.Option(help="only these events (a track event, page/screen name)")
]
CodeOption = Annotated[list[str] | None, typer.Option(help="only records with one of these codes")]
VersionOption = Annotated[
    list[str] | None, typer.Option(help="only records judged by these plan versions")
]
JsonOption = Annotated[bool, typer.Option("--json", help="one JSON object per line")]


def _filter(
    since: str | None,
    source: list[str] | None,
    event: list[str] | None,
    code: list[str] | None,
    version: list[str] | None,
) -> Any:
    from streams.quarantine_view import parse_filter

    try:
        return parse_filter(since, source, event, code, version)
    except ValueError as exc:
        fail(str(exc))


def _json_line(item: Any) -> None:
    typer.echo(orjson.dumps(item.to_json(), option=orjson.OPT_NON_STR_KEYS).decode())


def _first_problem(item: Any) -> str:
    if not item.violations:
        return ""
    v = item.violations[0]
    text = f"{v.get('path', '')}: expected {v.get('expected', '?')}, got {v.get('got', '?')}"
    more = len(item.violations) - 1
    return text + (f" (+{more} more)" if more else "")


def _table(items: list[Any], title: str) -> Table:
    table = Table(title=title)
    for name in ("quarantined (UTC)", "id", "source", "event", "codes", "first problem"):
        table.add_column(name, overflow="fold")
    for item in items:
        table.add_row(
            item.quarantined_at.strftime("%Y-%m-%d %H:%M:%S"),
            item.id,
            escape(item.source or "?"),
            escape(item.event or "?"),
            escape(", ".join(item.codes)),
            escape(_first_problem(item)),
        )
    return table


@quarantine_app.command("list")
def list_command(
    since: SinceOption = "1h",
    source: SourceOption = None,
    event: EventOption = None,
    code: CodeOption = None,
    version: VersionOption = None,
    limit: Annotated[int, typer.Option(help="show the newest N records (1-1000)")] = 50,
    as_json: JsonOption = False,
    broker: BrokerOption = "127.0.0.1:9092",
) -> None:
    """The newest quarantined events matching the filters, with their violations."""
    from streams.quarantine_view import parse_limit, read_quarantine

    where = _filter(since, source, event, code, version)
    try:
        limit = parse_limit(limit)
    except ValueError as exc:
        fail(str(exc))
    found = _run(broker, lambda: read_quarantine(broker, where, limit))
    if as_json:
        for item in found:
            _json_line(item)
        return
    if not found:
        console.print(f"nothing quarantined matches (since {escape(str(since))})")
        return
    console.print(_table(found, f"quarantine: the newest {len(found)} matching records"))
    console.print("[dim]`trackwatch quarantine show ID` prints one in full[/]")


@quarantine_app.command("show")
def show_command(
    record_id: Annotated[str, typer.Argument(metavar="ID", help="partition:offset:index")],
    as_json: Annotated[bool, typer.Option("--json", help="print the record as JSON")] = False,
    broker: BrokerOption = "127.0.0.1:9092",
) -> None:
    """One quarantined event in full: the call as received (PII masked) and every violation."""
    from streams.quarantine_view import find_quarantined, parse_id

    try:
        partition, offset, index = parse_id(record_id)
    except ValueError as exc:
        fail(str(exc))
    item = _run(broker, lambda: find_quarantined(broker, partition, offset, index))
    if item is None:
        fail(f"no quarantined record {partition}:{offset}:{index} (expired, or a wrong id)")
    if as_json:
        _json_line(item)
        return
    console.print(_table([item], f"quarantined record {item.id}"))
    problems = Table(title="violations")
    for name in ("code", "path", "expected", "got"):
        problems.add_column(name, overflow="fold")
    for v in item.violations:
        problems.add_row(*(escape(str(v.get(k, ""))) for k in ("code", "path", "expected", "got")))
    console.print(problems)
    record = item.record if isinstance(item.record, dict) else {"record": item.record}
    stored = record.get("envelope", record)
    text = orjson.dumps(stored, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
    console.print(escape(text), soft_wrap=True)


@quarantine_app.command("tail")
def tail_command(
    since: Annotated[
        str | None, typer.Option(help="start that far back instead of now (30m, 2h, ISO time)")
    ] = None,
    source: SourceOption = None,
    event: EventOption = None,
    code: CodeOption = None,
    version: VersionOption = None,
    as_json: JsonOption = False,
    duration: Annotated[
        float | None, typer.Option(min=0.0, help="stop after this many seconds")
    ] = None,
    broker: BrokerOption = "127.0.0.1:9092",
) -> None:
    """Print events as they are quarantined (Ctrl-C stops)."""
    from streams.quarantine_view import tail_quarantine

    where = _filter(since, source, event, code, version)

    def show(item: Any) -> None:
        if as_json:
            _json_line(item)
        else:
            console.print(
                f"{item.quarantined_at:%H:%M:%S} [bold]{item.id}[/] {escape(item.source or '?')} "
                f"{escape(item.event or '?')} [yellow]{escape(', '.join(item.codes))}[/] "
                f"{escape(_first_problem(item))}",
                soft_wrap=True,
            )

    async def follow() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        if duration is not None:
            loop.call_later(duration, stop.set)
        return await tail_quarantine(broker, where, show, stop)

    if not as_json:
        console.print("[dim]following events.quarantine; Ctrl-C stops[/]")
    _run(broker, follow)


@quarantine_app.command("serve")
def serve_command(
    host: Annotated[
        str, typer.Option(help="listen address (loopback by default: the API has no login)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port, 0 = any free")] = 6067,
    duration: Annotated[
        float | None, typer.Option(min=0.0, help="stop after this many seconds")
    ] = None,
    broker: BrokerOption = "127.0.0.1:9092",
) -> None:
    """Read-only HTTP API: GET /api/quarantine?since=&source=&event=&code=&version=&limit=
    and GET /api/quarantine/ID."""
    from aiohttp import web

    from streams.collector.http import bound_port
    from streams.quarantine_api import create_quarantine_api, is_loopback

    if not is_loopback(host):
        console.print(
            f"[yellow]warning:[/] listening on {escape(host)}: anyone who reaches it can read "
            "the quarantine (personal values are masked, the rest is not)",
            soft_wrap=True,
        )

    async def main() -> None:
        runner = web.AppRunner(create_quarantine_api(broker), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            fail(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port")
        bound = bound_port(runner)
        console.print(
            f"quarantine API on http://{escape(host)}:{bound}/api/quarantine "
            f"(Kafka {escape(broker)}); Ctrl-C stops it",
            soft_wrap=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        if duration is not None:
            loop.call_later(duration, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())


def register(app: typer.Typer) -> None:
    """Add the `quarantine` and `plans` command groups to the trackwatch CLI."""
    app.add_typer(quarantine_app, name="quarantine")
    app.add_typer(plans_app, name="plans")
