"""`trackwatch run`: the whole product on one machine, kept running while people use it.

Order of things:
1. the embedded broker (memory, or `--durable`: its data kept in files under `--data-dir`,
   `streams.durable`) and the topics;
2. the worker, a supervised child process (`streams.supervisor`: restarted with backoff when it
   dies, even by SIGKILL; the broker and the collector stay up meanwhile);
3. with `--simulate`, the simulator: first `--warm-up` hours of simulated history written
   straight into events.raw (the models learn from it in a minute or two instead of a day), then
   live traffic on the real clock, with one labelled incident a few minutes in;
4. the collector, in this process, only once that history is in Kafka: events sent by hand are
   stamped now and come after it in every partition, so they never make simulated ones late;
5. the state file (`streams.stack_state`) that tells every other command where all this listens,
   and a prometheus.yml with the real ports in the log folder.

While running, the status line says what was collected, whether the models still learn ("learning
until …") and how many anomalies fire; new anomalies are printed as they fire. Ctrl-C, SIGTERM or
`--duration` stop the parts in reverse order. Children die with this process even if it is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.panel import Panel
from rich.table import Table

from streams.cli.service import (
    HOST_OPTION,
    PORT_OPTION,
    WRITE_KEYS_OPTION,
    ServiceError,
    console,
    install_stop_signals,
    load_settings,
    running_collector,
    wait_stop,
)
from streams.errors import fail
from streams.settings import Settings
from streams.stack_state import StackState, read_state, remove_state, state_path, write_state
from streams.supervisor import Child, ChildFailed, exit_text

DEFAULT_WARM_UP_HOURS = 28.0  # the models learn for a day (volumes); 28 h leaves a margin
# the live incident starts on the first whole minute of live traffic: found 4-8 min later
# (detection after 3-5 windows, plus the 2 minutes windows stay open for late events)
INCIDENT_AFTER = timedelta(0)
INCIDENT_LASTS = timedelta(minutes=30)
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"
POLL_SECONDS = 2.0
PRINT_STATUS_SECONDS = 30.0  # how often the status is printed when the output is not a terminal

PLAN_OPTION = typer.Option(
    None, "--plan", help="Tracking plan [env TRACKWATCH_PLAN; default examples/ecommerce.yaml]"
)
WORKER_PORT_OPTION = typer.Option(
    None, "--worker-port", help="Worker /api/anomalies port, 0 = any free [default 6066]"
)
WORKER_METRICS_PORT_OPTION = typer.Option(
    None, "--worker-metrics-port", help="Worker /metrics port, 0 = any free [default 9108]"
)
SIMULATE_OPTION = typer.Option(
    True, "--simulate/--no-simulate", help="Send synthetic traffic to the collector"
)
# One worker reads every partition anyway. With several, the worker reading a backlog (the
# warm-up) lost records: its window merger leaves out a partition that sent nothing for 2 min of
# wall time, and what that partition sends later for released windows is dropped
RUN_PARTITIONS_OPTION = typer.Option(
    1, "--partitions", min=1, max=256, help="Partitions per topic (one worker needs one)"
)
WARM_UP_OPTION = typer.Option(
    DEFAULT_WARM_UP_HOURS,
    "--warm-up",
    min=0.0,
    max=24 * 60.0,
    help="With --simulate: hours of simulated history the models learn from before live "
    "traffic (0: none; the models then learn from a day of live traffic)",
)
INCIDENT_OPTION = typer.Option(
    True,
    "--incident/--no-incident",
    help="With --simulate: play a labelled incident live, a few minutes in",
)
DURABLE_OPTION = typer.Option(
    False,
    "--durable",
    help="Keep the broker's data (events, quarantine, the models' state) across restarts, "
    "in files under --data-dir",
)
DATA_DIR_OPTION = typer.Option(
    Path("data"), "--data-dir", help="With --durable: where the data is kept [default ./data]"
)
DURATION_OPTION = typer.Option(
    None, "--duration", min=0.0, help="Stop by itself after this many seconds"
)
LOG_DIR_OPTION = typer.Option(None, "--log-dir", help="Where the logs go [a new temp folder]")


# ---------------------------------------------------------------------------------------------
# The live incident
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveIncident:
    """The labelled incident `run --simulate` plays live, so that a first run shows an alert."""

    start: datetime
    end: datetime
    name: str = "Product pages crawled by a bot"
    kind: str = "spike"
    params: dict[str, Any] = field(
        default_factory=lambda: {"event": "Product Viewed", "source": "web", "factor": 10}
    )

    def schedule(self, begin: datetime) -> str:
        """The incidents file (`streams.simulator.incidents` format) for a simulation from
        `begin`."""
        midnight = begin.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        day = (self.start - midnight).days
        minutes = int((self.end - self.start).total_seconds() // 60)
        entry = {
            "name": self.name,
            "kind": self.kind,
            "at": f"day {day} {self.start:%H:%M}",
            "duration": f"{minutes}m",
            **self.params,
        }
        return "# played live by `trackwatch run --simulate`\n" + yaml.safe_dump(
            {"incidents": [entry]}, sort_keys=False
        )

    def describe(self) -> str:
        p = self.params
        return (
            f"{self.name}: {self.kind} of {p['event']} on {p['source']} (×{p['factor']}), "
            f"{self.start:%H:%M}–{self.end:%H:%M} UTC"
        )

    def found_by(self, anomaly: dict[str, Any]) -> bool:
        """Does `anomaly` (an /api/anomalies item) report this incident: same kind and event,
        its source or the event's total, begun once the incident had (a window's leeway)?"""
        series = anomaly.get("series") or {}
        if not isinstance(series, dict) or anomaly.get("kind") != self.kind:
            return False
        try:
            began = datetime.fromisoformat(str(anomaly.get("started_at")).replace("Z", "+00:00"))
        except ValueError:
            return False
        if began.tzinfo is None or began < self.start - timedelta(minutes=1):
            return False
        return series.get("event") == self.params["event"] and series.get("source") in (
            None,
            self.params["source"],
        )


def live_incident(live_from: datetime) -> LiveIncident:
    """The incident, starting on the first whole minute `INCIDENT_AFTER` after `live_from`."""
    at = (live_from + INCIDENT_AFTER).replace(second=0, microsecond=0) + timedelta(minutes=1)
    return LiveIncident(at, at + INCIDENT_LASTS)


# ---------------------------------------------------------------------------------------------
# Command lines of the children
# ---------------------------------------------------------------------------------------------


def worker_args(settings: Settings, data_dir: Path) -> list[str]:
    """Command line of the worker child (`trackwatch worker`, streams/cli/worker.py)."""
    return [
        "worker",
        "--broker", settings.broker,
        "--plan", str(settings.plan),
        "--host", settings.host,
        "--web-port", str(settings.worker_port),
        "--metrics-port", str(settings.worker_metrics_port),
        "--data-dir", str(data_dir),
    ]  # fmt: skip


def simulate_args(settings: Settings, collector_url: str) -> list[str]:
    """Command line of the simulator child sending live traffic (`trackwatch simulate`)."""
    return ["simulate", "--collector", collector_url, "--plan", str(settings.plan),
            "--write-keys", str(settings.write_keys)]  # fmt: skip


def warm_up_args(
    settings: Settings,
    collector_url: str,
    begin: datetime,
    incidents: Path | None,
    ready: Path,
) -> list[str]:
    """The simulator's first start: the history from `begin` to now straight into events.raw,
    then live traffic on the real clock (with the live incident, or none)."""
    past = max(0.0, (datetime.now(UTC) - begin).total_seconds() / 86400)
    return [
        *simulate_args(settings, collector_url),
        "--start", begin.isoformat().replace("+00:00", "Z"),
        "--history-broker", settings.broker,
        "--days", f"{past + 30:.4f}",  # the history, then a month of live traffic
        "--ready-file", str(ready),
        *(["--incidents", str(incidents)] if incidents is not None else ["--no-incidents"]),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# What the worker says
# ---------------------------------------------------------------------------------------------


class WorkerWatch:
    """Polls the worker's /api/anomalies: the models' status, and anomalies as they fire."""

    def __init__(self, url: str, incident: LiveIncident | None) -> None:
        self.url = url
        self.incident = incident
        self.models = "worker starting…"
        self.firing = 0
        self.seen: set[str] = set()
        self.incident_found = False

    async def poll(self, session: Any) -> list[str]:
        """Ask the worker once; the lines to print (anomalies that fired since last time)."""
        try:
            async with session.get(self.url) as response:
                data = await response.json(content_type=None)
        except Exception:  # the worker is (re)starting: say so, try again later
            self.models = "worker not answering (starting or restarting)"
            return []
        models = data.get("models") if isinstance(data, dict) else None
        if isinstance(models, dict) and isinstance(models.get("summary"), str):
            self.models = models["summary"]
        items = data.get("anomalies") if isinstance(data, dict) else None
        if not isinstance(items, list):
            return []
        firing = [a for a in items if isinstance(a, dict) and a.get("state") == "firing"]
        self.firing = len(firing)
        lines = []
        for anomaly in firing:
            key = str(anomaly.get("id"))
            if key in self.seen:
                continue
            self.seen.add(key)
            kind, text = anomaly.get("kind"), anomaly.get("explanation")
            lines.append(f"[bold red]anomaly[/] {kind}: {text}")
            if self.incident and not self.incident_found and self.incident.found_by(anomaly):
                self.incident_found = True
                late = (datetime.now(UTC) - self.incident.start).total_seconds() / 60
                lines.append(
                    f"[green]found the live incident[/] '{self.incident.name}' "
                    f"{max(late, 0):.0f} min after it began"
                )
        return lines


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


@dataclass
class RunOptions:
    partitions: int
    simulate: bool
    warm_up: float
    incident: bool
    durable: bool
    data_dir: Path
    duration: float | None
    logs: Path


def run_command(
    plan: Path = PLAN_OPTION,
    write_keys: Path = WRITE_KEYS_OPTION,
    host: str = HOST_OPTION,
    port: int = PORT_OPTION,
    worker_port: int = WORKER_PORT_OPTION,
    worker_metrics_port: int = WORKER_METRICS_PORT_OPTION,
    partitions: int = RUN_PARTITIONS_OPTION,
    simulate: bool = SIMULATE_OPTION,
    warm_up: float = WARM_UP_OPTION,
    incident: bool = INCIDENT_OPTION,
    durable: bool = DURABLE_OPTION,
    data_dir: Path = DATA_DIR_OPTION,
    duration: float = DURATION_OPTION,
    log_dir: Path = LOG_DIR_OPTION,
) -> None:
    """Start everything on this machine: embedded broker, worker, collector (and simulator)."""
    settings, keys = load_settings(
        plan=plan,
        write_keys=write_keys,
        host=host,
        port=port,
        worker_port=worker_port,
        worker_metrics_port=worker_metrics_port,
    )
    if not settings.plan.is_file():
        fail(f"{settings.plan}: no such tracking plan (pass --plan FILE)")
    running = read_state()
    if running is not None:
        fail(
            f"trackwatch is already running here (pid {running.pid}, collector "
            f"{running.collector_url}; state file {state_path()}): stop it first"
        )
    logs = log_dir or Path(tempfile.mkdtemp(prefix="trackwatch-run-"))
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"{logs}: cannot create the log folder ({exc.strerror})")
    options = RunOptions(
        partitions, simulate, warm_up, incident, durable, data_dir.resolve(), duration, logs
    )
    try:
        code = asyncio.run(_run(settings, keys, options))
    except (ServiceError, ChildFailed) as exc:
        fail(str(exc), code=1)
    raise typer.Exit(code)


def _make_broker(options: RunOptions) -> Any:
    from streams.broker import EmbeddedBroker

    if options.durable:
        from streams.durable import DurableStorage

        storage = DurableStorage(options.data_dir, log_path=options.logs / "objectstore.log")
        return EmbeddedBroker(
            log_path=options.logs / "broker.log", tie_to_parent=True, storage=storage
        )
    return EmbeddedBroker(log_path=options.logs / "broker.log", tie_to_parent=True)


def _has_events(bootstrap: str) -> bool:
    """Does events.raw hold anything yet (a durable stack started again)?"""
    from kafka import KafkaConsumer, TopicPartition

    from streams.topics import RAW

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        parts = [TopicPartition(RAW, p) for p in consumer.partitions_for_topic(RAW) or ()]
        return any(v > 0 for v in consumer.end_offsets(parts).values())
    finally:
        consumer.close()


async def _run(settings: Settings, keys: dict[str, str], options: RunOptions) -> int:
    from streams.broker import BrokerError, create_topics, free_port

    stop = asyncio.Event()
    install_stop_signals(stop)
    logs = options.logs
    broker = _make_broker(options)
    children: list[Child] = []
    simulator: Child | None = None
    try:
        with console.status("starting the embedded broker…"):
            try:
                broker.start()  # in the main thread: a PR_SET_PDEATHSIG child dies with its thread
                await asyncio.to_thread(create_topics, broker.bootstrap, None, options.partitions)
                has_events = options.durable and await asyncio.to_thread(
                    _has_events, broker.bootstrap
                )
            except BrokerError as exc:
                raise ServiceError(f"embedded broker: {exc}") from None
        settings = settings.with_(
            broker=broker.bootstrap,
            port=settings.port or free_port(),
            worker_port=settings.worker_port or free_port(),
            worker_metrics_port=settings.worker_metrics_port or free_port(),
        )
        worker_data = (options.data_dir if options.durable else logs) / "worker-data"
        worker = Child("worker", worker_args(settings, worker_data), logs / "worker.log")
        children.append(worker)
        collector_url = f"http://{_shown(settings.host)}:{settings.port}"
        incident = None
        warm_up = 0.0 if has_events else options.warm_up
        if options.simulate:
            ready = logs / "simulator.ready"
            ready.unlink(missing_ok=True)
            now = datetime.now(UTC)
            begin = now.replace(second=0, microsecond=0) - timedelta(hours=warm_up)
            # writing the history takes 30-60 s: live traffic starts about then
            incident = live_incident(now + timedelta(seconds=60)) if options.incident else None
            schedule = None
            if incident is not None:
                schedule = logs / "live-incident.yaml"
                schedule.write_text(incident.schedule(begin), encoding="utf-8")
            first = warm_up_args(settings, collector_url, begin, schedule, ready)
            simulator = Child(
                "simulator",
                first,
                logs / "simulate.log",
                restart_args=[*simulate_args(settings, collector_url), "--no-incidents"],
            )
            children.append(simulator)
            await _wait_for_history(stop, ready, simulator, worker, warm_up)
            if stop.is_set():  # stopped while warming up
                return 0
        async with running_collector(settings, keys) as port:
            collector_url = f"http://{_shown(settings.host)}:{port}"
            state = StackState(
                pid=os.getpid(),
                started_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                broker=broker.bootstrap,
                collector_url=collector_url,
                anomalies_url=f"{_worker_url(settings, settings.worker_port)}/api/anomalies",
                worker_metrics_url=f"{_worker_url(settings, settings.worker_metrics_port)}/metrics",
                log_dir=str(logs),
                storage=str(options.data_dir) if options.durable else "memory",
                prometheus_config=str(_write_prometheus_config(settings, port, logs)),
            )
            write_state(state)
            try:
                console.print(_panel(settings, keys, state, options, warm_up, has_events, incident))
                watch = WorkerWatch(state.anomalies_url, incident)
                return await _supervise(stop, children, broker, watch, options)
            finally:  # traffic stops before the collector does
                remove_state(os.getpid())
                if simulator is not None:
                    await asyncio.to_thread(simulator.stop)
    finally:
        with console.status("stopping…"):
            for child in reversed(children):
                await asyncio.to_thread(child.stop)
            await asyncio.to_thread(broker.stop)
        console.print(f"stopped: collector, worker and embedded broker are down. {_summary()}")


def _shown(host: str) -> str:
    """The address to put in a URL for a listen address (every interface: this machine's)."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def _worker_url(settings: Settings, port: int) -> str:
    return f"http://{_shown(settings.host)}:{port}"


def _write_prometheus_config(settings: Settings, collector_port: int, logs: Path) -> Path:
    from streams.ops.prometheus import local_config

    path = logs / "prometheus.yml"
    host = _shown(settings.host)
    text = local_config(
        f"{host}:{collector_port}", f"{host}:{settings.worker_metrics_port}", str(RULES)
    )
    path.write_text(text, encoding="utf-8")
    return path


async def _wait_for_history(
    stop: asyncio.Event, ready: Path, simulator: Child, worker: Child, hours: float
) -> None:
    """Wait until the simulator has written its history (the collector starts after it)."""
    text = (
        f"warming up: writing {hours:g} h of simulated history into events.raw…"
        if hours
        else "starting the simulator…"
    )
    with console.status(text):
        while not ready.exists():
            if await wait_stop(stop, 0.5):
                return
            for child in (simulator, worker):
                line = child.check()
                if line:
                    console.print(line, soft_wrap=True)
            if simulator.restarts:  # it died while writing: go on without its history
                return


async def _supervise(
    stop: asyncio.Event,
    children: list[Child],
    broker: Any,
    watch: WorkerWatch,
    options: RunOptions,
) -> int:
    """Keep the parts running until a stop signal or the duration; the exit code."""
    import aiohttp

    deadline = None if options.duration is None else time.monotonic() + options.duration
    polled = told = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=3)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with console.status(_status(watch)) as status:
            while True:
                left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                if left <= 0 or await wait_stop(stop, left):
                    return 0
                await _keep_broker(broker, options)
                for child in list(children):
                    if child.name == "simulator" and child.exited() == 0:
                        console.print("simulator finished its traffic; the rest keeps running.")
                        children.remove(child)
                        continue
                    line = child.check()
                    if line:
                        console.print(line, soft_wrap=True)
                if time.monotonic() - polled >= POLL_SECONDS:
                    polled = time.monotonic()
                    for line in await watch.poll(session):
                        console.print(line, soft_wrap=True)
                status.update(_status(watch))
                if not console.is_terminal and time.monotonic() - told >= PRINT_STATUS_SECONDS:
                    told = time.monotonic()  # output to a file: no status line, so say it
                    console.print(_status(watch), soft_wrap=True)


async def _keep_broker(broker: Any, options: RunOptions) -> None:
    """Start the broker again (same port) if it died; its topics too (memory lost them)."""
    from streams.broker import BrokerError, create_topics

    if broker.running:
        return
    code = broker.exit_code
    console.print(
        f"[yellow]the embedded broker stopped ({exit_text(code) if code is not None else '?'}); "
        f"starting it again on {broker.bootstrap}[/]",
        soft_wrap=True,
    )
    try:
        broker.start()
        await asyncio.to_thread(create_topics, broker.bootstrap, None, options.partitions)
    except BrokerError as exc:
        raise ServiceError(f"embedded broker could not be restarted: {exc}") from None
    if not options.durable:
        console.print(
            "[yellow]memory storage: every topic (events, quarantine, the models' state) was "
            "lost; `trackwatch run --durable` keeps them[/]",
            soft_wrap=True,
        )


def _status(watch: WorkerWatch) -> str:
    return f"{_summary()} · models: {watch.models} · {watch.firing} anomalies firing"


def _summary() -> str:
    """What the collector did, from its Prometheus counters."""
    from prometheus_client import REGISTRY

    collected: dict[str, float] = {}
    refused = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "trackwatch_events_collected_total":
                collected[sample.labels["source"]] = sample.value
            refusal = not sample.labels.get("status", "2").startswith("2")
            if sample.name == "trackwatch_http_requests_total" and refusal:
                refused += sample.value
    by_source = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(collected.items()))
    total = sum(collected.values())
    return (
        f"Collected {total:,.0f} events ({by_source or 'none'}); {refused:,.0f} requests refused."
    )


def _panel(
    settings: Settings,
    keys: dict[str, str],
    state: StackState,
    options: RunOptions,
    warm_up: float,
    resumed: bool,
    incident: LiveIncident | None,
) -> Panel:
    key, source = next(iter(keys.items()))
    url = state.collector_url
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("collector", f"{url}/v1/track · /v1/batch · …")
    table.add_row("collector metrics", f"{url}/metrics · {url}/healthz")
    table.add_row("worker metrics", state.worker_metrics_url)
    table.add_row("anomalies", state.anomalies_url)
    table.add_row("listening on", f"{settings.host} (--host)")
    table.add_row("Kafka (embedded)", settings.broker)
    storage = f"files in {options.data_dir} (--durable)" if options.durable else "memory"
    table.add_row("storage", storage + (": resumed, models restored" if resumed else ""))
    table.add_row("tracking plan", str(settings.plan))
    table.add_row("write keys", f"{settings.write_keys} ({', '.join(sorted(set(keys.values())))})")
    if not options.simulate:
        table.add_row("simulator", "off (--simulate to turn on)")
        models = "they learn from the first day of your traffic, then alert (status below)"
    elif warm_up:
        table.add_row("simulator", "live traffic on the real clock (events stamped now)")
        models = (
            f"warming up on {warm_up:g} h of simulated history (in Kafka now; the worker "
            "reads it in a minute or two), then they alert; status below"
        )
    else:
        table.add_row("simulator", "live traffic on the real clock (events stamped now)")
        models = "restored from the kept state" if resumed else "learning from live traffic"
    table.add_row("models", models)
    if incident is not None:
        table.add_row(
            "live incident", f"{incident.describe()}: an alert follows within about 10 minutes"
        )
    table.add_row("logs", f"{options.logs} (broker.log, worker.log, simulate.log)")
    table.add_row("prometheus.yml", state.prometheus_config)
    table.add_row("state file", f"{state_path()} (other commands find this stack there)")
    example = {
        "event": "Products Searched",
        "anonymousId": "a1",
        "properties": {"query": "shoes"},
        "context": {"library": {"name": "curl"}},
    }
    table.add_row(
        "try",
        f"curl -u {key}: -H 'Content-Type: application/json' -d '{json.dumps(example)}' "
        f"{url}/v1/track   # source {source}",
    )
    table.add_row("", "trackwatch anomalies · trackwatch quarantine replay --since 2h")
    return Panel(table, title="trackwatch is running", subtitle="Ctrl-C stops everything")
