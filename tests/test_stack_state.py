"""The running stack's state file: written atomically, ignored once its process is gone, and the
defaults it gives the other commands never override a flag or the user's environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.stack_state import (
    StackState,
    read_state,
    remove_state,
    stack_environment,
    state_dir,
    state_path,
    write_state,
)

ROOT = Path(__file__).resolve().parent.parent


def _state(pid: int) -> StackState:
    return StackState(
        pid=pid,
        started_at="2026-12-06T01:00:00Z",
        broker="127.0.0.1:41234",
        collector_url="http://127.0.0.1:8080",
        anomalies_url="http://127.0.0.1:6066/api/anomalies",
        worker_metrics_url="http://127.0.0.1:9108/metrics",
        log_dir="/tmp/logs",
        storage="memory",
        prometheus_config="/tmp/logs/prometheus.yml",
    )


def test_where_the_file_lives() -> None:
    assert state_dir({"TRACKWATCH_STATE_DIR": "/x"}) == Path("/x")
    assert state_dir({"XDG_STATE_HOME": "/s", "HOME": "/h"}) == Path("/s/trackwatch")
    assert state_dir({"HOME": "/h"}) == Path("/h/.local/state/trackwatch")


def test_written_read_and_removed_by_its_owner_only(tmp_path: Path) -> None:
    env = {"TRACKWATCH_STATE_DIR": str(tmp_path / "new")}
    write_state(_state(os.getpid()), env)
    assert read_state(env) == _state(os.getpid())
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["stack.json"]  # no temp left
    remove_state(os.getpid() + 1, env)  # another process's: kept
    assert state_path(env).exists()
    remove_state(os.getpid(), env)
    assert not state_path(env).exists() and read_state(env) is None


def test_a_dead_stack_or_a_broken_file_is_ignored(tmp_path: Path) -> None:
    env = {"TRACKWATCH_STATE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    write_state(_state(int(done.stdout)), env)  # that process has exited
    assert read_state(env) is None
    for text in ("{not json", "[]", '{"pid": 1}', "\u202e\x00", ""):
        state_path(env).write_text(text, encoding="utf-8")
        assert read_state(env) is None
    state_path(env).write_bytes(b"\xff\xfe" * 1000)
    assert read_state(env) is None


def test_the_stack_fills_only_unset_defaults(tmp_path: Path) -> None:
    env = {"TRACKWATCH_STATE_DIR": str(tmp_path), "TRACKWATCH_BROKER": "kafka-1:9092"}
    assert stack_environment(env) is None and env["TRACKWATCH_BROKER"] == "kafka-1:9092"
    write_state(_state(os.getpid()), env)
    assert stack_environment(env) is not None
    assert env["TRACKWATCH_BROKER"] == "kafka-1:9092"  # the user's own setting wins
    assert env["TRACKWATCH_COLLECTOR_URL"] == "http://127.0.0.1:8080"
    assert env["TRACKWATCH_ANOMALIES_URL"] == "http://127.0.0.1:6066/api/anomalies"
    env2 = {"TRACKWATCH_STATE_DIR": str(tmp_path), "TRACKWATCH_BROKER": ""}
    stack_environment(env2)
    assert env2["TRACKWATCH_BROKER"] == "127.0.0.1:41234"  # empty counts as unset


@pytest.mark.parametrize("flag", [[], ["--broker", "127.0.0.1:1"]])
def test_commands_take_the_running_stacks_broker_unless_told(
    tmp_path: Path, flag: list[str]
) -> None:
    """`trackwatch quarantine replay` (not `run`'s code) reads TRACKWATCH_BROKER: the state file
    reaches it through the CLI's entry point; a --broker flag still wins."""
    env = {**os.environ, "TRACKWATCH_STATE_DIR": str(tmp_path), "COLUMNS": "200"}
    env.pop("TRACKWATCH_BROKER", None)
    state = _state(os.getpid())
    write_state(state, env)
    done = subprocess.run(
        [sys.executable, "-c", "from streams.cli import main; main()", "quarantine", "replay",
         "--since", "2h", "--dry-run", *flag],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT, check=False,
    )  # fmt: skip
    # nothing listens there: the error names the address the command used
    expected = flag[1] if flag else state.broker
    assert f"cannot reach Kafka at {expected}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
