"""`trackwatch run` as a user meets it: the whole stack on the real embedded broker, over TCP.

- a worker killed with SIGKILL is restarted, the broker and the collector stay up, and the
  logs read as text; every listener is on loopback; other commands find the stack's broker
  and worker through the state file; the prometheus.yml it writes is valid for promtool;
- `--durable` keeps the data across a broker that dies and across a restart of the stack;
- a first run with `--simulate` warms the models up on simulated history and alerts on the
  labelled incident it plays live (slow: several minutes).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from streams.envelope import decode_batch
from streams.topics import QUARANTINE, RAW
from tests.listeners import listening_addresses
from tests.test_cli_service import _post

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from streams.cli import main; main()"]
WEB_KEY = "wk_web_demo_5f3a9c"
IOS_KEY = "wk_ios_demo_81b7e2"  # ios validates in block mode: a bad event is quarantined
GOOD = (
    b'{"event": "Products Searched", "anonymousId": "a1", "properties": {"query": "shoes"},'
    b' "context": {"library": {"name": "curl"}}}'
)
BAD = b'{"event": "Products Searched", "anonymousId": "a2", "properties": {"query": 7}}'


class Stack:
    """A `trackwatch run` child; its output is read line by line into `lines`."""

    def __init__(self, tmp: Path, *args: str, name: str = "run") -> None:
        self.env = {
            **os.environ,
            "COLUMNS": "200",
            "TERM": "dumb",
            "TRACKWATCH_STATE_DIR": str(tmp / "state"),
        }
        for variable in (
            "TRACKWATCH_BROKER",
            "TRACKWATCH_COLLECTOR_URL",
            "TRACKWATCH_ANOMALIES_URL",
        ):
            self.env.pop(variable, None)
        self.logs = tmp / f"logs-{name}"
        self.proc = subprocess.Popen(
            [*CLI, "run", "--port", "0", "--worker-port", "0", "--worker-metrics-port", "0",
             "--log-dir", str(self.logs), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env, cwd=ROOT,
        )  # fmt: skip
        self.lines: list[str] = []

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if match := re.search(pattern, line):
                return match
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                break
            self.lines.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"{pattern!r} not printed in {timeout:.0f} s:\n{''.join(self.lines)}")

    def state(self) -> dict:
        return json.loads((Path(self.env["TRACKWATCH_STATE_DIR"]) / "stack.json").read_text())

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args], capture_output=True, text=True, timeout=120, env=self.env, cwd=ROOT
        )

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=120)
        self.lines.append(out)
        return "".join(self.lines)


@contextlib.contextmanager
def running(tmp: Path, *args: str, name: str = "run") -> Iterator[Stack]:
    stack = Stack(tmp, *args, name=name)
    try:
        stack.wait_for(r"trackwatch is running", timeout=240)
        yield stack
    finally:
        if stack.proc.poll() is None:
            with contextlib.suppress(Exception):
                stack.stop()
        if stack.proc.poll() is None:
            stack.proc.kill()


def _children(pid: int) -> dict[str, int]:
    """{'worker': pid, 'broker': pid, …} of the processes `run` started."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != pid:
            continue
        for name, needle in (("worker", " worker "), ("broker", "broker --listener-url"),
                             ("objectstore", "streams.objectstore")):  # fmt: skip
            if needle in cmdline:
                found[name] = int(entry.name)
    return found


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _answers(url: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _get(url)
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _topic(bootstrap: str, topic: str) -> list:
    """The topic's records until it is quiet for 3 s, or for 20 s at most: a live topic (such as
    events.raw while the simulator sends) never goes quiet, and reading it "until nothing
    comes" never ended."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    try:
        consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)])
        out, deadline = [], time.monotonic() + 20
        for msg in consumer:
            out.append(msg.value)
            if time.monotonic() > deadline:
                break
        return out
    finally:
        consumer.close()


def _port(url: str) -> int:
    return int(re.search(r":(\d+)", url.split("//", 1)[1]).group(1))


@pytest.mark.timeout(600)
def test_a_killed_worker_is_restarted_and_the_stack_keeps_serving(tmp_path: Path) -> None:
    with running(tmp_path, "--no-simulate") as stack:
        state = stack.state()
        url = state["collector_url"]
        first = _answers(state["anomalies_url"], timeout=120)  # once the worker is up
        assert first["models"]["summary"].startswith("waiting for traffic")
        # every listener on loopback, the broker's too
        for address in (url, state["anomalies_url"], state["worker_metrics_url"], state["broker"]):
            port = _port(address if "//" in address else f"//{address}")
            assert listening_addresses(port) == {"127.0.0.1"}, address
        assert _post(f"{url}/v1/track", WEB_KEY, GOOD) == 200

        # other commands find this stack: its worker, its broker (a random port, not 9092)
        listed = stack.cli("anomalies")
        assert listed.returncode == 0, listed.stderr
        assert "models:" in listed.stdout
        plan = str(ROOT / "examples" / "ecommerce.yaml")
        replay = stack.cli("quarantine", "replay", "--since", "2h", "--dry-run", "--plan", plan)
        assert "cannot reach Kafka" not in replay.stderr, replay.stderr
        assert replay.returncode == 0, replay.stdout + replay.stderr

        promtool = shutil.which("promtool")
        if promtool:
            config = Path(state["prometheus_config"])
            text = config.read_text()
            assert f"127.0.0.1:{_port(url)}" in text
            assert f"127.0.0.1:{_port(state['worker_metrics_url'])}" in text
            done = subprocess.run([promtool, "check", "config", str(config)],
                                  capture_output=True, text=True, check=False)  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr

        before = _children(stack.proc.pid)
        os.kill(before["worker"], signal.SIGKILL)
        stack.wait_for(r"worker exited with killed by SIGKILL; restarting in 1 s", timeout=30)
        stack.wait_for(r"worker restarted \(pid (\d+)\)", timeout=30)
        after = _children(stack.proc.pid)
        assert after["worker"] != before["worker"] and after["broker"] == before["broker"]
        assert _post(f"{url}/v1/track", WEB_KEY, GOOD) == 200  # the collector never went away
        assert _answers(state["anomalies_url"], timeout=120)["models"]["series"] >= 0
        assert stack.proc.poll() is None
        out = stack.stop()
    assert stack.proc.returncode == 0, out
    assert "Collected 2 events (web 2)" in out
    assert not (tmp_path / "state" / "stack.json").exists()
    log = (stack.logs / "worker.log").read_text()
    assert "\x1b" not in log  # no terminal codes in a log file
    assert re.search(r"=== \S+ worker exited with killed by SIGKILL after \d+ s", log)
    assert log.count("(start ") == 2


@pytest.mark.timeout(600)
def test_durable_data_outlives_a_broker_crash_and_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running(tmp_path, "--no-simulate", "--durable", "--data-dir", str(data)) as stack:
        assert "resumed" not in stack.wait_for(r"storage\s+files in .*", timeout=5).group(0)
        state = stack.state()
        url, bootstrap = state["collector_url"], state["broker"]
        assert _post(f"{url}/v1/track", WEB_KEY, GOOD) == 200
        assert _post(f"{url}/v1/track", IOS_KEY, BAD) == 200  # query must be a string
        deadline = time.monotonic() + 120
        while not _topic(bootstrap, QUARANTINE) and time.monotonic() < deadline:
            time.sleep(2)
        assert len(_topic(bootstrap, QUARANTINE)) == 1

        os.kill(_children(stack.proc.pid)["broker"], signal.SIGKILL)  # the broker dies
        stack.wait_for(r"embedded broker stopped \(killed by SIGKILL\); starting it again", 30)
        time.sleep(3)
        raw = [env for value in _topic(bootstrap, RAW) for env in decode_batch(value)]
        assert len(raw) == 2 and len(_topic(bootstrap, QUARANTINE)) == 1
        assert _post(f"{url}/v1/track", WEB_KEY, GOOD) == 200
        out = stack.stop()
    assert stack.proc.returncode == 0, out
    assert (data / "objects").is_dir()

    with running(tmp_path, "--durable", "--data-dir", str(data), name="again") as again:
        again.wait_for(r"storage\s+files in .*: resumed", timeout=5)  # kept data: no warm-up
        bootstrap = again.state()["broker"]
        raw = [env for value in _topic(bootstrap, RAW) for env in decode_batch(value)]
        users = [env["body"]["anonymousId"] for env in raw]
        assert users.count("a1") == 2 and users.count("a2") == 1  # the events sent before
        # the simulator went on live; a warm-up would have written ~500k events of history
        assert len(raw) < 10_000
        assert len([r for q in _topic(bootstrap, QUARANTINE) for r in json.loads(q)]) >= 1
        again.stop()
    assert again.proc.returncode == 0


def _counter(metrics_url: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


@pytest.mark.timeout(1800)
def test_a_first_run_warms_up_and_alerts_on_the_live_incident(tmp_path: Path) -> None:
    """What `./scripts/run.sh` shows a new user: models warm in minutes, the labelled incident
    played live is found during the run, and the README's curl (stamped now) does not make
    the simulated events late (they run on the real clock too)."""
    with running(tmp_path, "--duration", "1500") as stack:
        state = stack.state()
        deadline = time.monotonic() + 600
        while True:  # the worker reads the simulated history first
            models = _answers(state["anomalies_url"], timeout=120)["models"]
            if models["series"] and "backlog" not in models["summary"]:
                break
            assert time.monotonic() < deadline, models
            time.sleep(5)
        assert models["ready"] > models["learning"], models  # warm: past learning
        late = _counter(state["worker_metrics_url"], "trackwatch_late_events_total")
        received = _counter(state["worker_metrics_url"], "trackwatch_events_received_total")
        assert _post(f"{state['collector_url']}/v1/track", WEB_KEY, GOOD) == 200

        incident = r"found the live incident 'Product pages crawled by a bot' (\d+) min"
        found = stack.wait_for(incident, timeout=1200)
        assert int(found.group(1)) <= 15
        more_late = _counter(state["worker_metrics_url"], "trackwatch_late_events_total") - late
        more = _counter(state["worker_metrics_url"], "trackwatch_events_received_total") - received
        assert more > 100
        # simulated apps send a few events late on purpose (offline phones): ~0.2 %; with the
        # simulator two weeks in the past, the curl made ~25 % of them late
        assert more_late / more < 0.02, (more_late, more)
        assert re.search(
            # the simulated bots resend the same products: the repeated-key test may tell it first
            r"anomaly spike: Product Viewed .* (higher than expected|sent twice|sent again)",
            "".join(stack.lines),
        )
        out = stack.stop()
    assert stack.proc.returncode == 0, out
    history = (stack.logs / "simulate.log").read_text()
    assert re.search(r"history: [\d,]+ events written into events.raw", history)
