"""Settings, write-key files and the service commands: `broker`, `collector`, `run`.

Command tests run `trackwatch` as a real child process (signals, ports, exit codes); the ones
that need Kafka use the real embedded broker.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.broker import EmbeddedBroker
from streams.cli.app import app
from streams.settings import Settings, SettingsError, load_write_keys

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_KEYS = ROOT / "examples" / "write_keys.yaml"
CLI = [sys.executable, "-c", "from streams.cli import main; main()"]
# a state folder of the tests' own: a `trackwatch run` of the user's is neither found nor hit
ENV = {
    **os.environ,
    "COLUMNS": "200",
    "TERM": "dumb",
    "TRACKWATCH_STATE_DIR": tempfile.mkdtemp(prefix="tw-state-"),
}


# ---------------------------------------------------------------------------------------------
# Settings and write keys
# ---------------------------------------------------------------------------------------------


def test_settings_come_from_defaults_env_then_flags() -> None:
    env = {"TRACKWATCH_BROKER": "k:1", "TRACKWATCH_PORT": "9000", "TRACKWATCH_PLAN": "p.yaml"}
    s = Settings.from_env(env, port=None, broker="k:2")
    assert (s.broker, s.port, s.plan, s.max_event_bytes) == ("k:2", 9000, Path("p.yaml"), 32768)
    assert Settings.from_env({}).write_keys == Path("examples/write_keys.yaml")


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"TRACKWATCH_PORT": "eighty"}, "TRACKWATCH_PORT='eighty' is not a valid int"),
        ({"TRACKWATCH_PORT": "70000"}, "port must be a TCP port"),
        ({"TRACKWATCH_PRODUCE_TIMEOUT": "0"}, "produce_timeout must be positive"),
        ({"TRACKWATCH_FLUSH_INTERVAL": "nan"}, "flush_interval must be positive and finite"),
        ({"TRACKWATCH_PRODUCE_TIMEOUT": "inf"}, "produce_timeout must be positive and finite"),
        ({"TRACKWATCH_MAX_EVENT_BYTES": "999999999"}, "cannot exceed max_request_bytes"),
    ],
)
def test_bad_settings_are_explained(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(needle)):
        Settings.from_env(env)


def test_example_write_keys_cover_the_plan_sources() -> None:
    keys = load_write_keys(EXAMPLE_KEYS)
    assert set(keys.values()) == {"web", "ios", "android", "server"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("keys:\n  a: web\n  a: ios\n", "line 3: key 'a' appears twice (first on line 2)"),
        ("keys: [a, b]\n", "'keys' must map each write key"),
        ("other: 1\n", "expected a mapping with a 'keys' entry"),
        ("keys:\n  123: web\n", "write key 123 must be a non-empty string (quote it"),
        ("keys:\n  'a:b': web\n", "contains ':'"),
        ("keys:\n  a: [web]\n", "must map to a source name"),
        ("keys:\n  a: web\n b: x\n", "line 3, column 2: invalid YAML"),
        ("keys: {}\n", "'keys' must map"),
        ("\ufeff\x00", "invalid YAML"),
    ],
)
def test_bad_write_key_files_name_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError) as info:
        load_write_keys(path)
    assert str(info.value).startswith(str(path))
    assert needle in str(info.value)


def test_missing_and_binary_write_key_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"not found .*--write-keys"):
        load_write_keys(tmp_path / "nope.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00keys")
    with pytest.raises(SettingsError, match="cannot read"):
        load_write_keys(tmp_path / "bin.yaml")


# ---------------------------------------------------------------------------------------------
# CLI errors (no traceback, exit 2)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["collector", "--write-keys", "missing.yaml"], "write-key file not found"),
        (["run", "--plan", "missing-plan.yaml"], "no such tracking plan"),
        (["run", "--write-keys", "missing.yaml"], "write-key file not found"),
    ],
)
def test_cli_errors_are_one_clear_line(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


def test_bad_env_setting_is_a_cli_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKWATCH_PORT", "http")
    result = CliRunner().invoke(app, ["collector"])
    assert result.exit_code == 2 and "TRACKWATCH_PORT" in result.output


def test_collector_without_kafka_fails_clearly() -> None:
    port = _free_port()  # nothing listens there
    proc = subprocess.run(
        [*CLI, "collector", "--broker", f"127.0.0.1:{port}", "--connect-wait", "1", "--port", "0",
         "--write-keys", str(EXAMPLE_KEYS)],
        capture_output=True, text=True, timeout=60, env=ENV, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"cannot reach Kafka at 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# Commands against the real broker
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _start(args: list[str], pattern: str, timeout: float = 60) -> tuple[subprocess.Popen, re.Match]:
    """Start `trackwatch args` and wait until a stdout line matches `pattern`."""
    proc = subprocess.Popen(
        [*CLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
        cwd=ROOT,
    )
    deadline = time.monotonic() + timeout
    seen = []
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return proc, match
    proc.kill()
    raise AssertionError(f"{args}: {pattern!r} not printed:\n{''.join(seen)}")


def _wait_line(proc: subprocess.Popen, pattern: str, timeout: float = 30) -> str:
    """Read the child's output until a line matches `pattern`."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if re.search(pattern, line):
            return line
        assert line or proc.poll() is None, f"child exited before printing {pattern!r}"
    raise AssertionError(f"{pattern!r} not printed in {timeout} s")


def _post(url: str, key: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{key}:".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> str:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=timeout)
    return out


@pytest.mark.integration
def test_broker_command_serves_kafka_until_sigterm() -> None:
    proc, match = _start(["broker", "--port", "0"], r"broker ready: (127\.0\.0\.1:(\d+))")
    port = int(match.group(2))
    try:
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=match.group(1), request_timeout_ms=5000)
        assert "events.raw" in admin.list_topics()
        admin.close()
    finally:
        _stop(proc)
    assert proc.returncode == 0
    assert not _port_open(port)


@pytest.mark.integration
def test_collector_command_accepts_events_rotates_keys_and_stops_cleanly(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n  k_old: web\n", encoding="utf-8")
    proc, match = _start(
        ["collector", "--broker", broker.bootstrap, "--port", "0", "--write-keys", str(keys)],
        r"collector on (http://127\.0\.0\.1:(\d+))/v1/",
    )
    url, port = match.group(1), int(match.group(2))
    try:
        assert _post(f"{url}/v1/track", "k_old", b'{"event": "E"}') == 200
        assert _post(f"{url}/v1/track", "wrong", b'{"event": "E"}') == 401

        keys.write_text("keys:\n  k_new: web\n", encoding="utf-8")  # rotation + SIGHUP
        proc.send_signal(signal.SIGHUP)
        _wait_line(proc, r"write keys reloaded .*: 1 keys")
        assert _post(f"{url}/v1/track", "k_new", b'{"event": "E"}') == 200
        assert _post(f"{url}/v1/track", "k_old", b'{"event": "E"}') == 401

        keys.write_text("keys: [oops\n", encoding="utf-8")  # a broken file keeps the old keys
        proc.send_signal(signal.SIGHUP)
        _wait_line(proc, r"write keys not reloaded")
        assert _post(f"{url}/v1/track", "k_new", b'{"event": "E"}') == 200
    finally:
        out = _stop(proc, signal.SIGINT)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert not _port_open(port)


@pytest.mark.integration
@pytest.mark.slow
def test_run_starts_everything_and_stops_after_duration(tmp_path: Path) -> None:
    """`trackwatch run --duration`: panel with URLs, events accepted, then nothing left behind."""
    proc, match = _start(
        ["run", "--no-simulate", "--duration", "12", "--port", "0", "--worker-port", "0",
         "--worker-metrics-port", "0", "--log-dir", str(tmp_path)],
        r"collector\s+(http://127\.0\.0\.1:(\d+))/v1/track",
    )  # fmt: skip
    url, port = match.group(1), int(match.group(2))
    try:
        assert (
            _post(f"{url}/v1/batch", "wk_ios_demo_81b7e2", b'{"batch": [{"type": "screen"}]}')
            == 200
        )
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "stopped: collector, worker and embedded broker are down" in out
    assert "Collected 1 events (ios 1); 0 requests refused." in out
    assert not _port_open(port)
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftovers.stdout == "", "worker processes survived `run`"


@pytest.mark.integration
@pytest.mark.slow
def test_run_stops_everything_on_sigterm(tmp_path: Path) -> None:
    proc, match = _start(
        ["run", "--no-simulate", "--port", "0", "--worker-port", "0", "--worker-metrics-port", "0",
         "--log-dir", str(tmp_path)],
        r"Kafka \(embedded\)\s+127\.0\.0\.1:(\d+)",
    )  # fmt: skip
    broker_port = int(match.group(1))
    time.sleep(2)
    out = _stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, out
    assert not _port_open(broker_port), "the embedded broker survived `run`"
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftovers.stdout == ""
