"""`trackwatch detect`, `trackwatch backtest` and `trackwatch anomalies`.

trackwatch detect --input series.csv --output scored.csv     # generic univariate scorer
trackwatch backtest --days 14 --seed 7 --seed 8              # recall, false alerts, latency
trackwatch backtest --profile shop-5k --seed 7               # the independent generator's shop
trackwatch anomalies --file out/backtest/seed-7/alerts.jsonl --state all
"""

from __future__ import annotations

import json
import statistics
import urllib.error
import urllib.request
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams.errors import err_console, fail

DEFAULT_URL = "http://127.0.0.1:6066/api/anomalies"
MAX_RESPONSE_BYTES = 50_000_000
console = Console()


class StateFilter(StrEnum):
    firing = "firing"
    all = "all"


def register(app: typer.Typer) -> None:
    """Add detect, backtest and anomalies to the trackwatch CLI."""
    app.command("detect")(detect_command)
    app.command("backtest")(backtest_command)
    app.command("anomalies")(anomalies_command)


# ---------------------------------------------------------------------------------- detect


def detect_command(
    input_path: Annotated[Path, typer.Option("--input", help="CSV with columns timestamp,value")],
    output_path: Annotated[
        Path, typer.Option("--output", help="CSV to write (adds anomaly_score)")
    ],
) -> None:
    """Score any univariate series: adds anomaly_score in [0, 1) (causal, one high score per
    event onset, comparable across series). Repeated, backwards or gapped timestamps are accepted
    with a warning on stderr."""
    from detectors.univariate import DetectInputError, detect_csv

    if input_path.resolve() == output_path.resolve():
        fail("--output must differ from --input (the input would be overwritten while read)")
    try:
        rows = detect_csv(input_path, output_path, warn=_warn)
    except DetectInputError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{output_path}: cannot write ({exc.strerror or exc})")
    console.print(f"scored {rows:,} rows → {output_path}")


def _warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------- backtest


DEFAULT_PROFILE = "ecommerce"  # our own simulator (streams.simulator) with --plan/--incidents


def _profile_help() -> str:
    from simulation.profiles import PROFILES

    return (
        f"Traffic profile: {DEFAULT_PROFILE} (our own simulator with --plan/--incidents) or one "
        f"of the independent generator's: {', '.join(PROFILES)}; 'list' describes them"
    )


def backtest_command(
    profile: Annotated[str, typer.Option("--profile", help=_profile_help())] = DEFAULT_PROFILE,
    days: Annotated[
        float | None,
        typer.Option("--days", help="Simulated days (default: 14, or the profile's)", min=0.01),
    ] = None,
    users_per_day: Annotated[
        int | None,
        typer.Option(
            "--users-per-day",
            help="Active users per simulated day (default: 5000, or the profile's)",
            min=100,
        ),
    ] = None,
    seeds: Annotated[
        list[int] | None, typer.Option("--seed", help="Random seed; repeat for several runs")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where alerts and PNGs go")] = Path(
        "out/backtest"
    ),
    plan_path: Annotated[
        Path | None,
        typer.Option(
            "--plan", help="Tracking plan, ecommerce profile (default: examples/ecommerce.yaml)"
        ),
    ] = None,
    schedule: Annotated[
        Path | None,
        typer.Option(
            "--incidents",
            help="Incident schedule YAML, ecommerce profile (default: examples/incidents.yaml)",
        ),
    ] = None,
    detectors: Annotated[
        Path | None,
        typer.Option("--detectors", help="detector tuning YAML (see examples/detectors.yaml)"),
    ] = None,
) -> None:
    """Simulate traffic with labelled incidents, replay it through the detectors and score them:
    recall per incident class, false alerts per day, detection latency; one PNG per incident."""
    from detectors.plots import plot_incident, safe_name
    from simulation.profiles import PROFILES, ProfileError
    from streams.backtest_run import run_backtest, run_profile_backtest

    profile = profile.strip()
    if profile == "list":
        _print_profiles()
        return
    if profile != DEFAULT_PROFILE and profile not in PROFILES:
        fail(
            f"unknown profile {profile!r}; use {DEFAULT_PROFILE} or one of: "
            f"{', '.join(PROFILES)} (--profile list describes them)"
        )
    if profile == DEFAULT_PROFILE:
        plan_path = plan_path or Path("examples/ecommerce.yaml")
        schedule = schedule or Path("examples/incidents.yaml")
        for path, what in ((plan_path, "plan"), (schedule, "incident schedule")):
            if not path.is_file():
                fail(f"{path}: {what} file not found (use --plan / --incidents)")
        days = 14.0 if days is None else days
        users_per_day = 5000 if users_per_day is None else users_per_day
    else:
        if plan_path is not None or schedule is not None:
            fail(
                f"--plan and --incidents apply to the {DEFAULT_PROFILE} profile only; profile "
                f"{profile} has its own plan (examples/shop.yaml) and incidents"
            )
        days = PROFILES[profile].days if days is None else days
        users_per_day = PROFILES[profile].users_per_day if users_per_day is None else users_per_day
    from streams.cli.worker import tuning_option

    tuning = tuning_option(detectors)
    seeds = seeds or [7]
    runs = []
    for seed in seeds:
        with Progress(
            TextColumn(f"{profile}, seed {seed}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} simulated hours"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("replay", total=days * 24)

            def progress(hours: float, task=task, bar=bar) -> None:
                bar.update(task, completed=hours)

            try:
                if profile == DEFAULT_PROFILE:
                    assert plan_path is not None and schedule is not None
                    run = run_backtest(
                        days,
                        users_per_day,
                        seed,
                        plan_path=plan_path,
                        schedule_path=schedule,
                        engine_config=tuning,
                        progress=progress,
                    )
                else:
                    run = run_profile_backtest(
                        profile,
                        seed,
                        days=days,
                        users_per_day=users_per_day,
                        engine_config=tuning,
                        progress=progress,
                    )
            except (ValueError, ProfileError) as exc:  # plan / schedule errors name file, entry
                fail(str(exc))
        runs.append(run)
        target = out_dir / f"seed-{seed}"
        target.mkdir(parents=True, exist_ok=True)
        with (target / "alerts.jsonl").open("wb") as handle:
            for anomaly in run.alerts:
                handle.write(orjson.dumps(anomaly.to_dict()) + b"\n")
        summary = {
            "profile": profile,
            "seed": seed,
            "users_per_day": users_per_day,
            "events": run.events,
        }
        summary.update(run.score.summary())
        (target / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        for label in run.score.expected + [lb for lb in run.score.labels if not lb.expect_alert]:
            key = run.plotted.get(label.name)
            if key is None:
                continue
            hits = [run.score.found[label.name]] if label.name in run.score.found else []
            plot_incident(
                target / f"{safe_name(label.name)}.png", label, key, run.history[key], hits
            )
        _print_run(run, target)
    if len(runs) > 1:
        _print_overall(runs)


def _print_profiles() -> None:
    from simulation.profiles import PROFILES

    table = Table(title="backtest profiles")
    for column in ("profile", "users/day", "days", "what"):
        table.add_column(column, overflow="fold")
    table.add_row(
        DEFAULT_PROFILE, "5000", "14", "our own simulator (streams/simulator/traffic.py) with "
        "examples/ecommerce.yaml and examples/incidents.yaml (--plan, --incidents)",
    )  # fmt: skip
    for profile in PROFILES.values():
        table.add_row(
            profile.name, f"{profile.users_per_day}", f"{profile.days:g}", profile.summary
        )
    console.print(table)


def _minutes(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} min"


def _print_run(run: Any, target: Path) -> None:
    score = run.score
    missed = [lb.name for lb in score.expected if lb.name not in score.found]
    table = Table(title=f"seed {run.seed}: {run.events:,} events, {score.days:g} days")
    for column in ("incident class (or kind)", "found", "recall", "latency"):
        table.add_column(column)
    for group, entry in score.by_class().items():
        found, total = entry["found"], entry["total"]
        latencies = [v for v in entry["latency"].values() if v is not None]
        table.add_row(
            group,
            f"{found}/{total}",
            f"{found / total:.2f}",
            ", ".join(_minutes(v) for v in latencies) or "—",
        )
    table.add_row(
        "[bold]all[/]",
        f"{len(score.found)}/{len(score.expected)}",
        f"[bold]{score.recall:.2f}[/]",
        f"median {_minutes(score.median_latency)}, max {_minutes(score.max_latency)}",
    )
    console.print(table)
    console.print(
        f"false alerts: {len(score.false_alerts)} in {score.days:g} days = "
        f"[bold]{score.false_per_day:.2f}/day[/]; alerts: {len(score.spans)} "
        f"({len(score.related_alerts)} on other series an incident changed, "
        f"{score.reopened} reopenings); "
        f"missed: {', '.join(missed) or 'none'}"
    )
    for span in score.false_alerts[:10]:
        console.print(f"  false: {span.kind} {span.series} — {span.explanation}", highlight=False)
    console.print(f"alerts, summary and PNGs: {target}")


def _print_overall(runs: list[Any]) -> None:
    found = sum(len(r.score.found) for r in runs)
    total = sum(len(r.score.expected) for r in runs)
    days = sum(r.score.days for r in runs)
    false = sum(len(r.score.false_alerts) for r in runs)
    reopened = sum(r.score.reopened for r in runs)
    latencies = [v for r in runs for v in r.score.latency.values()]
    median = statistics.median(latencies) if latencies else None
    console.print(
        f"[bold]all {len(runs)} seeds[/]: recall {found}/{total} = {found / max(total, 1):.2f}, "
        f"false alerts {false / days:.2f}/day, median latency {_minutes(median)}, "
        f"max {_minutes(max(latencies) if latencies else None)}, alerts reopened {reopened}"
    )


# ---------------------------------------------------------------------------------- anomalies


def anomalies_command(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="TRACKWATCH_ANOMALIES_URL",
            help=f"[env TRACKWATCH_ANOMALIES_URL; default: the running `trackwatch run`, else "
            f"{DEFAULT_URL}]",
        ),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="An ALERTS.jsonl file instead of the worker")
    ] = None,
    state: Annotated[StateFilter, typer.Option("--state", help="firing or all")] = (
        StateFilter.firing
    ),
) -> None:
    """List anomalies from a running worker (/api/anomalies) or an ALERTS.jsonl file."""
    if url and file:
        fail("give either --url or --file, not both")
    models = None
    if file:
        items = _read_file(file)
    else:
        items, models = _fetch(url or DEFAULT_URL)
    if state is StateFilter.firing:
        items = [a for a in items if a.get("state") in ("firing", "pending")]
    table = Table(title=f"{len(items)} anomalies ({state.value})")
    for column in ("state", "kind", "series", "since", "observed / expected", "explanation"):
        table.add_column(column, overflow="fold")
    for item in sorted(items, key=lambda a: str(a.get("started_at")), reverse=True):
        series = item.get("series") or {}
        table.add_row(
            str(item.get("state", "?")),
            str(item.get("kind", "?")),
            ", ".join(f"{k}={v}" for k, v in series.items()) if isinstance(series, dict) else "?",
            _short_time(item.get("started_at")),
            f"{_num(item.get('observed'))} / {_num(item.get('expected'))}",
            str(item.get("explanation", "")),
        )
    console.print(table)
    if isinstance(models, dict) and isinstance(models.get("summary"), str):
        console.print(f"models: {models['summary']}", soft_wrap=True)


def _num(value: Any) -> str:
    if not isinstance(value, int | float):
        return "?"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:,.0f}"


def _short_time(value: Any) -> str:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return "?"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _check_items(items: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        fail(f"{where}: expected a list of anomaly objects")
    for index, item in enumerate(items, 1):
        if "id" not in item or "kind" not in item:
            fail(f"{where}: anomaly #{index} has no id/kind; is this an anomalies source?")
    return items


def _fetch(url: str) -> tuple[list[dict[str, Any]], Any]:
    """The anomalies a worker serves, and its `models` status (None if it says nothing)."""
    if not url.startswith(("http://", "https://")):
        fail(f"--url {url!r} must start with http:// or https://")
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        fail(f"{url}: HTTP {exc.code} {exc.reason}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        fail(f"cannot reach {url} ({reason}); is the worker running (trackwatch run)?")
    if len(body) > MAX_RESPONSE_BYTES:
        fail(f"{url}: response larger than {MAX_RESPONSE_BYTES:,} bytes")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        fail(f"{url}: the answer is not JSON")
    items = data.get("anomalies") if isinstance(data, dict) else data
    models = data.get("models") if isinstance(data, dict) else None
    return _check_items(items, url), models


def _read_file(path: Path) -> list[dict[str, Any]]:
    """The latest line of each alert id of an ALERTS.jsonl file."""
    latest: dict[str, dict[str, Any]] = {}
    try:
        handle = path.open("rb")
    except OSError as exc:
        fail(f"{path}: cannot read ({exc.strerror or exc})")
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                fail(f"{path}:{number}: not a JSON line ({exc})")
            (checked,) = _check_items([item], f"{path}:{number}")
            latest[str(checked["id"])] = checked
    return list(latest.values())
