"""Every alert of the shipped rules, provoked on a running stack, seen firing in a real Prometheus
and delivered by a real Alertmanager to a webhook.

The stack: the embedded broker, `trackwatch collector` and `trackwatch worker` as processes,
Debian's `prometheus` scraping both every second and evaluating a test copy of
deploy/prometheus/rules.yml, Debian's `prometheus-alertmanager` posting to an aiohttp webhook in
this test. The copy differs from the shipped file only in time (`rules_for_tests`): evaluation
every second, every `for:` 3 s, range windows and the stale-stage age 15 times shorter ([5m] ->
[20s], [15m] -> [60s], 300 s -> 20 s); the expressions, labels and other thresholds are the
shipped ones.

One story, in order, with a steady trickle of valid web events meanwhile (as on a live site):
1. unplanned "Promo Popup Shown" events over four minutes of event time -> `new_event` anomaly
   -> TrackwatchAnomalyFiring;
2. half of the server's events break the plan -> TrackwatchQuarantineSurge{source="server"};
3. the broker says input the worker had not read yet was deleted (fault `retention`) ->
   TrackwatchInputLost;
4. a backlog received 10 minutes ago is processed now -> TrackwatchProcessingLagHigh;
5. the process agent gets stuck (fault `stall`) while events arrive ->
   TrackwatchPipelineStopped{reason="stage_stale"}, then {reason="nothing_processed"};
6. the worker is killed -> TrackwatchPipelineStopped{reason="no_worker"};
7. the broker stops: the collector answers 503 -> TrackwatchCollectorErrors;
8. the collector is killed -> TrackwatchCollectorDown.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from kafka import KafkaProducer

from streams.broker import EmbeddedBroker, create_topics, free_port
from streams.topics import RAW
from tests.e2e_parts import ROOT, alertmanager, prometheus
from tests.worker_process import start_worker, stop_worker
from tracking_plan.normalise import format_timestamp

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
PARTITIONS = 4
KEYS = {"wk_web_alerts": "web", "wk_server_alerts": "server"}
TEST_FOR = "3s"
# the shipped rules on a compressed clock: their range windows and the stale-stage age (a
# window's worth) 15 times shorter
RANGES = {"[5m]": "[20s]", "[15m]": "[60s]"}
STALE_SHIPPED, STALE_TEST = "> 300", "> 20"


def rules_for_tests(shipped: dict[str, Any]) -> dict[str, Any]:
    """The shipped rules with test timings: recording every second, every `for:` 3 s, range
    windows and the stale-stage age 15 times shorter. Every change is checked to hit what it
    means to: a shipped file with another window or threshold fails here, instead of being
    tested with timings nobody chose."""
    rules = json.loads(json.dumps(shipped))
    stale = 0
    for group in rules["groups"]:
        if "interval" in group:
            group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = TEST_FOR
            expr = rule["expr"]
            for shipped_range, test_range in RANGES.items():
                expr = expr.replace(shipped_range, test_range)
            assert not re.search(
                r"\[\d+[smhd]\]", expr.replace("[20s]", "").replace("[60s]", "")
            ), expr
            if rule.get("labels", {}).get("reason") == "stage_stale":
                assert expr.count(STALE_SHIPPED) == 1, expr
                expr = expr.replace(STALE_SHIPPED, STALE_TEST)
                stale += 1
            rule["expr"] = expr
    assert stale == 1
    return rules


def shipped_alerts(shipped: dict[str, Any]) -> set[tuple[str, str | None]]:
    """(alertname, reason label) of every alerting rule in the shipped file."""
    return {
        (rule["alert"], rule.get("labels", {}).get("reason"))
        for group in shipped["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


# ------------------------------------------------------------------------------------ processes


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _get(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _wait(what: str, check: Callable[[], Any], timeout: float, logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError, KeyError):
            got = check()
            if got:
                return got
        if time.monotonic() > deadline:
            tails = "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in logs
            )
            pytest.fail(f"{what}: not seen within {timeout:.0f} s\n{tails}")
        time.sleep(0.5)


class Webhook:
    """Alertmanager's receiver: an aiohttp server on loopback keeping every payload posted."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = free_port()

    async def _receive(self, request: web.Request) -> web.Response:
        self.payloads.append(await request.json())
        return web.Response(text="ok")

    def __enter__(self) -> Webhook:
        self.thread.start()

        async def up() -> web.AppRunner:
            app = web.Application()
            app.router.add_post("/alerts", self._receive)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            return runner

        self.runner = asyncio.run_coroutine_threadsafe(up(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def delivered(self, name: str, reason: str | None = None) -> dict[str, Any] | None:
        """A firing alert `name` (with that `reason` label) Alertmanager delivered, if any."""
        for payload in list(self.payloads):
            for alert in payload.get("alerts", []):
                labels = alert["labels"]
                if (
                    alert["status"] == "firing"
                    and labels.get("alertname") == name
                    and labels.get("reason") == reason
                ):
                    return alert
        return None


class Traffic:
    """Events sent while the test runs: a steady trickle of valid web events through the
    collector (or, in `backlog` mode, envelopes received 10 minutes ago written straight to
    events.raw, as a worker finds them when it is behind), plus bursts on demand."""

    def __init__(self, collector: str, bootstrap: str) -> None:
        self.collector = collector
        self.producer = KafkaProducer(bootstrap_servers=bootstrap)
        self.mode = "collector"
        self.statuses: list[int] = []
        self.n = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def post(self, key: str, calls: list[dict[str, Any]], timeout: float = 10) -> int:
        auth = base64.b64encode(f"{key}:".encode()).decode()
        request = urllib.request.Request(
            f"{self.collector}/v1/batch",
            data=orjson.dumps({"batch": calls}),
            headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 0  # refused: the collector is gone
        self.statuses.append(status)
        return status

    def call(self, event: str, props: dict[str, Any], user: str, ts: float | None = None) -> dict:
        self.n += 1
        body: dict[str, Any] = {
            "type": "track", "event": event, "userId": user, "properties": props,
            "messageId": f"m-{uuid.uuid4().hex}",
            "context": {"library": {"name": "analytics.js"}},
        }  # fmt: skip
        if ts is not None:
            body["timestamp"] = format_timestamp(ts)
        return body

    def _run(self) -> None:
        while not self.stop.wait(0.25):
            user = f"reader-{self.n % 16}"
            call = self.call("Products Searched", {"query": "shoes"}, user)
            if self.mode == "collector":
                self.post("wk_web_alerts", [call])
            else:
                ago = time.time() - 600
                envelope = {"source": "web", "received_at": format_timestamp(ago), "body": call}
                self.producer.send(RAW, orjson.dumps([envelope]), partition=self.n % PARTITIONS)
                self.producer.flush()

    def start(self) -> None:
        self.thread.start()

    def __enter__(self) -> Traffic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(30)
        self.producer.close(timeout=5)


# ------------------------------------------------------------------------------------ the test


@pytest.fixture
def parts() -> tuple[str, str]:
    return prometheus(), alertmanager()


def test_every_shipped_alert_fires_and_is_delivered(parts: tuple[str, str], tmp_path: Path) -> None:
    prometheus_bin, alertmanager_bin = parts
    shipped = yaml.safe_load(RULES.read_text())
    expected = shipped_alerts(shipped)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules_for_tests(shipped), sort_keys=False))
    faults = tmp_path / "faults"
    faults.mkdir()
    logs = [tmp_path / n for n in ("collector.log", "worker.log", "prometheus.log", "am.log")]

    broker = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    procs: list[subprocess.Popen] = []
    try:
        create_topics(broker.bootstrap, partitions=PARTITIONS)
        keys = tmp_path / "keys.yaml"
        keys.write_text(yaml.safe_dump({"keys": KEYS}))
        port = free_port()
        collector = _spawn(
            [sys.executable, "-c", "from streams.cli import main; main()", "collector",
             "--broker", broker.bootstrap, "--write-keys", str(keys),
             "--host", "127.0.0.1", "--port", str(port)],
            logs[0],
        )  # fmt: skip
        procs.append(collector)
        worker = start_worker(broker.bootstrap, f"tw-{uuid.uuid4().hex[:6]}", logs[1],
                              tmp_path / "data", faults=faults)  # fmt: skip
        procs.append(worker)
        with Webhook() as hook:
            am_port, prom_port = free_port(), free_port()
            (tmp_path / "am.yml").write_text(yaml.safe_dump({
                "route": {"receiver": "hook", "group_by": ["alertname", "reason"],
                          "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
                "receivers": [{"name": "hook", "webhook_configs": [
                    {"url": f"http://127.0.0.1:{hook.port}/alerts", "send_resolved": True}]}],
            }))  # fmt: skip
            procs.append(_spawn(
                [alertmanager_bin, f"--config.file={tmp_path / 'am.yml'}",
                 f"--storage.path={tmp_path / 'am-data'}",
                 f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
                logs[3],
            ))  # fmt: skip
            (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": ["rules.yml"],
                "alerting": {"alertmanagers": [
                    {"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
                "scrape_configs": [
                    {"job_name": "trackwatch-collector",
                     "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
                    {"job_name": "trackwatch-worker",
                     "static_configs": [{"targets": [f"127.0.0.1:{worker.metrics_port}"]}]},
                ],
            }))  # fmt: skip
            procs.append(_spawn(
                [prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                logs[2],
            ))  # fmt: skip
            api = f"http://127.0.0.1:{prom_port}/api/v1"

            def firing(name: str, reason: str | None = None) -> dict[str, Any] | None:
                for alert in _get(f"{api}/alerts")["data"]["alerts"]:
                    labels = alert["labels"]
                    key = (labels["alertname"], labels.get("reason"))
                    if key == (name, reason) and alert["state"] == "firing":
                        return alert
                return None

            seen: dict[tuple[str, str | None], dict[str, Any]] = {}

            def quiet(name: str, reason: str | None = None) -> None:
                """Not firing yet: what the next step does provokes it."""
                assert firing(name, reason) is None, (name, reason, "fired before its cause")
                assert hook.delivered(name, reason) is None, (name, reason)

            def fires(name: str, reason: str | None = None, timeout: float = 90) -> dict:
                alert = _wait(f"{name} {reason or ''} firing in Prometheus",
                              lambda: firing(name, reason), timeout, logs)  # fmt: skip
                _wait(f"{name} {reason or ''} delivered to the webhook",
                      lambda: hook.delivered(name, reason), 30, logs)  # fmt: skip
                seen[(name, reason)] = alert
                return alert

            def targets_up() -> bool:
                active = _get(f"{api}/targets")["data"]["activeTargets"]
                return len(active) == 2 and all(t["health"] == "up" for t in active)

            _wait("both scrape targets up", targets_up, 90, logs)
            _wait("the alertmanager", lambda: _get(f"{api}/alertmanagers")["data"]
                  ["activeAlertmanagers"], 30, logs)  # fmt: skip

            with Traffic(f"http://127.0.0.1:{port}", broker.bootstrap) as traffic:
                quiet("TrackwatchAnomalyFiring")
                # 1. an unplanned event keeps coming, minutes ago in event time (sent first:
                # once the trickle has moved event time on, they would be late for windows)
                start = time.time() - 20 * 60
                unplanned = [
                    traffic.call("Promo Popup Shown", {"variant": "b"}, f"promo-{i}",
                                 start + 60 * (i // 2) + i)
                    for i in range(8)
                ]  # fmt: skip
                assert traffic.post("wk_web_alerts", unplanned) == 200
                # all eight read before the trickle starts: one read after a partition's
                # trickle moved event time on would be late for its window (a revision)
                received = urllib.parse.urlencode(
                    {"query": 'sum(trackwatch_events_received_total{event="(unplanned)"})'}
                )
                _wait("the worker reading all eight",
                      lambda: [r for r in _get(f"{api}/query?{received}")["data"]["result"]
                               if float(r["value"][1]) >= len(unplanned)], 60, logs)  # fmt: skip
                traffic.start()  # the trickle at the present time closes their windows
                # the windows close as the trickle moves event time on: on a loaded machine
                # the worker takes longer to get there than the rules' own 90 s
                anomaly = fires("TrackwatchAnomalyFiring", timeout=240)
                assert anomaly["labels"]["event"] == "(unplanned)"

                quiet("TrackwatchQuarantineSurge")
                # 2. half of the server's events break the plan
                for i in range(12):
                    calls = [
                        traffic.call("Signed Up", {"method": "email" if j % 2 else "fax"},
                                     f"server-{i}-{j}")
                        for j in range(4)
                    ]  # fmt: skip
                    assert traffic.post("wk_server_alerts", calls) == 200
                    time.sleep(0.5)
                surge = fires("TrackwatchQuarantineSurge")
                assert surge["labels"]["source"] == "server"

                quiet("TrackwatchInputLost")
                # 3. input deleted before the worker read it
                (faults / "retention").touch()
                for _ in range(8):
                    traffic.post("wk_web_alerts", [traffic.call("Products Searched",
                                                                {"query": "q"}, f"gap-{j}")
                                                   for j in range(16)])  # fmt: skip
                    time.sleep(0.5)
                lost = fires("TrackwatchInputLost")
                assert lost["labels"]["stage"] == "process"
                (faults / "retention").unlink()

                quiet("TrackwatchProcessingLagHigh")
                # 4. a backlog received 10 minutes ago
                traffic.mode = "backlog"
                lag = fires("TrackwatchProcessingLagHigh")
                # validate and aggregate: both stages of the process agent
                assert lag["labels"]["stage"] in ("validate", "aggregate")
                assert float(lag["value"]) > 500
                traffic.mode = "collector"

                quiet("TrackwatchPipelineStopped", "stage_stale")
                quiet("TrackwatchPipelineStopped", "nothing_processed")
                # 5. the process agent is stuck while events keep arriving
                (faults / "stall").touch()
                stale = fires("TrackwatchPipelineStopped", "stage_stale")
                # validate and aggregate stop; detect, which only reads what they send, too
                assert stale["labels"]["stage"] in ("validate", "aggregate", "detect")

                # nothing read from events.raw while events are collected (the stuck agent)
                fires("TrackwatchPipelineStopped", "nothing_processed")

                quiet("TrackwatchPipelineStopped", "no_worker")
                # 6. no worker at all
                stop_worker(worker, signal.SIGKILL)
                fires("TrackwatchPipelineStopped", "no_worker")

                quiet("TrackwatchCollectorErrors")
                # 7. Kafka away: the collector answers 503
                broker.stop()
                with ThreadPoolExecutor(8) as pool:
                    deadline = time.monotonic() + 120
                    while firing("TrackwatchCollectorErrors") is None:
                        assert time.monotonic() < deadline, "no TrackwatchCollectorErrors"
                        list(pool.map(lambda i: traffic.post("wk_web_alerts", [
                            traffic.call("Products Searched", {"query": "q"}, f"down-{i}")]),
                            range(8)))  # fmt: skip
                fires("TrackwatchCollectorErrors")
                assert 503 in traffic.statuses

                quiet("TrackwatchCollectorDown")
                # 8. the collector itself is gone
                _stop(collector, signal.SIGKILL)
                fires("TrackwatchCollectorDown")

            assert set(seen) == expected, f"not provoked: {expected - set(seen)}"
    finally:
        for proc in reversed(procs):
            _stop(proc)
        broker.stop()
