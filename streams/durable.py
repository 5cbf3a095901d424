"""Durable storage for the embedded broker: `trackwatch run --durable`.

The bundled Tansu build stores in memory or in S3 (see `streams.objectstore` for why not
PostgreSQL), so a durable broker is Tansu with ``--storage-engine s3://tansu/`` pointed at the
project's own object store, a child process keeping every object as a file under
``<data dir>/objects`` on loopback. Stopping and starting the stack (or the broker alone) keeps
every topic: events, quarantine, metrics, anomalies, consumer offsets and the changelogs the
worker restores its models from.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from streams.broker import BrokerError, die_with_parent, free_port

BUCKET = "tansu"


class DurableStorage:
    """The object store under `data_dir`, started and stopped with the broker that uses it."""

    def __init__(self, data_dir: Path, log_path: Path | None = None) -> None:
        self.root = Path(data_dir) / "objects"
        self.log_path = log_path or Path(data_dir) / "objectstore.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def engine(self) -> str:
        """Tansu's --storage-engine."""
        return f"s3://{BUCKET}/"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What Tansu's S3 client reads: where the store is (it checks no credentials)."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "trackwatch",
            "AWS_SECRET_ACCESS_KEY": "trackwatch-local",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, tie_to_parent: bool = False, timeout: float = 20.0) -> None:
        if self.running:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        except OSError as exc:
            raise BrokerError(f"{self.root}: cannot use the data folder ({exc.strerror})") from None
        self.port = free_port()
        cmd = [sys.executable, "-m", "streams.objectstore", "--root", str(self.root),
               "--port", str(self.port)]  # fmt: skip
        self._proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent if tie_to_parent else None,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"the object store under {self.root} exited with code "
                    f"{self._proc.returncode}; see {self.log_path}"
                )
            try:
                url = f"{self.endpoint}/{BUCKET}?list-type=2&max-keys=1"
                with urllib.request.urlopen(url, timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise BrokerError(
            f"the object store did not answer in {timeout:.0f} s; see {self.log_path}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
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
