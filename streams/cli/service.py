"""`trackwatch broker` and `trackwatch collector`, and the collector's lifecycle that `trackwatch
run` (streams/cli/run.py, everything on one machine) shares."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from streams.errors import fail
from streams.settings import Settings, SettingsError, load_write_keys

if TYPE_CHECKING:
    from aiohttp import web

    from streams.collector.producer import BatchingProducer

console = Console()


class ServiceError(RuntimeError):
    """A part of the service could not start or died; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# Collector lifecycle (shared by `collector` and `run`)
# ---------------------------------------------------------------------------------------------


async def connect_producer(settings: Settings, wait: float) -> BatchingProducer:
    """A connected BatchingProducer, retrying for up to `wait` seconds while Kafka starts."""
    from aiokafka.errors import KafkaError

    from streams.collector.producer import BatchingProducer, ProducerUnavailable

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
    from streams.collector.http import bound_port, create_collector, serve_collector

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
    from streams.collector.http import COLLECTOR_KEY

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


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def wait_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `stop`; True if it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


def load_settings(**flags: object) -> tuple[Settings, dict[str, str]]:
    try:
        settings = Settings.from_env(**flags)
        return settings, load_write_keys(settings.write_keys)
    except SettingsError as exc:
        fail(str(exc))


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

BROKER_OPTION = typer.Option(
    None,
    "--broker",
    help="Kafka bootstrap servers [env TRACKWATCH_BROKER; default: the running `trackwatch run`'s,"
    " else 127.0.0.1:9092]",
)
WRITE_KEYS_OPTION = typer.Option(
    None,
    "--write-keys",
    help="YAML {keys: {KEY: SOURCE}} [env TRACKWATCH_WRITE_KEYS; default examples/write_keys.yaml]",
)
HOST_OPTION = typer.Option(
    None,
    "--host",
    help="Listen address [env TRACKWATCH_HOST; default 127.0.0.1: this machine only]",
)
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
        install_stop_signals(stop)  # before the broker exists: a signal never orphans it
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
    settings, keys = load_settings(broker=broker, write_keys=write_keys, host=host, port=port)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
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


def register(app: typer.Typer) -> None:
    from streams.cli.run import run_command

    app.command("broker")(broker_command)
    app.command("collector")(collector_command)
    app.command("run")(run_command)
