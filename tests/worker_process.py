"""Running `trackwatch worker` as a child process in tests (and the benchmark)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from streams.broker import free_port

ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "examples" / "ecommerce.yaml"


def start_worker(
    bootstrap: str, app_id: str, log: Path, data_dir: Path, *extra: str
) -> subprocess.Popen:
    """`trackwatch worker` in its own process group, logging to `log`. The returned process has
    `metrics_port` and `web_port` attributes."""
    metrics_port, web_port = free_port(), free_port()
    cmd = [
        sys.executable,
        "-c",
        "from streams.cli import main; main()",
        "worker",
        "--broker",
        bootstrap,
        "--plan",
        str(PLAN),
        "--metrics-port",
        str(metrics_port),
        "--web-port",
        str(web_port),
        "--app-id",
        app_id,
        "--data-dir",
        str(data_dir),
        "--loglevel",
        "info",
        *extra,
    ]
    out = log.open("ab")
    try:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        proc.metrics_port = metrics_port  # type: ignore[attr-defined]
        proc.web_port = web_port  # type: ignore[attr-defined]
        return proc
    finally:
        out.close()


def stop_worker(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Send `sig` to the worker's process group and wait; SIGKILL if it does not stop."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout)
