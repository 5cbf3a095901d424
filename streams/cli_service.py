"""`trackwatch broker`, `trackwatch collector` and `trackwatch run` (everything on one machine).

`run` starts the embedded broker, creates the topics, spawns the worker (and optionally the
traffic simulator) as child processes, serves the collector in this process, and on Ctrl-C,
SIGTERM or `--duration` stops them in reverse order: simulator, collector (after in-flight
requests got their answer), worker, broker. Children die with this process even if it is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from streams.broker import die_with_parent
from streams.errors import fail
from streams.settings import Settings, SettingsError, load_write_keys

if TYPE_CHECKING:
    from aiohttp import web

    from streams.raw_producer import BatchingProducer

console = Console()

CLI_ENTRY = ("-c", "from streams.cli import main; main()")  # `trackwatch` without the script
STOP_GRACE_SECONDS = 15.0


class ServiceError(RuntimeError):
    """A part of the service could not start or died; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------


class Child:
    """A `trackwatch <command>` child process with its output in a log file."""

    def __init__(self, name: str, args: list[str], log_path: Path) -> None:
        self.name, self.args, self.log_path = name, args, log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *CLI_ENTRY, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )

    def exited(self) -> int | None:
        return self.proc.poll()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM the child's process group, SIGKILL it after `grace` seconds."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


# ---------------------------------------------------------------------------------------------
# Collector lifecycle (shared by `collector` and `run`)
# ---------------------------------------------------------------------------------------------


async def connect_producer(settings: Settings, wait: float) -> BatchingProducer:
    """A connected BatchingProducer, retrying for up to `wait` seconds while Kafka starts."""
    from aiokafka.errors import KafkaError

    from streams.raw_producer import BatchingProducer, ProducerUnavailable

    deadline = time.monotonic() + wait
    while True:
        try:
            return await BatchingProducer.connect(settings)
        except ProducerUnavailable as exc:  # reachable, but the topic is missing
            if time.monotonic() >= deadline:
                raise ServiceError(
                    f"{exc}; create the trackwatch topics first (`trackwatch broker` and "
                    "`trackwatch run` do; with Apache Kafka see docker-compose.yml)"
                ) from None
        except (KafkaError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise ServiceError(
                    f"cannot reach Kafka at {settings.broker} ({type(exc).__name__}: {exc}); "
                    "start it (`trackwatch broker`) or pass --broker HOST:PORT"
                ) from None
        await asyncio.sleep(1.0)


@contextlib.asynccontextmanager
async def running_collector(
    settings: Settings, write_keys: dict[str, str], connect_wait: float = 30.0
) -> AsyncIterator[int]:
    """Serve the collector on settings.host:settings.port; yields the bound port.

    On exit it stops accepting, lets in-flight requests finish, flushes and stops the producer.
    """
    from streams.collector import bound_port, create_collector, serve_collector

    producer = await connect_producer(settings, connect_wait)
    try:
        app = create_collector(settings, producer, write_keys)
        try:
            runner = await serve_collector(app, settings.host, settings.port)
        except OSError as exc:
            raise ServiceError(
                f"cannot listen on {settings.host}:{settings.port} ({exc.strerror}); "
                "pass another --port"
            ) from None
        _reload_keys_on_sighup(app, settings.write_keys)
        try:
            yield bound_port(runner)
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            await runner.cleanup()
    finally:
        await producer.close()


def _reload_keys_on_sighup(app: web.Application, path: Path) -> None:
    """SIGHUP re-reads the write-key file (key rotation without a restart); a broken file is
    reported and the keys in use are kept."""
    from streams.collector import COLLECTOR_KEY

    def reload() -> None:
        try:
            keys = load_write_keys(path)
        except SettingsError as exc:
            console.print(f"[red]write keys not reloaded, the old ones stay in use:[/] {exc}")
            return
        app[COLLECTOR_KEY].write_keys = keys
        console.print(f"write keys reloaded from {path}: {len(keys)} keys", soft_wrap=True)

    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


def _install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `stop`; True if it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


def _load_settings(**flags: object) -> tuple[Settings, dict[str, str]]:
    try:
        settings = Settings.from_env(**flags)
        return settings, load_write_keys(settings.write_keys)
    except SettingsError as exc:
        fail(str(exc))


def _free_port_if_zero(port: int) -> int:
    from streams.broker import free_port

    return port or free_port()


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

BROKER_OPTION = typer.Option(
    None, "--broker", help="Kafka bootstrap servers [env TRACKWATCH_BROKER; default 127.0.0.1:9092]"
)
WRITE_KEYS_OPTION = typer.Option(
    None,
    "--write-keys",
    help="YAML {keys: {KEY: SOURCE}} [env TRACKWATCH_WRITE_KEYS; default examples/write_keys.yaml]",
)
HOST_OPTION = typer.Option(None, "--host", help="Collector listen address [default 127.0.0.1]")
PORT_OPTION = typer.Option(None, "--port", help="Collector port, 0 = any free [default 8080]")
PARTITIONS_OPTION = typer.Option(4, "--partitions", min=1, max=256, help="Partitions per topic")


def broker_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Listen address"),
    port: int = typer.Option(9092, "--port", min=0, max=65535, help="Kafka port, 0 = any free"),
    partitions: int = PARTITIONS_OPTION,
) -> None:
    """Run the embedded Kafka-protocol broker (memory only) with the trackwatch topics."""
    from streams.broker import BrokerError, EmbeddedBroker, create_topics

    broker = EmbeddedBroker(host=host, port=port, tie_to_parent=True)

    async def main() -> None:
        stop = asyncio.Event()
        _install_stop_signals(stop)  # before the broker exists: a signal never orphans it
        try:
            broker.start()  # in the main thread: a PR_SET_PDEATHSIG child dies with its thread
            await asyncio.to_thread(create_topics, broker.bootstrap, None, partitions)
            console.print(
                f"broker ready: [bold]{broker.bootstrap}[/] (memory only; Ctrl-C stops it)",
                soft_wrap=True,
            )
            await stop.wait()
        finally:
            await asyncio.to_thread(broker.stop)

    try:
        asyncio.run(main())
    except (BrokerError, OSError) as exc:
        fail(f"embedded broker: {exc}")


def collector_command(
    broker: str = BROKER_OPTION,
    write_keys: Path = WRITE_KEYS_OPTION,
    host: str = HOST_OPTION,
    port: int = PORT_OPTION,
    connect_wait: float = typer.Option(30.0, "--connect-wait", help="Seconds to wait for Kafka"),
) -> None:
    """Run the Segment-compatible HTTP collector in front of an existing Kafka.

    SIGHUP re-reads the write-key file; SIGINT/SIGTERM stop it after in-flight requests.
    """
    settings, keys = _load_settings(broker=broker, write_keys=write_keys, host=host, port=port)

    async def main() -> None:
        stop = asyncio.Event()
        _install_stop_signals(stop)
        async with running_collector(settings, keys, connect_wait) as bound:
            console.print(
                f"collector on http://{settings.host}:{bound}/v1/ → Kafka {settings.broker} "
                f"({len(keys)} write keys); Ctrl-C stops it",
                soft_wrap=True,
            )
            await stop.wait()

    try:
        asyncio.run(main())
    except ServiceError as exc:
        fail(str(exc))


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
DURATION_OPTION = typer.Option(
    None, "--duration", min=0.0, help="Stop by itself after this many seconds"
)
LOG_DIR_OPTION = typer.Option(None, "--log-dir", help="Where child logs go [a new temp folder]")


def run_command(
    plan: Path = PLAN_OPTION,
    write_keys: Path = WRITE_KEYS_OPTION,
    host: str = HOST_OPTION,
    port: int = PORT_OPTION,
    worker_port: int = WORKER_PORT_OPTION,
    worker_metrics_port: int = WORKER_METRICS_PORT_OPTION,
    partitions: int = PARTITIONS_OPTION,
    simulate: bool = SIMULATE_OPTION,
    duration: float = DURATION_OPTION,
    log_dir: Path = LOG_DIR_OPTION,
) -> None:
    """Start everything on this machine: embedded broker, worker, collector (and simulator)."""
    settings, keys = _load_settings(
        plan=plan,
        write_keys=write_keys,
        host=host,
        port=port,
        worker_port=worker_port,
        worker_metrics_port=worker_metrics_port,
    )
    if not settings.plan.is_file():
        fail(f"{settings.plan}: no such tracking plan (pass --plan FILE)")
    logs = log_dir or Path(tempfile.mkdtemp(prefix="trackwatch-run-"))
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"{logs}: cannot create the log folder ({exc.strerror})")
    try:
        code = asyncio.run(_run(settings, keys, partitions, simulate, duration, logs))
    except ServiceError as exc:
        fail(str(exc), code=1)
    raise typer.Exit(code)


async def _run(
    settings: Settings,
    keys: dict[str, str],
    partitions: int,
    simulate: bool,
    duration: float | None,
    logs: Path,
) -> int:
    from streams.broker import BrokerError, EmbeddedBroker, create_topics

    stop = asyncio.Event()
    _install_stop_signals(stop)
    broker = EmbeddedBroker(log_path=logs / "broker.log", tie_to_parent=True)
    children: list[Child] = []
    try:
        with console.status("starting the embedded broker…"):
            try:
                broker.start()  # in the main thread: a PR_SET_PDEATHSIG child dies with its thread
                await asyncio.to_thread(create_topics, broker.bootstrap, None, partitions)
            except BrokerError as exc:
                raise ServiceError(f"embedded broker: {exc}") from None
        settings = settings.with_(broker=broker.bootstrap)
        settings = settings.with_(
            worker_port=_free_port_if_zero(settings.worker_port),
            worker_metrics_port=_free_port_if_zero(settings.worker_metrics_port),
        )
        worker = Child("worker", worker_args(settings, logs / "worker-data"), logs / "worker.log")
        children.append(worker)
        async with running_collector(settings, keys) as port:
            collector_url = f"http://{settings.host}:{port}"
            if simulate and not _has_command("simulate"):
                console.print("[yellow]`trackwatch simulate` is not available: no traffic.[/]")
                simulate = False
            simulator = None
            if simulate:
                args = simulate_args(settings, collector_url)
                simulator = Child("simulator", args, logs / "simulate.log")
                children.append(simulator)
            console.print(_panel(settings, keys, collector_url, logs, simulate))
            try:
                return await _supervise(stop, children, duration)
            finally:  # traffic stops before the collector does
                if simulator is not None:
                    await asyncio.to_thread(simulator.stop)
    finally:
        with console.status("stopping…"):
            for child in reversed(children):
                await asyncio.to_thread(child.stop)
            await asyncio.to_thread(broker.stop)
        console.print(f"stopped: collector, worker and embedded broker are down. {_summary()}")


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


def _has_command(name: str) -> bool:
    from streams.cli import app

    commands = {
        c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands
    }
    return name in commands or any(g.name == name for g in app.registered_groups)


def worker_args(settings: Settings, data_dir: Path) -> list[str]:
    """Command line of the worker child (`trackwatch worker`, streams/cli_worker.py)."""
    return [
        "worker",
        "--broker",
        settings.broker,
        "--plan",
        str(settings.plan),
        "--web-port",
        str(settings.worker_port),
        "--metrics-port",
        str(settings.worker_metrics_port),
        "--data-dir",
        str(data_dir),
    ]


def simulate_args(settings: Settings, collector_url: str) -> list[str]:
    """Command line of the simulator child (`trackwatch simulate`)."""
    return ["simulate", "--collector", collector_url, "--plan", str(settings.plan),
            "--write-keys", str(settings.write_keys)]  # fmt: skip


async def _supervise(stop: asyncio.Event, children: list[Child], duration: float | None) -> int:
    """Wait for a stop signal, the duration, or a child that died; the exit code to return."""
    deadline = None if duration is None else time.monotonic() + duration
    with console.status(_summary()) as status:
        while True:
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if left <= 0 or await _wait(stop, left):
                return 0
            _check_children(children)
            status.update(_summary())


def _check_children(children: list[Child]) -> None:
    """Forget a simulator that finished; raise ServiceError for any other child that exited."""
    for child in list(children):
        code = child.exited()
        if code is None:
            continue
        if child.name == "simulator" and code == 0:
            console.print("simulator finished its traffic; the rest keeps running.")
            children.remove(child)
            continue
        console.print(
            Panel(child.log_tail(), title=f"{child.name} exited with code {code}", style="red")
        )
        raise ServiceError(f"the {child.name} stopped (code {code}); log: {child.log_path}")


def _panel(
    settings: Settings,
    keys: dict[str, str],
    collector_url: str,
    logs: Path,
    simulate: bool,
) -> Panel:
    worker_web = f"http://{settings.host}:{settings.worker_port}"
    worker_metrics = f"http://{settings.host}:{settings.worker_metrics_port}"
    key, source = next(iter(keys.items()))
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("collector", f"{collector_url}/v1/track · /v1/batch · …")
    table.add_row("collector metrics", f"{collector_url}/metrics")
    table.add_row("worker metrics", f"{worker_metrics}/metrics")
    table.add_row("anomalies", f"{worker_web}/api/anomalies")
    table.add_row("Kafka (embedded)", settings.broker)
    table.add_row("tracking plan", str(settings.plan))
    table.add_row("write keys", f"{settings.write_keys} ({', '.join(sorted(set(keys.values())))})")
    table.add_row("simulator", "on" if simulate else "off (--simulate to turn on)")
    table.add_row("logs", str(logs))
    example = {
        "event": "Products Searched",
        "anonymousId": "a1",
        "properties": {"query": "shoes"},
        "context": {"library": {"name": "curl"}},
    }
    table.add_row(
        "try",
        f"curl -u {key}: -H 'Content-Type: application/json' -d '{json.dumps(example)}' "
        f"{collector_url}/v1/track   # source {source}",
    )
    return Panel(table, title="trackwatch is running", subtitle="Ctrl-C stops everything")


def register(app: typer.Typer) -> None:
    app.command("broker")(broker_command)
    app.command("collector")(collector_command)
    app.command("run")(run_command)
