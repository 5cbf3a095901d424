"""End-to-end throughput and latency of one trackwatch worker, next to a plain aiokafka loop.

    .venv/bin/python bench/bench_pipeline.py [--events 100000] [--batch 500] [--partitions 4]

On an embedded broker of its own:
1. produces N envelopes (micro-batches of --batch, grouped by partition key like the collector)
   straight to events.raw, plus closing events that close every window;
2. baseline: a plain aiokafka consumer reads that backlog and runs decode + validate on every
   envelope (no dedupe, no output, no windows, no state): events/s;
3. trackwatch: a worker process (validate + dedupe + quarantine + windows + snapshots + detect)
   reads the same backlog; events/s from its first events.valid message until the last window
   flush is out;
4. latency: the same worker then gets a paced stream (--paced-rate events/s for --paced-seconds)
   and the time from producing a raw message to its events.valid message is measured (p50/p99).
Prints events/s, the ratio to the baseline, the worker's CPU seconds per event (steadier than
wall time on a shared machine) and the latencies. Nothing is asserted. `--worker-log PATH` keeps
the worker's log.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streams.broker import EmbeddedBroker, create_topics  # noqa: E402
from streams.cli.worker import WORKER_GC  # noqa: E402
from streams.envelope import decode_batch, encode_batch, partition_for, partition_key  # noqa: E402
from streams.topics import RAW, VALID, WINDOWS  # noqa: E402
from tests.streaming_support import T0, body_for, make_envelopes  # noqa: E402
from tests.worker_process import PLAN, start_worker, stop_worker  # noqa: E402
from tracking_plan.loader import load_plan  # noqa: E402
from tracking_plan.normalise import format_timestamp  # noqa: E402
from tracking_plan.validator import compile_plan  # noqa: E402


def batches(envelopes: list[dict], partitions: int, size: int) -> list[tuple[int, bytes, int]]:
    """(partition, value, envelope count) messages, grouped by partition key."""
    groups: dict[int, list[dict]] = {}
    out = []
    for env in envelopes:
        p = partition_for(partition_key(env), partitions)
        groups.setdefault(p, []).append(env)
        if len(groups[p]) >= size:
            out.append((p, encode_batch(groups[p]), len(groups.pop(p))))
    out += [(p, encode_batch(g), len(g)) for p, g in groups.items()]
    return out


def closers(at: float, n: int = 64) -> list[dict]:
    return [
        {
            "source": "web",
            "received_at": format_timestamp(at),
            "body": body_for("Product Viewed", f"closer-{i}-{at}", at, f"c-{i}-{at}", "web"),
        }
        for i in range(n)
    ]


async def produce(bootstrap: str, messages: list[tuple[int, bytes, int]]) -> dict:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, max_request_size=8_000_000, linger_ms=5
    )
    await producer.start()
    sent = {}
    try:
        futures = []
        for p, value, _n in messages:
            futures.append((p, await producer.send(RAW, value, partition=p), time.monotonic()))
        for p, fut, at in futures:
            meta = await fut
            sent[(p, meta.offset)] = at
    finally:
        await producer.stop()
    return sent


async def baseline(bootstrap: str, partitions: int, total_messages: int) -> tuple[float, int]:
    """Plain aiokafka consume + decode + validate of the backlog: (seconds, envelopes)."""
    validator = compile_plan(load_plan(PLAN))
    gc.collect()
    gc.freeze()
    gc.set_threshold(*WORKER_GC)  # the same garbage-collector settings as the worker
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8_000_000,
    )
    await consumer.start()
    consumer.assign([TopicPartition(RAW, p) for p in range(partitions)])
    await consumer.seek_to_beginning()
    seen = envelopes = 0
    started = None
    try:
        while seen < total_messages:
            got = await consumer.getmany(timeout_ms=1000, max_records=500)
            for records in got.values():
                for record in records:
                    if started is None:
                        started = time.perf_counter()
                    for env in decode_batch(record.value):
                        validator.validate(env["body"], env["source"], time.time())
                        envelopes += 1
                    seen += 1
    finally:
        await consumer.stop()
    return time.perf_counter() - (started or time.perf_counter()), envelopes


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc; nan elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def watch_worker(
    bootstrap: str, partitions: int, closed_target: float, timeout: float, pid: int = 0
) -> dict:
    """Follow events.valid and metrics.windows until a flush closes `closed_target` in every
    aggregate partition; return the time of the first valid message and of the last flush (and
    the worker's CPU seconds at both: on a shared machine they tell more than wall time)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8_000_000,
    )
    await consumer.start()
    tps = [TopicPartition(VALID, p) for p in range(partitions)] + [TopicPartition(WINDOWS, 0)]
    consumer.assign(tps)
    await consumer.seek_to_beginning()
    first = last_flush = None
    cpu_first = cpu_last = float("nan")
    closed: dict[str, float] = {}
    tallied = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            got = await consumer.getmany(timeout_ms=500)
            now = time.monotonic()
            for tp, records in got.items():
                for record in records:
                    value = orjson.loads(record.value)
                    if tp.topic == VALID:
                        if first is None:
                            first, cpu_first = now, cpu_seconds(pid)
                        tallied += len(value["events"])
                    else:
                        if value["closed_until"] is not None:
                            closed[value["partition"]] = value["closed_until"]
                        last_flush, cpu_last = now, cpu_seconds(pid)
            if len(closed) == partitions and min(closed.values()) >= closed_target:
                break
    finally:
        await consumer.stop()
    return {
        "first": first,
        "last": last_flush,
        "tallied": tallied,
        "cpu": cpu_last - cpu_first,
    }


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--paced-rate", type=int, default=5_000)
    ap.add_argument("--paced-seconds", type=float, default=10.0)
    ap.add_argument("--worker-log", type=Path, help="keep the worker's log at this path")
    args = ap.parse_args()
    seconds = 3600.0
    envelopes = make_envelopes(args.events, seed=1, seconds=seconds, users=5000)
    messages = batches([*envelopes, *closers(T0 + seconds + 600)], args.partitions, args.batch)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_path=Path(tmp) / "b.log") as b:
        create_topics(b.bootstrap, partitions=args.partitions)
        t = time.perf_counter()
        await produce(b.bootstrap, messages)
        print(f"produced {len(envelopes):,} envelopes in {len(messages):,} messages "
              f"({time.perf_counter() - t:.1f} s)")  # fmt: skip

        base_s, base_n = await baseline(b.bootstrap, args.partitions, len(messages))
        base_rate = base_n / base_s
        print(
            f"baseline  aiokafka consume + validate: {base_rate:>9,.0f} events/s ({base_s:.2f} s)"
        )

        app_id = f"bench-{uuid.uuid4().hex[:6]}"
        log = Path(tmp) / "worker.log"
        worker = start_worker(b.bootstrap, app_id, log, Path(tmp))
        try:
            closed_target = T0 + seconds + 600 - 120 - 60
            seen = await watch_worker(b.bootstrap, args.partitions, closed_target, 600, worker.pid)
            if seen["first"] is None or seen["last"] is None:
                print("worker produced no output; log tail:\n" + log.read_text()[-2000:])
                return
            work_s = seen["last"] - seen["first"]
            rate = len(envelopes) / work_s
            print(f"trackwatch worker (validate+dedupe+windows+snapshots): {rate:>9,.0f} events/s "
                  f"({work_s:.2f} s from first events.valid to last window flush)")  # fmt: skip
            print(f"worker CPU in that time: {seen['cpu']:.2f} s "
                  f"({1e6 * seen['cpu'] / len(envelopes):.0f} µs/event; baseline "
                  f"{1e6 * base_s / base_n:.0f} µs/event wall)")  # fmt: skip
            verdict = "met" if rate >= 50_000 else "NOT met"
            print(f"ratio worker / baseline: {rate / base_rate:.2f}  (goal >= 0.70; "
                  f"goal >= 50,000 events/s: {verdict})")  # fmt: skip

            # latency under a paced load, after the backlog (event time continues later on)
            start = T0 + seconds + 1200
            n = int(args.paced_rate * args.paced_seconds)
            paced = make_envelopes(n, seed=2, seconds=args.paced_seconds, users=5000)
            for i, env in enumerate(paced):
                at = format_timestamp(start + i * args.paced_seconds / n)
                env["body"]["timestamp"] = env["received_at"] = at
            paced_msgs = batches(paced, args.partitions, 100)
            sent: dict = {}
            interval = args.paced_seconds / max(1, len(paced_msgs))
            producer = AIOKafkaProducer(bootstrap_servers=b.bootstrap, max_request_size=8_000_000)
            await producer.start()
            watcher = asyncio.create_task(
                watch_latency(b.bootstrap, args.partitions, sent, len(paced_msgs))
            )
            try:
                for p, value, _n in paced_msgs:
                    meta = await producer.send_and_wait(RAW, value, partition=p)
                    sent[(p, meta.offset)] = time.monotonic()
                    await asyncio.sleep(interval)
            finally:
                await producer.stop()
            lat = await watcher
            print(f"latency raw -> events.valid at {args.paced_rate:,} events/s "
                  f"(messages of 100): p50 {1e3 * pct(lat, 0.5):.0f} ms, "
                  f"p99 {1e3 * pct(lat, 0.99):.0f} ms ({len(lat)} messages)")  # fmt: skip
        finally:
            stop_worker(worker)
            if args.worker_log:
                args.worker_log.write_bytes(log.read_bytes())


async def watch_latency(bootstrap: str, partitions: int, sent: dict, expected: int) -> list[float]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        enable_auto_commit=False,
        fetch_max_wait_ms=20,  # the measuring consumer must not add its own wait
    )
    await consumer.start()
    consumer.assign([TopicPartition(VALID, p) for p in range(partitions)])
    await consumer.seek_to_end()
    out: list[float] = []
    deadline = time.monotonic() + 120
    try:
        while len(out) < expected and time.monotonic() < deadline:
            got = await consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for records in got.values():
                for record in records:
                    origin = tuple(orjson.loads(record.value)["origin"])
                    at = sent.pop(origin, None)
                    if at is not None:
                        out.append(now - at)
    finally:
        await consumer.stop()
    return out


if __name__ == "__main__":
    asyncio.run(main())
