"""Load test of the HTTP collector from a second process on loopback, next to a bare aiohttp
endpoint in the same run.

    python bench/bench_collector.py --requests 4000 --concurrency 32 --batch-size 1 20

Starts the embedded broker (Tansu) and two servers as child processes: `trackwatch collector`
(auth, limits, JSON parsing, envelope, micro-batching, answer after the Kafka acknowledgement)
and an "echo" aiohttp app that reads the body and answers {"success": true} (the floor: HTTP
and aiohttp only). This process is the client: aiohttp, `--concurrency` connections, a bounded
number of requests (and `--max-seconds`). It prints requests/s, events/s, p50/p99 latency for
both and their ratio, then checks that events.raw holds exactly the events the collector
acknowledged. Server CPU time per request (from /proc) is printed too: on a busy machine it is a
steadier figure than throughput. No thresholds: numbers to read, not to assert.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.broker import EmbeddedBroker, create_topics  # noqa: E402
from streams.envelope import decode_batch  # noqa: E402
from streams.settings import load_write_keys  # noqa: E402
from streams.topics import RAW  # noqa: E402

WRITE_KEYS = ROOT / "examples" / "write_keys.yaml"
ECHO_SERVER = """
import asyncio, sys
from aiohttp import web
async def echo(request):
    await request.read()
    return web.json_response({"success": True})
async def main():
    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/v1/{route}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"echo on http://127.0.0.1:{port}/v1/", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


@dataclass
class Result:
    name: str
    batch_size: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    acked_ids: list[str] = field(default_factory=list)
    server_cpu: float = 0.0  # CPU seconds the server process used during the case

    @property
    def cpu_per_request(self) -> float:
        return self.server_cpu / max(self.requests, 1)

    @property
    def requests(self) -> int:
        return len(self.latencies)

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def line(self) -> str:
        ok = self.statuses.get(200, 0)
        return (
            f"{self.name:<9} batch={self.batch_size:<3} {self.requests / self.seconds:8.0f} req/s "
            f"{ok * self.batch_size / self.seconds:9.0f} events/s   p50 {self.pct(0.50):6.2f} ms  "
            f"p99 {self.pct(0.99):6.2f} ms  mean {statistics.fmean(self.latencies) * 1000:6.2f} ms"
            f"  server CPU {self.cpu_per_request * 1e6:5.0f} us/req "
            f"({self.cpu_per_request / self.batch_size * 1e6:4.0f} us/event)"
            f"  statuses {dict(sorted(self.statuses.items()))}"
        )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_child(
    args: list[str], pattern: str, log: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """Start a server child; return it and the base URL it printed."""
    out = open(log, "w")  # noqa: SIM115 - the child's stdout for its lifetime
    env = {**os.environ, "COLUMNS": "200", **(env or {})}
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text())
        if match:
            return proc, match.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{args[:4]} did not start; see {log}")


async def load(
    name: str, base: str, key: str, n: int, concurrency: int, batch_size: int, max_seconds: float
) -> Result:
    result = Result(name, batch_size)
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    run = uuid.uuid4().hex[:8]
    counter = iter(range(n))
    deadline = time.monotonic() + max_seconds

    def body(i: int) -> tuple[str, bytes, list[str]]:
        calls = [
            {
                "type": "track",
                "event": "Product Viewed",
                "anonymousId": f"anon-{(i * batch_size + j) % 5000}",
                "messageId": f"{run}-{i}-{j}",
                "timestamp": "2026-11-23T18:00:00.000Z",
                "context": {"library": {"name": "bench", "version": "1"}},
                "properties": {"product_id": f"sku-{i % 300}", "price": 19.99, "currency": "EUR"},
            }
            for j in range(batch_size)
        ]
        ids = [c["messageId"] for c in calls]
        if batch_size == 1:
            return "/v1/track", orjson.dumps(calls[0]), ids
        return "/v1/batch", orjson.dumps({"batch": calls}), ids

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in counter:
            if time.monotonic() > deadline:
                return
            path, data, ids = body(i)
            started = time.perf_counter()
            async with session.post(
                base + path.removeprefix("/v1/"), data=data, headers=headers
            ) as r:
                await r.read()
                status = r.status
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status == 200:
                result.acked_ids.extend(ids)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
    return result


async def count_raw(bootstrap: str) -> list[str]:
    """messageIds of every envelope in events.raw."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(RAW, p) for p in consumer.partitions_for_topic(RAW) or []]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        ids: list[str] = []
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    ids.extend(e["body"]["messageId"] for e in decode_batch(record.value))
        return ids
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per case")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per case")
    parser.add_argument(
        "--flush-interval", type=float, default=None, help="collector micro-batch flush (s)"
    )
    parser.add_argument("--logs", type=Path, default=Path("/tmp/trackwatch-bench-collector"))
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    key = next(iter(load_write_keys(WRITE_KEYS)))

    collector_env = {}
    if args.flush_interval is not None:
        collector_env["TRACKWATCH_FLUSH_INTERVAL"] = str(args.flush_interval)
    with EmbeddedBroker(log_path=args.logs / "broker.log") as broker:
        create_topics(broker.bootstrap)
        collector, collector_url = start_child(
            [sys.executable, "-c", "from streams.cli import main; main()", "collector",
             "--broker", broker.bootstrap, "--port", "0", "--write-keys", str(WRITE_KEYS)],
            r"collector on (http://127\.0\.0\.1:\d+/v1/)",
            args.logs / "collector.log",
            env=collector_env,
        )  # fmt: skip
        echo, echo_url = start_child(
            [sys.executable, "-c", ECHO_SERVER], r"echo on (http://\S+/v1/)", args.logs / "echo.log"
        )
        try:
            print(
                f"{args.requests} requests per case, concurrency {args.concurrency}, loopback, "
                f"client in this process, servers in child processes ({os.cpu_count()} CPUs, "
                f"load average {os.getloadavg()[0]:.1f})"
            )
            acked: list[str] = []
            for size in args.batch_size:
                rows = []
                for name, url, proc in (
                    ("echo", echo_url, echo),
                    ("collector", collector_url, collector),
                ):
                    cpu_before = cpu_seconds(proc.pid)
                    r = asyncio.run(
                        load(
                            name, url, key, args.requests, args.concurrency, size, args.max_seconds
                        )
                    )
                    r.server_cpu = cpu_seconds(proc.pid) - cpu_before
                    rows.append(r)
                    print(r.line(), flush=True)
                    if name == "collector":
                        acked += r.acked_ids
                echo_r, coll_r = rows
                echo_rate = echo_r.requests / echo_r.seconds
                coll_rate = coll_r.requests / coll_r.seconds
                print(
                    f"  ratio collector/echo: throughput {coll_rate / echo_rate:.2f}x, "
                    f"p50 latency {coll_r.pct(0.5) / echo_r.pct(0.5):.1f}x, "
                    f"p99 latency {coll_r.pct(0.99) / echo_r.pct(0.99):.1f}x, "
                    f"server CPU per request {coll_r.cpu_per_request / echo_r.cpu_per_request:.1f}x"
                )
            stored = asyncio.run(count_raw(broker.bootstrap))
            missing = set(acked) - set(stored)
            print(
                f"events.raw: {len(stored)} envelopes for {len(acked)} acknowledged events; "
                f"missing {len(missing)}, duplicates {len(stored) - len(set(stored))}"
            )
        finally:
            for proc in (collector, echo):
                proc.terminate()
                proc.wait(30)


if __name__ == "__main__":
    main()
