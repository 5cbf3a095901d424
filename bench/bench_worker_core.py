"""CPU cost per event of the worker's pure work (no Kafka, no Faust), stage by stage, next to a
decode + validate baseline in the same run.

    .venv/bin/python bench/bench_worker_core.py [--events 100000] [--batch 500] [--repeat 5]

The envelopes and micro-batches are those of bench/bench_pipeline.py (`make_envelopes`, grouped
by partition key). Each run feeds every message to fresh per-partition state the way
`Pipeline._process_one` does: `BatchProcessor.process` (decode, envelope check, dedupe,
validate, tally), `encode_outputs` (events.valid / events.quarantine values), the window
aggregator (`add_tallies`), closing windows and encoding the flush, and the Prometheus counters
(`_export_validate_metrics`). The baseline is what bench_pipeline's baseline loop does per
message: `decode_batch`, then `validate` each envelope. Decode, dedupe, validate (of the
envelopes the dedupe lets through) and the business keys (their key store lookups) are also
timed alone, which splits `process`. The worker also runs without business keys
(`BatchProcessor(business_keys=False)`: what it did before them), alternating with the full
runs: the difference is their whole cost; likewise without the companion pairs the window
aggregator learns (`WindowAggregator(companion_minutes=0)`); likewise with the validator on
its pure-Python path alone (`compile_plan(plan, fast=False)`: no compiled fast path). Reports
CPU µs/event and events/s (median of `--repeat` runs, under the worker's garbage-collector
settings), the ratio worker / baseline, and the cost of serialising one partition's state (a
snapshot). No thresholds, nothing asserted: numbers to read.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_pipeline import batches  # noqa: E402
from streams.cli.worker import WORKER_GC  # noqa: E402
from streams.envelope import decode_batch, message_id, received_at_epoch  # noqa: E402
from streams.merge import record_dict  # noqa: E402
from streams.pipeline import BatchOutput, BatchProcessor, encode_outputs  # noqa: E402
from streams.windows import WindowAggregator  # noqa: E402
from streams.worker import WorkerConfig, _export_validate_metrics  # noqa: E402
from tests.streaming_support import make_envelopes  # noqa: E402
from tests.worker_process import PLAN  # noqa: E402
from tracking_plan.dedupe import Deduper  # noqa: E402
from tracking_plan.loader import load_plan  # noqa: E402
from tracking_plan.model import Plan  # noqa: E402
from tracking_plan.validator import Validator, compile_plan  # noqa: E402

Messages = list[tuple[int, bytes, int]]
STAGES = ("process", "encode outputs", "windows", "close + flush", "metrics")
PARTS = ("decode alone", "dedupe alone", "validate alone", "business keys alone")
clock = time.process_time  # CPU time: steadier than wall time on a shared machine


class WorkerState:
    """The per-partition state of the process agent, fresh (as after a start without snapshot)."""

    def __init__(
        self, plan: Plan, validator: Validator, keys: bool = True, companions: bool = True
    ) -> None:
        self.plan, self.validator, self.config = plan, validator, WorkerConfig()
        self.keys = keys  # check business keys
        self.companions = companions  # learn companion pairs
        self.procs: dict[int, BatchProcessor] = {}
        self.aggs: dict[int, WindowAggregator] = {}

    def partition(self, p: int) -> tuple[BatchProcessor, WindowAggregator]:
        if p not in self.procs:
            c = self.config
            deduper = Deduper(c.dedupe_max_age, c.dedupe_max_entries)
            self.procs[p] = BatchProcessor(
                self.plan, deduper, c.dimensions, self.validator, business_keys=self.keys
            )
            self.aggs[p] = WindowAggregator(
                c.window_seconds, c.allowed_lateness_seconds, c.dimensions, self.plan.funnels,
                self.plan, companion_minutes=c.companion_minutes if self.companions else 0,
            )  # fmt: skip
        return self.procs[p], self.aggs[p]


def run_worker(
    messages: Messages,
    plan: Plan,
    validator: Validator,
    keys: bool = True,
    companions: bool = True,
) -> dict[str, float]:
    """CPU seconds per stage of one pass over `messages` (what `Pipeline._process_one` does);
    `keys=False`: without business keys; `companions=False`: without companion pairs."""
    worker = WorkerState(plan, validator, keys, companions)
    spent = dict.fromkeys(STAGES, 0.0)
    for offset, (p, value, _n) in enumerate(messages):
        proc, agg = worker.partition(p)
        t0 = clock()
        out = proc.process(value)
        t1 = clock()
        encode_outputs(out, [p, offset], proc.plan_version)
        t2 = clock()
        agg.add_tallies(out.tallies, proc.paths)
        t3 = clock()
        records = agg.advance()
        flush = {"partition": str(p), "flush": offset, "records": [record_dict(r) for r in records]}
        orjson.dumps(flush)
        t4 = clock()
        _export_validate_metrics(out)
        t5 = clock()
        for stage, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            spent[stage] += dt
    spent["snapshot"] = snapshot_seconds(worker)
    return spent


def snapshot_seconds(worker: WorkerState, times: int = 5) -> float:
    """CPU seconds to serialise one partition's state (what a checkpoint writes): the median
    over the partitions, each serialised `times` times."""
    spent = []
    for p, proc in worker.procs.items():
        for _ in range(times):
            t0 = clock()
            state = {
                "dedupe": proc.deduper.to_state(),
                "keys": proc.keys_state(),
                "agg": worker.aggs[p].to_state(),
            }
            orjson.dumps(state).decode()
            spent.append(clock() - t0)
    return statistics.median(spent)


def run_baseline(messages: Messages, validator: Validator) -> float:
    """CPU seconds of bench_pipeline's baseline loop: decode + validate every envelope."""
    t0 = clock()
    for _p, value, _n in messages:
        for env in decode_batch(value):
            validator.validate(env["body"], env["source"], time.time())
    return clock() - t0


def run_parts(messages: Messages, plan: Plan, validator: Validator) -> dict[str, float]:
    """CPU seconds of decode, dedupe, validate and the business keys (the key stores' lookups
    for the validated events, `BatchProcessor._repeated`), each alone (they split `process`)."""
    spent = dict.fromkeys(PARTS, 0.0)
    dedupers: dict[int, Deduper] = {}
    procs: dict[int, BatchProcessor] = {}
    for p, value, _n in messages:
        t0 = clock()
        envelopes = orjson.loads(value)
        t1 = clock()
        seen = dedupers.setdefault(p, Deduper(24 * 3600.0, 100_000)).seen
        new = []
        for e in envelopes:
            received_at = received_at_epoch(e["received_at"])
            if not seen(message_id(e), received_at):
                new.append((e, received_at))
        t2 = clock()
        results = [validator.validate(e["body"], e["source"], at) for e, at in new]
        t3 = clock()
        proc = procs.get(p) or procs.setdefault(p, BatchProcessor(plan, validator=validator))
        out = BatchOutput()
        for (e, at), result in zip(new, results, strict=True):
            if result.planned:
                proc._repeated(result, e["body"], e["source"], at, out)
        t4 = clock()
        for part, dt in zip(PARTS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            spent[part] += dt
    return spent


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def line(label: str, seconds: float, events: int, note: str = "") -> str:
    micros = 1e6 * seconds / events
    rate = events / seconds if seconds > 0 else float("inf")
    return f"  {label:<28} {micros:>7.2f} µs/event {rate:>12,.0f} events/s{note}"


def repeat(times: int, work: Callable[[], object]) -> list:
    return [work() for _ in range(times)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    plan = load_plan(PLAN)
    validator = compile_plan(plan)
    envelopes = make_envelopes(args.events, seed=1, seconds=3600.0, users=5000)
    messages = batches(envelopes, args.partitions, args.batch)
    n = len(envelopes)
    print(f"{n:,} envelopes in {len(messages):,} messages of up to {args.batch}, "
          f"{args.partitions} partitions; CPU time, median of {args.repeat} runs")  # fmt: skip
    run_worker(messages, plan, validator)  # warm-up: caches, first-use imports
    gc.collect()
    gc.freeze()
    gc.set_threshold(*WORKER_GC)  # the worker's garbage-collector settings

    base = statistics.median(repeat(args.repeat, lambda: run_baseline(messages, validator)))
    pure = compile_plan(plan, fast=False)
    variants = {
        "full": (True, True, validator),
        "no keys": (False, True, validator),
        "no companions": (True, False, validator),
        "pure validator": (True, True, pure),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for _ in range(args.repeat):  # alternating, so that all see the same machine load
        for name, (keys, companions, checker) in variants.items():
            runs[name].append(run_worker(messages, plan, checker, keys, companions))
    worker, without = median_of(runs["full"]), median_of(runs["no keys"])
    alone = median_of(runs["no companions"])
    parts = median_of(repeat(args.repeat, lambda: run_parts(messages, plan, validator)))

    total = sum(worker[stage] for stage in STAGES)
    print("worker, per stage:")
    for stage in STAGES:
        print(line(stage, worker[stage], n, f"  {100 * worker[stage] / total:>4.0f} %"))
    print(line("total", total, n))
    print("process, split (each timed alone):")
    for part in PARTS:
        print(line(part, parts[part], n))
    rest = worker["process"] - sum(parts.values())
    print(line("envelope, routing, tally", rest, n, "  (process minus the four)"))
    print("business keys (same run, alternating):")
    plain = sum(without[stage] for stage in STAGES)
    print(line("worker without them", plain, n))
    print(line("process without them", without["process"], n))
    print(line("their cost (process)", worker["process"] - without["process"], n))
    print(line("their cost (total)", total - plain, n, f"  {100 * (total / plain - 1):+.1f} %"))
    print("companion pairs (same run, alternating):")
    plain = sum(alone[stage] for stage in STAGES)
    print(line("worker without them", plain, n))
    aggregate = ("windows", "close + flush")
    cost = sum(worker[stage] - alone[stage] for stage in aggregate)
    print(line("their cost (windows, close)", cost, n))
    print(line("their cost (total)", total - plain, n, f"  {100 * (total / plain - 1):+.1f} %"))
    print(f"validator (same run, alternating; compiled fast path: {validator.compiled}):")
    slow = median_of(runs["pure validator"])
    plain = sum(slow[stage] for stage in STAGES)
    print(line("worker, pure-Python validator", plain, n))
    print(line("process, pure-Python validator", slow["process"], n))
    print(line("saved by the fast path", plain - total, n, f"  {100 * (1 - total / plain):.1f} %"))
    print("baseline:")
    print(line("decode + validate", base, n))
    print(f"ratio worker / baseline (events/s): {base / total:.2f}")
    print(f"snapshot of one partition's state (to_state + JSON): {1e3 * worker['snapshot']:.1f} ms")


if __name__ == "__main__":
    main()
