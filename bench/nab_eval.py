"""Judge `trackwatch detect` on the Numenta Anomaly Benchmark (NAB), against a z-score baseline.

    .venv/bin/python bench/nab_eval.py                                  # ../shared/nab, fit
    .venv/bin/python bench/nab_eval.py --save-thresholds thr.json       # ... and freeze them
    .venv/bin/python bench/nab_eval.py --nab OTHER --thresholds thr.json   # score with frozen ones

The data folder has NAB's layout: `data/<category>/<name>.csv` (timestamp,value) and
`labels/combined_windows.json`; files listed in the labels but absent are skipped. By default it
is `../shared/nab` next to the repository: NAB's public part (5 categories, 42 files, 69 windows).

Every file is scored by the trackwatch scorer (`detectors.univariate.score_series`) and by a causal
z-score on river statistics, measured in the same run: |x - mean| / sd over the previous
`--z-window` rows (`river.utils.Rolling` of `stats.Mean` and `stats.Var`). Scoring follows NAB's
published rule (`bench/nab_scoring.py`) with its three profiles, ONE threshold per profile for the
whole corpus. Without `--thresholds` the best threshold is fitted on the data scored (printed, and
written by `--save-thresholds`), and a leave-one-category-out figure is printed too: each category
scored at thresholds fitted on the others, the honest estimate for categories never seen. With
`--thresholds` nothing is fitted: the frozen thresholds are applied as they are.

Also printed: the per-category table, rows/s of each scorer alone (one process), and a causal
check (a prefix of each of a few files re-scored on its own gives the same scores).
Published whole-corpus standard scores (NAB's 58 files) for reference: ARTime 74.9, HTM ~70,
CAD OSE 69.9, Random Cut Forest 51.7, Windowed Gaussian 39.6, null 0.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from river import stats, utils

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: nab_scoring beside it
from nab_scoring import (
    PROFILES,
    LabelledFile,
    best_threshold,
    leave_one_category_out,
    score_at,
)

from detectors.univariate import score_series

DEFAULT_NAB = Path(__file__).resolve().parents[1].parent / "shared" / "nab"
TRACKWATCH, ZSCORE = "trackwatch detect", "z-score (river)"
console = Console(width=120)


@dataclass
class Series:
    name: str  # category/file.csv
    times: list[float]
    values: list[float]
    windows: list[tuple[int, int]]  # inclusive row ranges


def _epoch(text: str) -> float:
    """NAB timestamps are naive; read them as UTC (no local daylight saving in between)."""
    return datetime.fromisoformat(text.strip()).replace(tzinfo=UTC).timestamp()


def load(root: Path, categories: Sequence[str] = (), limit: int | None = None) -> list[Series]:
    labels_path = root / "labels" / "combined_windows.json"
    if not labels_path.is_file():
        sys.exit(f"error: {labels_path} not found: --nab must be a folder laid out like NAB")
    labels = json.loads(labels_path.read_text(encoding="utf-8"))
    chosen = [n for n in sorted(labels) if not categories or n.split("/", 1)[0] in categories]
    series, missing = [], []
    for name in chosen[:limit]:
        path = root / "data" / name
        if not path.is_file():
            missing.append(name)
            continue
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        times = [_epoch(r["timestamp"]) for r in rows]
        windows = []
        for start, end in labels[name]:
            t0, t1 = _epoch(start), _epoch(end)
            lo = next((i for i, t in enumerate(times) if t >= t0), None)
            if lo is None:
                continue
            hi = lo
            while hi + 1 < len(times) and times[hi + 1] <= t1:
                hi += 1
            windows.append((lo, hi))
        series.append(Series(name, times, [float(r["value"]) for r in rows], windows))
    if missing:
        console.print(f"[dim]{len(missing)} labelled file(s) absent from {root}/data, skipped[/]")
    if not series:
        sys.exit(f"error: no labelled data file found under {root}/data")
    return series


def zscore_series(values: Sequence[float], window: int) -> list[float]:
    """Causal z-score: |x - mean| / sd of the previous `window` values, mapped to z / (1 + z)."""
    mean = utils.Rolling(stats.Mean, window_size=window)
    var = utils.Rolling(stats.Var, window_size=window, ddof=1)
    out = []
    for x in values:
        score = 0.0
        if var.n >= 30:
            sd = math.sqrt(max(var.get(), 0.0))
            if sd > 0.0:
                z = abs(x - mean.get()) / sd
                score = z / (1.0 + z)
        out.append(score)
        mean.update(x)
        var.update(x)
    return out


def run(
    series: list[Series], scorer: Callable[[Series], list[float]]
) -> tuple[list[LabelledFile], float]:
    """Score every series; return the labelled scores and rows/s of the scorer alone."""
    files, seconds = [], 0.0
    for s in series:
        start = time.perf_counter()
        scores = scorer(s)
        seconds += time.perf_counter() - start
        files.append(LabelledFile(s.name, np.asarray(scores, dtype=float), s.windows))
    rows = sum(len(s.values) for s in series)
    return files, rows / seconds if seconds else math.inf


def causal_check(series: list[Series], files: list[LabelledFile], count: int = 3) -> str:
    """Re-score 60 % prefixes of a few files on their own: the scores must equal the full run's."""
    picked = sorted(series, key=lambda s: len(s.values))[:: max(1, len(series) // count)][:count]
    by_name = {f.name: f.scores for f in files}
    for s in picked:
        cut = int(0.6 * len(s.values))
        prefix = np.asarray(score_series(s.times[:cut], s.values[:cut]))
        if not np.array_equal(prefix, by_name[s.name][:cut]):
            return f"FAILED on {s.name}"
    return f"passed ({len(picked)} files, 60 % prefixes)"


def fit(files: list[LabelledFile]) -> dict[str, float]:
    return {name: best_threshold(files, weights)[0] for name, weights in PROFILES.items()}


def _fmt(score: float, windows: int) -> str:
    return f"{score:.1f}" if windows else "—"


def report(
    detectors: dict[str, list[LabelledFile]], thresholds: dict[str, dict[str, float]], fitted: bool
) -> None:
    totals = Table(
        title="NAB score, one threshold per profile for the whole corpus"
        + ("" if fitted else " (frozen thresholds)")
    )
    totals.add_column("detector")
    for name in PROFILES:
        totals.add_column(name, justify="right")
    if fitted:
        totals.add_column("leave-one-category-out (standard / low FP / low FN)", justify="right")
    for det, files in detectors.items():
        cells = [
            f"{score_at(files, thresholds[det][p], w)['score']:.1f}" for p, w in PROFILES.items()
        ]
        if fitted:
            loco = [leave_one_category_out(files, w) for w in PROFILES.values()]
            cells.append(" / ".join("n/a" if x is None else f"{x['score']:.1f}" for x in loco))
        totals.add_row(det, *cells)
    console.print(totals)

    for det, files in detectors.items():
        table = Table(title=f"{det}: per category (at the thresholds above)")
        for column in ("category", "files", "windows found", "false rows (std)", *PROFILES):
            table.add_column(column, justify="left" if column == "category" else "right")
        for category in sorted({f.category for f in files}):
            part = [f for f in files if f.category == category]
            results = {p: score_at(part, thresholds[det][p], w) for p, w in PROFILES.items()}
            std = results["standard"]
            table.add_row(
                category,
                str(len(part)),
                f"{std['found']}/{std['windows']}",
                str(std["false_rows"]),
                *(_fmt(r["score"], r["windows"]) for r in results.values()),
            )
        console.print(table)
    for det in detectors:
        shown = ", ".join(f"{p} {t:.6f}" for p, t in thresholds[det].items())
        console.print(f"thresholds ({det}): {shown}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nab", type=Path, default=DEFAULT_NAB, help="data folder laid out like NAB")
    ap.add_argument("--category", action="append", default=[], help="only these (repeatable)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N files (quick look)")
    ap.add_argument("--thresholds", type=Path, help="score with these frozen thresholds (JSON)")
    ap.add_argument("--save-thresholds", type=Path, help="write the fitted thresholds here")
    ap.add_argument("--z-window", type=int, default=1000, help="z-score baseline window (rows)")
    ap.add_argument("--out", type=Path, help="also save per-file trackwatch scores here")
    args = ap.parse_args()
    if args.thresholds and args.save_thresholds:
        sys.exit("error: --thresholds applies frozen thresholds; --save-thresholds fits new ones")

    series = load(args.nab, args.category, args.limit)
    rows = sum(len(s.values) for s in series)
    console.print(
        f"{len(series)} files, {rows:,} rows, "
        f"{sum(len(s.windows) for s in series)} windows from {args.nab}"
    )
    ours, ours_rate = run(series, lambda s: score_series(s.times, s.values))
    theirs, theirs_rate = run(series, lambda s: zscore_series(s.values, args.z_window))
    detectors = {TRACKWATCH: ours, ZSCORE: theirs}
    if args.out:
        for f in ours:
            target = args.out / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            np.savetxt(target, f.scores, fmt="%.6f")

    if args.thresholds:
        try:
            frozen = json.loads(args.thresholds.read_text(encoding="utf-8"))["thresholds"]
            thresholds = {d: {p: float(frozen[d][p]) for p in PROFILES} for d in detectors}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            sys.exit(
                f"error: {args.thresholds}: not a thresholds file from --save-thresholds ({exc!r})"
            )
    else:
        thresholds = {det: fit(files) for det, files in detectors.items()}
    report(detectors, thresholds, fitted=not args.thresholds)
    console.print(
        f"rows/s, scorer alone, one process: trackwatch {ours_rate:,.0f}, "
        f"z-score baseline {theirs_rate:,.0f}"
    )
    console.print(f"causal check: {causal_check(series, ours)}")
    if args.save_thresholds:
        payload = {
            "thresholds": thresholds,
            "fitted_on": sorted({f.category for f in ours}),
            "files": len(ours),
            "rule": "NAB profiles, one threshold per profile for the whole corpus; a row is a "
            "detection when its score is >= the threshold",
        }
        args.save_thresholds.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        console.print(f"thresholds written to {args.save_thresholds}")


if __name__ == "__main__":
    main()
