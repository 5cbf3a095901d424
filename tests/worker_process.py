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
    bootstrap: str,
    app_id: str,
    log: Path,
    data_dir: Path,
    *extra: str,
    drop_from: str | None = None,
    faults: Path | None = None,
) -> subprocess.Popen:
    """`trackwatch worker` in its own process group, logging to `log`. The returned process has
    `metrics_port` and `web_port` attributes. `drop_from`: comma-separated topics whose consumer
    loses a few messages after every rebalance (`tests.consumer_faults`). `faults`: a folder whose
    files switch the faults of `tests.worker_faults` on."""
    metrics_port, web_port = free_port(), free_port()
    code = "from streams.cli import main; main()"
    if drop_from is not None:
        code = f"import tests.consumer_faults as f; f.install({drop_from!r}); {code}"
    if faults is not None:
        code = f"import tests.worker_faults as w; w.install({str(faults)!r}); {code}"
    cmd = [
        sys.executable,
        "-c",
        code,
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
