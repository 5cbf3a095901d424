"""Where the running one-machine stack (`trackwatch run`) listens, for every other command.

`trackwatch run` picks a free port for its embedded broker, so the usual defaults (Kafka on
127.0.0.1:9092, the collector on :8080, ...) may point nowhere. While it runs it keeps a small
JSON state file; `stack_environment` turns it into the ``TRACKWATCH_*`` variables the commands
read as their defaults. A flag or a variable the user set always wins: only variables that are
unset are filled in.

The file: ``$TRACKWATCH_STATE_DIR/stack.json``, else ``$XDG_STATE_HOME/trackwatch/stack.json``,
else ``~/.local/state/trackwatch/stack.json``. A file whose process is gone is ignored.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

STATE_FILE = "stack.json"

# state field -> the variable it fills in
ENV_DEFAULTS = {
    "broker": "TRACKWATCH_BROKER",
    "collector_url": "TRACKWATCH_COLLECTOR_URL",
    "anomalies_url": "TRACKWATCH_ANOMALIES_URL",
}


@dataclass(frozen=True)
class StackState:
    """What a running `trackwatch run` tells the other commands."""

    pid: int
    started_at: str  # ISO-8601 UTC
    broker: str  # Kafka bootstrap HOST:PORT
    collector_url: str  # http://HOST:PORT
    anomalies_url: str  # http://HOST:PORT/api/anomalies
    worker_metrics_url: str  # http://HOST:PORT/metrics
    log_dir: str
    storage: str  # "memory" or the durable data folder
    prometheus_config: str  # a prometheus.yml scraping this stack

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2) + b"\n"


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("TRACKWATCH_STATE_DIR"):
        return Path(env["TRACKWATCH_STATE_DIR"])
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local/state")
    return Path(base) / "trackwatch"


def state_path(environ: Mapping[str, str] | None = None) -> Path:
    return state_dir(environ) / STATE_FILE


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def read_state(environ: Mapping[str, str] | None = None) -> StackState | None:
    """The running stack's state, or None (no file, unreadable, or its process is gone)."""
    try:
        data = orjson.loads(state_path(environ).read_bytes())
        state = StackState(**data)
    except (OSError, orjson.JSONDecodeError, TypeError):
        return None
    if not isinstance(state.pid, int) or not _alive(state.pid):
        return None
    return state


def write_state(state: StackState, environ: Mapping[str, str] | None = None) -> Path:
    """Write the state file atomically (a reader never sees half a file); its path."""
    path = state_path(environ)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(state.to_json())
    os.replace(tmp, path)
    return path


def remove_state(pid: int, environ: Mapping[str, str] | None = None) -> None:
    """Remove the state file if it is the one process `pid` wrote."""
    path = state_path(environ)
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return
    if isinstance(data, dict) and data.get("pid") == pid:
        with contextlib.suppress(OSError):
            path.unlink()


def stack_environment(environ: MutableMapping[str, str]) -> StackState | None:
    """Fill the unset ``TRACKWATCH_*`` defaults of `environ` from the running stack (if any)."""
    state = read_state(environ)
    if state is None:
        return None
    for field, variable in ENV_DEFAULTS.items():
        if not environ.get(variable):
            environ[variable] = getattr(state, field)
    return state
