"""Throughput of the traffic simulator, next to baselines in the same run.

    python bench/bench_simulate.py --hours 6 --users-per-day 20000

Streams `--hours` of traffic (no incidents) and reports envelopes/s by CPU time and wall
time (best of `--repeat` runs), then two baselines on the same envelopes: serialising each
envelope with orjson (what writing the data set costs anyway) and validating each body with the
compiled plan validator (the first stage of the pipeline). Ratios show whether the generator
keeps ahead of what consumes it. No thresholds: numbers to read.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.simulator.traffic import simulate  # noqa: E402
from tracking_plan.loader import load_plan  # noqa: E402
from tracking_plan.validator import compile_plan  # noqa: E402


def best_rate(count: int, work: object, repeat: int) -> tuple[float, float]:
    """Best (cpu, wall) items/s over `repeat` runs (the machine may be shared)."""
    cpu_best = wall_best = 0.0
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        work()  # type: ignore[operator]
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        cpu_best, wall_best = max(cpu_best, count / cpu), max(wall_best, count / wall)
    return cpu_best, wall_best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--users-per-day", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--plan", default=str(ROOT / "examples" / "ecommerce.yaml"))
    args = parser.parse_args()
    plan = load_plan(args.plan)
    start = datetime(2026, 11, 2, 6, tzinfo=UTC)

    def stream() -> Iterator[dict[str, Any]]:
        return simulate(plan, start, args.hours / 24, args.users_per_day, 7)

    envelopes = list(stream())
    count = len(envelopes)
    print(f"{count:,} envelopes for {args.hours:g} h of {args.users_per_day:,} users/day")
    dumps = orjson.dumps
    validator = compile_plan(plan)
    rows = {
        "simulate (streamed)": lambda: sum(1 for _ in stream()),
        "baseline: orjson.dumps": lambda: [dumps(e) for e in envelopes],
        "baseline: validate": lambda: [
            validator.validate(e["body"], e["source"], None) for e in envelopes
        ],
    }
    rates = {}
    for label, work in rows.items():
        cpu, wall = best_rate(count, work, args.repeat)
        rates[label] = cpu
        print(f"{label:<24} {cpu:>12,.0f}/s cpu {wall:>12,.0f}/s wall (best of {args.repeat})")
    rate = rates["simulate (streamed)"]
    print(f"ratio simulate / orjson.dumps: {rate / rates['baseline: orjson.dumps']:.3f}")
    print(f"ratio simulate / validate:     {rate / rates['baseline: validate']:.3f}")
    total = 14 * 24 / args.hours * count
    print(
        f"projected 14 days x {args.users_per_day:,} users/day: {total:,.0f} envelopes, "
        f"{total / rate:,.0f} s cpu"
    )


if __name__ == "__main__":
    main()
