"""The child processes of `trackwatch run`, kept running: a part that dies is started again.

Each child is a `trackwatch <command>` process with its output in a log file of its own. The
log is plain text: children are told there is no terminal (no colours, no spinners, no cursor
codes), and the supervisor writes a line at every start and every exit, so a log reads as the
story of that part: when it started, with what, and how it ended.

A child that dies is restarted after a backoff (1 s, 2 s, 4 s … at most 30 s; back to 1 s once
it has run for a minute). One that exits with an error within `startup_grace` seconds of its very
first start cannot start at all (a wrong plan, a port in use): that is reported, not retried. One
killed by a signal (the OOM killer, a `kill -9`) is always restarted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from streams.broker import die_with_parent

CLI_ENTRY = ("-c", "from streams.cli import main; main()")  # `trackwatch` without the script
STOP_GRACE_SECONDS = 15.0
# what a child sees of its "terminal": none, so rich, Faust and the logging write plain text
PLAIN_OUTPUT = {"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "160", "PYTHONUNBUFFERED": "1"}


@dataclass
class Backoff:
    """Delays between restarts: doubling from `first` up to `cap`, reset after a long run."""

    first: float = 1.0
    cap: float = 30.0
    reset_after: float = 60.0
    failures: int = 0

    def next_delay(self, ran_for: float) -> float:
        if ran_for >= self.reset_after:
            self.failures = 0
        self.failures += 1
        return min(self.cap, self.first * 2 ** (self.failures - 1))


def exit_text(code: int) -> str:
    """'code 1' or 'killed by SIGKILL' for a Popen return code."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"code {code}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class ChildFailed(RuntimeError):
    """A child could not start at all; the message says which, how it ended and where its log is."""


class Child:
    """A supervised `trackwatch <command>` child process logging to `log_path`.

    `restart_args`: the command line of later starts (default: the same as the first).
    """

    def __init__(
        self,
        name: str,
        args: list[str],
        log_path: Path,
        *,
        restart_args: list[str] | None = None,
        startup_grace: float = 15.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.name, self.args, self.log_path = name, args, log_path
        self.restart_args = restart_args if restart_args is not None else args
        self.startup_grace = startup_grace
        self.backoff = backoff or Backoff()
        self.starts = 0
        self.restarts = 0
        self.started_at = 0.0  # monotonic
        self.restart_at: float | None = None  # monotonic time of a pending restart
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        args = self.args if self.starts == 0 else self.restart_args
        self.starts += 1
        self.restart_at = None
        with open(self.log_path, "ab") as log:
            log.write(f"=== {_now()} trackwatch {' '.join(args)} (start {self.starts})\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, *CLI_ENTRY, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **PLAIN_OUTPUT},
                start_new_session=True,  # Ctrl-C reaches `run` only; it stops children in order
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def check(self) -> str | None:
        """Look at the child: restart it when its backoff is over, schedule a restart when it
        has just died. Returns a line to tell the user, or None. Raises ChildFailed when it died
        right after its first start."""
        now = time.monotonic()
        if self.restart_at is not None:
            if now < self.restart_at:
                return None
            self.restarts += 1
            self.start()
            return f"{self.name} restarted (pid {self.pid}); log: {self.log_path}"
        code = self.exited()
        if code is None:
            return None
        ran_for = now - self.started_at
        self._note(f"exited with {exit_text(code)} after {ran_for:.0f} s")
        if self.starts == 1 and ran_for < self.startup_grace and code > 0:  # not killed: failed
            raise ChildFailed(
                f"the {self.name} could not start ({exit_text(code)}); log: {self.log_path}"
            )
        delay = self.backoff.next_delay(ran_for)
        self.restart_at = now + delay
        self._note(f"restarting in {delay:.0f} s")
        return (
            f"{self.name} exited with {exit_text(code)}; restarting in {delay:.0f} s "
            f"(log: {self.log_path})"
        )

    def _note(self, text: str) -> None:
        with contextlib.suppress(OSError), open(self.log_path, "ab") as log:
            log.write(f"=== {_now()} {self.name} {text}\n".encode())

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM the child's process group, SIGKILL it after `grace` seconds; no restart."""
        self.restart_at = None
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        self._note(f"stopped ({exit_text(proc.returncode)})")
