"""`trackwatch quarantine replay` (re-validate quarantined events after a plan fix) and
`trackwatch plans publish|current` (the plan the running workers validate with, hot reloaded)."""

from __future__ import annotations

import asyncio
import logging
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
    help="Replay quarantined events after a tracking-plan fix.", no_args_is_help=True
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
        from tracking_plan.loader import dump_plan

        typer.echo(dump_plan(active.plan))


def register(app: typer.Typer) -> None:
    """Add the `quarantine` and `plans` command groups to the trackwatch CLI."""
    app.add_typer(quarantine_app, name="quarantine")
    app.add_typer(plans_app, name="plans")
