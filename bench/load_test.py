"""End-to-end load test on loopback: HTTP client (this process) → `trackwatch collector` →
embedded broker → `trackwatch worker`, each in a process of its own, like `trackwatch run`.

    .venv/bin/python bench/load_test.py [--events 40000] [--batch-size 20] [--concurrency 16]
                                        [--max-seconds 60] [--partitions 4]

bench/bench_collector.py measures the collector alone (against a bare aiohttp floor) and
bench/bench_pipeline.py the worker alone (against a plain aiokafka loop); this one runs the
whole path at once, bounded in count (--events) and time (--max-seconds), and reports:

- HTTP: requests/s, events/s acknowledged (200 = Kafka acks=all), p50/p99/max latency, 503s;
- end to end: events/s processed by the worker (its `trackwatch_events_received_total`, polled
  on /metrics) from the first request until the worker caught up, and the ratio to the HTTP
  rate (1.0 = the worker keeps up with the collector), plus how long the worker needed after
  the last acknowledgement;
- a check: every acknowledged event is in events.valid once (after the `origin` rule).

Window records reach metrics.windows only when event time passes window end + the 120 s allowed
lateness (events carry the real time here), so they are not part of the timed path.
Numbers to read, not to assert: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.request import urlopen

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.broker import EmbeddedBroker, create_topics, free_port  # noqa: E402
from streams.topics import VALID  # noqa: E402
from tests.streaming_support import read_topic  # noqa: E402
from tests.worker_process import start_worker, stop_worker  # noqa: E402
from tracking_plan.normalise import format_timestamp  # noqa: E402

WEB_KEY = "wk_web_demo_5f3a9c"  # examples/write_keys.yaml
RECEIVED = re.compile(r"^trackwatch_events_received_total\{[^}]*\} ([0-9.e+]+)$", re.M)


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    acked: list[str] = field(default_factory=list)
    started: float = 0.0
    seconds: float = 0.0
    last_ack: float = 0.0

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3 if ordered else 0.0


def start_collector(bootstrap: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-c", "from streams.cli import main; main()", "collector",
           "--broker", bootstrap, "--port", str(port)]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the collector exited; see {log}")
        try:
            with urlopen(f"{base}/healthz", timeout=2) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the collector did not start; see {log}")


def worker_received(metrics_port: int) -> float:
    """Events the worker has processed so far (its Prometheus counter, all labels)."""
    try:
        with urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return float("nan")
    return sum(float(v) for v in RECEIVED.findall(text))


async def send_load(base: str, events: int, batch: int, concurrency: int, limit: float) -> Load:
    """POST `events` events in /v1/batch requests of `batch` from `concurrency` connections."""
    load = Load()
    auth = "Basic " + base64.b64encode(f"{WEB_KEY}:".encode()).decode()
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    run = uuid.uuid4().hex[:8]
    numbers = iter(range((events + batch - 1) // batch))
    deadline = time.monotonic() + limit

    def body(i: int) -> tuple[bytes, list[str]]:
        now = format_timestamp(time.time())
        calls = [
            {
                "type": "track",
                "event": "Product Viewed",
                "anonymousId": f"anon-{(i * batch + j) % 5000}",
                "messageId": f"{run}-{i}-{j}",
                "timestamp": now,
                "context": {"library": {"name": "load_test"}, "app": {"version": "1.2"}},
                "properties": {"product_id": f"p_{i % 300:04x}", "price": 19.5},
            }
            for j in range(batch)
        ]
        return orjson.dumps({"batch": calls}), [c["messageId"] for c in calls]

    async def client(session: aiohttp.ClientSession) -> None:
        for i in numbers:
            if time.monotonic() > deadline:
                return
            data, ids = body(i)
            t0 = time.perf_counter()
            async with session.post(f"{base}/v1/batch", data=data, headers=headers) as r:
                await r.read()
                status = r.status
            load.latencies.append(time.perf_counter() - t0)
            load.statuses[status] = load.statuses.get(status, 0) + 1
            if status == 200:
                load.acked.extend(ids)
                load.last_ack = time.perf_counter()

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        load.started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        load.seconds = time.perf_counter() - load.started
    return load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=40_000, help="events to send (upper bound)")
    ap.add_argument("--batch-size", type=int, default=20, help="events per /v1/batch request")
    ap.add_argument("--concurrency", type=int, default=16, help="HTTP connections")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="bound on the sending time")
    ap.add_argument("--catch-up-seconds", type=float, default=120.0, help="bound on the wait")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--logs", type=Path, default=None, help="where child logs go [a temp dir]")
    args = ap.parse_args()
    logs = args.logs or Path(tempfile.mkdtemp(prefix="trackwatch-load-"))
    logs.mkdir(parents=True, exist_ok=True)

    with EmbeddedBroker(log_path=logs / "broker.log") as broker:
        create_topics(broker.bootstrap, partitions=args.partitions)
        worker = start_worker(
            broker.bootstrap, f"tw-load-{uuid.uuid4().hex[:6]}", logs / "worker.log", logs
        )
        collector, base = start_collector(broker.bootstrap, logs / "collector.log")
        try:
            # warm-up: the worker has joined its group and processed one event
            warm = asyncio.run(send_load(base, 1, 1, 1, 30))
            deadline = time.monotonic() + 90
            while not worker_received(worker.metrics_port) >= 1 and time.monotonic() < deadline:
                time.sleep(0.3)
            base_count = worker_received(worker.metrics_port)
            if not base_count >= 1:
                raise SystemExit(f"the worker did not start processing; see {logs}/worker.log")

            load = asyncio.run(
                send_load(base, args.events, args.batch_size, args.concurrency, args.max_seconds)
            )
            target = base_count + len(load.acked)
            deadline = time.monotonic() + args.catch_up_seconds
            done = worker_received(worker.metrics_port)
            while done < target and time.monotonic() < deadline:
                time.sleep(0.2)
                done = worker_received(worker.metrics_port)
            caught_up = time.perf_counter()
            processed = done - base_count
            ids = set(load.acked) | set(warm.acked)
            valid = read_topic(
                broker.bootstrap, VALID, idle=2, timeout=60,
                until=lambda vs: sum(len(v["events"]) for v in vs) >= len(ids),
            )  # fmt: skip
        finally:
            collector.send_signal(signal.SIGTERM)
            collector.wait(30)
            stop_worker(worker)

    forwarded = [i["event"]["messageId"] for v in valid for i in v["events"]]
    http_rate = len(load.acked) / load.seconds if load.seconds else 0.0
    e2e_seconds = caught_up - load.started
    e2e_rate = processed / e2e_seconds if e2e_seconds > 0 else 0.0
    requests = sum(load.statuses.values())
    print(f"machine: {os.cpu_count()} cores, loopback; logs in {logs}")
    print(
        f"HTTP   {requests} requests of {args.batch_size} events, {args.concurrency} connections, "
        f"{load.seconds:.1f} s: {requests / load.seconds:,.0f} req/s, "
        f"{http_rate:,.0f} events/s acknowledged; latency p50 {load.pct(0.5):.1f} ms, "
        f"p99 {load.pct(0.99):.1f} ms, max {max(load.latencies) * 1e3:.0f} ms, "
        f"mean {statistics.fmean(load.latencies) * 1e3:.1f} ms; statuses {load.statuses}"
    )
    print(
        f"E2E    worker processed {processed:,.0f} of {len(load.acked):,} acknowledged events in "
        f"{e2e_seconds:.1f} s from the first request: {e2e_rate:,.0f} events/s "
        f"(ratio to the HTTP rate {e2e_rate / http_rate if http_rate else 0:.2f}); caught up "
        f"{caught_up - load.last_ack:.1f} s after the last acknowledgement"
    )
    missing = ids - set(forwarded)
    print(
        f"CHECK  events.valid holds {len(set(forwarded)):,} of {len(ids):,} acknowledged events "
        f"({len(forwarded) - len(set(forwarded))} re-sent copies, {len(missing)} missing)"
    )


if __name__ == "__main__":
    main()
