"""Memory of the detection state of many series in one worker (issue goal: 100k series <= 1 GB).

    .venv/bin/python bench/bench_memory.py [--series 1000] [--windows 2880]

Feeds a `DetectionEngine` (the detect agent's state: one model set per modelled series) volume
records of `--series` distinct fine series (`--series / 4` events x 4 sources) for `--windows`
one-minute windows; the engine models them at its levels (event; event x source x platform; the
event's violation share), so it holds about 1.5 modelled series per fine one. Reports the
process's resident memory before and after (Linux /proc), the growth per modelled series, the
figure scaled to 100,000 modelled series, and the size of the engine's snapshot (`to_state` as
JSON). The baseline in the same run is the resident memory with the records' labels built and
the engine's model classes loaded. The engine's `max_series` (20,000 by default: it forgets the
least recently active series beyond that) is raised so that it keeps every series. Nothing
asserted.

Measure learnt state, not a fresh one: a model's buffers fill over its first hour and its
seasonal profile over its first day (a fresh profile's slots share one constant; learnt, each
slot holds its own number), so the default runs two days of windows. Six windows of 13,334
series once gave 20 kB per series where two days of the same engine gave 71 kB.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from pathlib import Path

import orjson
from rich.progress import track

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors.engine import DetectionEngine  # noqa: E402
from detectors.engine_config import EngineConfig  # noqa: E402
from detectors.records import WindowRecord  # noqa: E402

T0 = 1_795_000_020.0 - 1_795_000_020.0 % 60


def rss_mb() -> float:
    """Resident memory of this process in MB (Linux; nan elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def series_labels(count: int) -> list[dict[str, str]]:
    sources = ("web", "ios", "android", "server")
    return [
        {
            "event": f"Event {i // 4}",
            "source": sources[i % 4],
            "platform": sources[i % 4],
            "app_version": "1.0",
        }
        for i in range(count)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--windows", type=int, default=2880, help="one-minute windows (2880: two days)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    labels = series_labels(args.series)
    # `max_series` raised above what the records make: every series is kept (the default keeps
    # the 20,000 most recently active)
    engine = DetectionEngine(config=EngineConfig(max_series=2 * args.series + 10))
    # (its model classes are loaded before the baseline)
    engine.process([WindowRecord({"event": "warm-up"}, T0 - 120, T0 - 60, count=1)])
    gc.collect()
    base = rss_mb()
    started = time.process_time()
    for w in track(range(args.windows), description="windows", transient=True):
        start = T0 + 60 * w
        records = [
            WindowRecord(series, start, start + 60, count=rng.randint(1, 30), distinct_users=1)
            for series in labels
        ]
        engine.process(records, until=start + 60)
    cpu = time.process_time() - started
    gc.collect()
    after = rss_mb()
    state = orjson.dumps(engine.to_state(), option=orjson.OPT_NON_STR_KEYS)
    grown = after - base
    modelled = len(engine.series)
    print(
        f"{args.series:,} fine series x {args.windows} windows in {cpu:.1f} s CPU; "
        f"{modelled:,} series modelled by the engine"
    )
    print(f"resident memory: {base:,.0f} MB before (baseline), {after:,.0f} MB after")
    print(
        f"engine state: {grown:,.0f} MB ({1e3 * grown / max(1, modelled):.2f} kB per modelled "
        f"series); snapshot JSON {len(state) / 1e6:,.1f} MB"
    )
    scaled = grown * 100_000 / max(1, modelled)
    verdict = "met" if scaled <= 1024 else "NOT met"
    print(f"at 100,000 series: {scaled:,.0f} MB (goal <= 1 GB: {verdict})")


if __name__ == "__main__":
    main()
