"""`trackwatch simulate`: realistic synthetic traffic, sent to a collector or written to a file.

trackwatch simulate                        # to the collector, live: events stamped now
trackwatch simulate --history 28h          # first a day of past traffic at once, then live
trackwatch simulate --speed 60             # 1 simulated hour per minute, from --days ago
trackwatch simulate --out events.jsonl.gz --labels-out labels.json   # data set for backtests
trackwatch simulate --profile shop-5k --out d/events.jsonl.gz   # + labels.json, annotations.yaml

Sending to a live stack runs on the real clock by default (speed 1): the simulated users act now,
like real ones, so events a person sends by hand meanwhile (the README's curl) are stamped the
same way and neither side's events arrive "late" for the other's windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import math
import os
import signal
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Annotated, Any

import orjson
import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from streams.envelope import parse_received_at
from streams.errors import fail
from streams.simulator.incidents import Incident, IncidentError, load_incidents, parse_duration
from streams.simulator.send import SendError, SendStats, check_url, send
from streams.simulator.traffic import simulate
from tracking_plan.loader import PlanError, load_plan
from tracking_plan.model import Plan

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_INCIDENTS = Path("examples/incidents.yaml")
DEFAULT_START = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday: files are reproducible
HISTORY_REPORT = 2000  # `write_history` reports every chunk; print one line per 100k events
console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add `simulate` to the trackwatch CLI."""
    app.command("simulate")(simulate_command)


def simulate_command(
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            "--collector",
            help="Collector base URL to send to [env TRACKWATCH_COLLECTOR_URL; default: the "
            f"running `trackwatch run`'s, else {DEFAULT_URL}]",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write envelopes to this JSONL file instead (.gz: gzip)"),
    ] = None,
    plan_path: Annotated[Path, typer.Option("--plan", help="Tracking plan")] = Path(
        "examples/ecommerce.yaml"
    ),
    days: Annotated[
        float | None, typer.Option("--days", help="Simulated days (default: 14, or the profile's)")
    ] = None,
    users_per_day: Annotated[
        int | None,
        typer.Option(
            "--users-per-day", help="Active users per day (default: 20000, or the profile's)"
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same data)")] = 7,
    incidents_path: Annotated[
        Path | None,
        typer.Option(
            "--incidents", help=f"Incident schedule to inject [default: {DEFAULT_INCIDENTS}]"
        ),
    ] = None,
    no_incidents: Annotated[
        bool, typer.Option("--no-incidents", help="Inject no incidents")
    ] = False,
    labels_out: Annotated[
        Path | None,
        typer.Option("--labels-out", help="Write the ground truth of the incidents (JSON)"),
    ] = None,
    annotations_out: Annotated[
        Path | None,
        typer.Option("--annotations-out", help="Write the campaigns as annotations (YAML)"),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--start",
            help="Simulated start (ISO-8601, UTC). Default: 2026-11-02 for --out; when sending, "
            "now minus --history on the real clock (--speed 1), now minus --days otherwise",
        ),
    ] = None,
    speed: Annotated[
        float,
        typer.Option(
            "--speed",
            help="Simulated seconds per real second when sending: 1 = the real clock (events "
            "stamped now), 60 = an hour a minute from --days ago, 0 = no pacing",
        ),
    ] = 1.0,
    history: Annotated[
        str | None,
        typer.Option(
            "--history",
            help="On the real clock, first send this much past traffic (e.g. 28h, 2d) at once, "
            "then go on live: models learn from it in minutes",
        ),
    ] = None,
    history_broker: Annotated[
        str | None,
        typer.Option(
            "--history-broker",
            help="Write the past (--history, or from a --start before now) straight into "
            "events.raw on this Kafka (HOST:PORT) instead of through the collector",
        ),
    ] = None,
    ready_file: Annotated[
        Path | None,
        typer.Option("--ready-file", help="Written once the history is in (before live traffic)"),
    ] = None,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop sending after this many real seconds")
    ] = None,
    max_events: Annotated[
        int | None, typer.Option("--max-events", help="Stop after N events")
    ] = None,
    write_keys_path: Annotated[
        Path, typer.Option("--write-keys", help="Write keys {keys: {KEY: SOURCE}}")
    ] = Path("examples/write_keys.yaml"),
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            help="A traffic profile of the independent generator (see `trackwatch backtest "
            "--profile list`) instead of --plan/--incidents; needs --out, and writes "
            "labels.json and annotations.yaml next to it",
        ),
    ] = None,
) -> None:
    """Generate realistic Segment traffic (seasonality, funnels, app rollouts, incidents)."""
    if to is not None and out is not None:
        fail("give either --to URL (send) or --out FILE (write), not both")
    if profile is not None:
        _simulate_profile(
            profile, out, days, users_per_day, seed, no_incidents, max_events,
            given=[name for name, value in (
                ("--to", to), ("--plan", None if plan_path == Path("examples/ecommerce.yaml")
                               else plan_path), ("--incidents", incidents_path),
                ("--start", start), ("--history", history)) if value is not None],
            labels_out=labels_out, annotations_out=annotations_out,
        )  # fmt: skip
        return
    days = 14.0 if days is None else days
    users_per_day = 20_000 if users_per_day is None else users_per_day
    _check_numbers(days, users_per_day, speed, duration, max_events)
    sending = out is None
    url = ""
    if sending:
        url = check_or_fail(to or os.environ.get("TRACKWATCH_COLLECTOR_URL") or DEFAULT_URL)
    past = _history(history, history_broker, sending, speed, start)
    plan = _load_plan(plan_path)
    begin = _start(start, sending, speed, days, past)
    if incidents_path is None and not no_incidents and not DEFAULT_INCIDENTS.exists():
        console.print(f"note: no {DEFAULT_INCIDENTS} here: simulating without incidents")
        no_incidents = True
    path = incidents_path or DEFAULT_INCIDENTS
    incidents = [] if no_incidents else _load_incidents(path, begin, plan)
    finish = begin + timedelta(days=days)
    outside = [i for i in incidents if i.start >= finish]
    if outside:
        console.print(
            f"note: {len(outside)} of {len(incidents)} scheduled incidents start after the "
            f"simulated {days:g} days and are left out"
        )
        incidents = [i for i in incidents if i.start < finish]
    if labels_out is not None:
        _write_labels(labels_out, plan, begin, days, users_per_day, seed, incidents)
    if annotations_out is not None:
        _write_annotations(annotations_out, incidents)
    envelopes = simulate(plan, begin, days, users_per_day, seed, incidents)
    if sending:
        keys = _write_keys(write_keys_path)
        _send(
            envelopes, url, keys, begin, days, speed, duration, max_events,
            history_broker=history_broker, ready_file=ready_file,
        )  # fmt: skip
    else:
        assert out is not None
        _write_file(envelopes, out, begin, days, max_events)


# ------------------------------------------------------------------------------------ profiles


def _simulate_profile(
    name: str,
    out: Path | None,
    days: float | None,
    users_per_day: int | None,
    seed: int,
    no_incidents: bool,
    max_events: int | None,
    *,
    given: list[str],
    labels_out: Path | None,
    annotations_out: Path | None,
) -> None:
    """A profile's traffic to `out`, its labels and annotations next to it (or where given),
    for `trackwatch replay --plan examples/shop.yaml --annotations ANNOTATIONS` and scoring."""
    from simulation.generator import generate
    from simulation.profiles import PLAN, ProfileError, get_profile, scenario

    if given:
        fail(f"{', '.join(given)} cannot be used with --profile (a profile has its own)")
    if out is None:
        fail("--profile writes files: give --out EVENTS.jsonl.gz")
    if max_events is not None and max_events <= 0:
        fail(f"--max-events must be positive, got {max_events}")
    try:
        chosen = get_profile(name.strip())
        run = scenario(chosen, days=days, users_per_day=users_per_day, incidents=not no_incidents)
    except ProfileError as exc:
        fail(str(exc))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"{out.parent}: cannot create the folder ({exc.strerror or exc})")
    labels_out = labels_out or out.parent / "labels.json"
    annotations_out = annotations_out or out.parent / "annotations.yaml"
    document = run.document(seed)
    document["plan"] = f"examples/{PLAN}"
    _write_bytes(labels_out, orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    entries = run.annotations()
    header = "# Announced campaigns: expected traffic changes that must not alert.\n"
    text = yaml.safe_dump(entries, sort_keys=False, allow_unicode=True) if entries else "[]\n"
    _write_bytes(annotations_out, (header + text).encode("utf-8"))
    begin = datetime.fromtimestamp(run.start, UTC)
    _write_file(generate(run, seed), out, begin, run.days, max_events)
    console.print(
        f"profile {chosen.name}: labels in {labels_out}, annotations in {annotations_out}; "
        f"replay with: trackwatch replay --plan {chosen.plan_path()} --events {out} "
        f"--annotations {annotations_out} --alerts-out ALERTS.jsonl"
    )


# ------------------------------------------------------------------------------------ checks


def _check_numbers(
    days: float, users: int, speed: float, duration: float | None, max_events: int | None
) -> None:
    if not math.isfinite(days) or not 0 < days <= 366:
        fail(f"--days must be between 0 and 366, got {days:g}")
    if not 1 <= users <= 10_000_000:
        fail(f"--users-per-day must be between 1 and 10000000, got {users}")
    if not math.isfinite(speed) or speed < 0:
        fail(f"--speed must be 0 or a positive number, got {speed:g}")
    if duration is not None and (not math.isfinite(duration) or duration <= 0):
        fail(f"--duration must be a positive number of seconds, got {duration:g}")
    if max_events is not None and max_events <= 0:
        fail(f"--max-events must be positive, got {max_events}")


def check_or_fail(url: str) -> str:
    try:
        return check_url(url)
    except SendError as exc:
        fail(str(exc))


def _load_plan(path: Path) -> Plan:
    try:
        return load_plan(path)
    except PlanError as exc:
        fail(f"the plan cannot be used:\n{exc}")
    except OSError as exc:
        fail(f"{path}: cannot read the plan ({exc.strerror or exc})")


def _history(
    text: str | None, broker: str | None, sending: bool, speed: float, start: str | None
) -> timedelta:
    """The --history to send before going live (zero when none)."""
    if broker is not None:
        if not sending or speed != 1:
            fail("--history-broker is for sending on the real clock (--speed 1)")
        if ":" not in broker:
            fail(f"--history-broker must be HOST:PORT, got {broker!r}")
    if text is None:
        return timedelta(0)
    if not sending:
        fail("--history is for sending to a collector; with --out use --start and --days")
    if speed != 1:
        fail(f"--history needs the real clock (--speed 1), got --speed {speed:g}")
    if start is not None:
        fail("give either --history or --start (the history is what lies before now)")
    try:
        past = parse_duration(text)
    except ValueError as exc:
        fail(f"--history: {exc}")
    if past > timedelta(days=60):
        fail(f"--history {text!r}: at most 60 days")
    return past


def _start(
    text: str | None, sending: bool, speed: float, days: float, history: timedelta
) -> datetime:
    if text is None:
        if not sending:
            return DEFAULT_START
        now = datetime.now(UTC).replace(microsecond=0)
        if speed == 1:  # the real clock: the past is history, sent at once
            return now - history
        return now - timedelta(days=days)  # fast (or unpaced) replay: no event in the future
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        fail(f"--start {text!r} is not an ISO-8601 time such as 2026-11-02T00:00:00Z")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if not 2000 <= moment.year <= 2100:
        fail(f"--start {text!r} must lie between the years 2000 and 2100")
    return moment.astimezone(UTC)


def _load_incidents(path: Path, begin: datetime, plan: Plan) -> list[Incident]:
    try:
        return load_incidents(path, begin, plan)
    except IncidentError as exc:
        fail(str(exc))


def _write_keys(path: Path) -> dict[str, str]:
    from streams.settings import SettingsError, load_write_keys

    try:
        keys = load_write_keys(path)
    except SettingsError as exc:
        fail(str(exc))
    by_source: dict[str, str] = {}
    for key, source in keys.items():
        by_source.setdefault(source, key)
    return by_source


# ------------------------------------------------------------------------------------ outputs


def labels_document(
    plan: Plan,
    begin: datetime,
    days: float,
    users_per_day: int,
    seed: int,
    incidents: list[Incident],
) -> dict[str, Any]:
    """The ground truth of a simulated data set (what `--labels-out` writes)."""
    end = begin + timedelta(days=days)
    return {
        "generator": "trackwatch simulate",
        "plan": plan.name,
        "plan_version": plan.version,
        "seed": seed,
        "users_per_day": users_per_day,
        "start": _iso(begin),
        "end": _iso(end),
        "incidents": [incident.label() for incident in incidents],
        "annotations": [a for i in incidents if (a := i.annotation()) is not None],
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _write_labels(path: Path, *args: Any) -> None:
    document = labels_document(*args)
    _write_bytes(path, orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")


def annotations_yaml(incidents: list[Incident]) -> str:
    """The campaigns of `incidents` in the annotations file format (detectors.annotations)."""
    entries = [a for i in incidents if (a := i.annotation()) is not None]
    header = "# Announced campaigns: expected traffic changes that must not alert.\n"
    return header + (
        yaml.safe_dump(entries, sort_keys=False, allow_unicode=True) if entries else "[]\n"
    )


def _write_annotations(path: Path, incidents: list[Incident]) -> None:
    _write_bytes(path, annotations_yaml(incidents).encode("utf-8"))


def _write_bytes(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        fail(f"{path}: cannot write ({exc.strerror or exc})")


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[simtime]}"),
        TextColumn("{task.fields[events]:>10,} events"),
        TextColumn("{task.fields[extra]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _sim_time(envelope: dict[str, Any]) -> str:
    return envelope["received_at"][:16].replace("T", " ")


def _write_file(
    envelopes: Iterator[dict[str, Any]],
    path: Path,
    begin: datetime,
    days: float,
    max_events: int | None,
) -> None:
    """Write JSONL (gzip for .gz). Compression runs in a writer thread (zlib releases the GIL),
    at most two chunks ahead, so it overlaps with generating the next chunk."""
    start_ts = begin.timestamp()
    count = 0
    began = time.perf_counter()
    try:
        raw = path.open("wb")
    except OSError as exc:
        fail(f"{path}: cannot write ({exc.strerror or exc})")
    handle: IO[bytes] = raw
    if path.suffix == ".gz":  # no name, no time in the header: same seed, same bytes
        handle = gzip.GzipFile(filename="", mode="wb", compresslevel=1, fileobj=raw, mtime=0)
    pending: deque[Future[int]] = deque()
    with raw, handle, ThreadPoolExecutor(1) as writer, _progress() as progress:
        task = progress.add_task("simulate", total=days * 86_400, simtime="", events=0, extra="")
        lines: list[bytes] = []
        dumps = orjson.dumps

        def flush() -> None:
            pending.append(writer.submit(handle.write, b"\n".join(lines) + b"\n"))
            lines.clear()
            while len(pending) > 2 or (pending and pending[0].done()):
                pending.popleft().result()  # raises the writer's OSError here

        try:
            for envelope in envelopes:
                lines.append(dumps(envelope))
                count += 1
                if count % 20_000 == 0:
                    flush()
                    done = parse_received_at(envelope["received_at"])
                    progress.update(
                        task,
                        completed=done.timestamp() - start_ts,
                        simtime=_sim_time(envelope),
                        events=count,
                    )
                if max_events is not None and count >= max_events:
                    break
            if lines:
                flush()
            while pending:
                pending.popleft().result()
        except OSError as exc:
            fail(f"{path}: cannot write ({exc.strerror or exc})")
        elapsed = time.perf_counter() - began
        rate = count / elapsed if elapsed > 0 else 0.0
        progress.update(task, completed=days * 86_400, events=count, extra=f"{rate:,.0f}/s")
    console.print(f"wrote {count:,} envelopes to {path} ({rate:,.0f} envelopes/s)")


def _send(
    envelopes: Iterator[dict[str, Any]],
    url: str,
    keys: dict[str, str],
    begin: datetime,
    days: float,
    speed: float,
    duration: float | None,
    max_events: int | None,
    *,
    history_broker: str | None = None,
    ready_file: Path | None = None,
) -> None:
    start_ts = begin.timestamp()
    if history_broker is not None:
        envelopes = _write_history(envelopes, history_broker)
    if ready_file is not None:
        _write_bytes(ready_file, orjson.dumps({"live_from": _iso(datetime.now(UTC))}) + b"\n")
    # the real clock maps the present to the present; a replay maps its start to the present
    sim_start = time.time() if speed == 1 else start_ts
    with _progress() as progress:
        total = days * 86_400
        task = progress.add_task("send", total=total, simtime="", events=0, extra="")
        latest: dict[str, Any] = {}

        def watched() -> Iterator[dict[str, Any]]:
            for envelope in envelopes:
                latest["envelope"] = envelope
                yield envelope

        def report(stats: SendStats) -> None:
            envelope = latest.get("envelope")
            if envelope is None:
                return
            done = parse_received_at(envelope["received_at"])
            progress.update(
                task,
                completed=min(total, done.timestamp() - start_ts),
                simtime=_sim_time(envelope),
                events=stats.sent,
                extra=f"ok {stats.accepted:,} rejected {stats.rejected:,}",
            )

        clock = "the real clock" if speed == 1 else f"speed {speed:g}"
        console.print(
            f"sending to {url} on {clock} (event time = simulated `timestamp`, from {_iso(begin)})"
        )

        async def run() -> SendStats:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(signum, stop.set)  # stop cleanly, report
            return await send(
                watched(),
                url,
                keys,
                speed=speed,
                sim_start=sim_start,
                duration=duration,
                max_events=max_events,
                progress=report,
                stop=stop,
            )

        try:
            stats = asyncio.run(run())
        except SendError as exc:
            fail(str(exc))
    console.print(
        f"sent {stats.sent:,} events: {stats.accepted:,} accepted, {stats.rejected:,} rejected, "
        f"{stats.retries:,} retries"
    )
    if stats.rejected:
        fail(f"{stats.rejected:,} events were rejected; first error: {stats.first_error}", code=1)


def _write_history(envelopes: Iterator[dict[str, Any]], broker: str) -> Iterator[dict[str, Any]]:
    """Write the past envelopes into events.raw on `broker`; the rest of the stream."""
    from streams.simulator.send import write_history

    began = time.monotonic()

    def report(count: int, moment: str) -> None:
        if count % 100_000 < HISTORY_REPORT:
            console.print(f"history: {count:,} events written, up to {moment[:16]}Z")

    iterator = iter(envelopes)
    try:
        count, left = asyncio.run(write_history(iterator, broker, progress=report))
    except SendError as exc:
        fail(str(exc), code=1)
    elapsed = time.monotonic() - began
    console.print(
        f"history: {count:,} events written into events.raw on {broker} in {elapsed:.1f} s; "
        "live from now"
    )
    if left is None:
        return iter(())
    return itertools.chain([left], iterator)
