"""NAB's scoring rule, written from its published description (paper and README), vectorised.

- The first 15 % of each file (at most 750 rows) is probationary: nothing there counts.
- A labelled window rewards its FIRST detection (later ones in it are free) by
  A_TP · σ(position) / σ(-1), position running from -1 at the window's first row towards 0 at its
  last, so a detection on the window's first row earns exactly A_TP; a window with no detection
  costs A_FN.
- A detection outside every window costs A_FP · σ(rows since the end of the previous window, in
  units of that window's width) — less right after a window, the full A_FP when no window
  precedes it. Every detected row is charged.
- σ(x) = 2 / (1 + e^{5x}) - 1, and -1 beyond x = 3.
- Totals are normalised over the corpus: 100 · (raw - null) / (perfect - null), the null detector
  never detecting, the perfect one detecting each window's first row.
- ONE threshold per profile for the whole corpus, the one that maximises the total.

A row is a detection when its score is ≥ the threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PROFILES: dict[str, dict[str, float]] = {
    "standard": {"tp": 1.0, "fp": 0.11, "fn": 1.0},
    "reward_low_FP": {"tp": 1.0, "fp": 0.22, "fn": 1.0},
    "reward_low_FN": {"tp": 1.0, "fp": 0.11, "fn": 2.0},
}
STANDARD = PROFILES["standard"]
PROBATION = 0.15


def sigmoid(x: float) -> float:
    """NAB's scaled sigmoid: +0.987 at -1 (early in a window), 0 at 0, towards -1 far after."""
    if x > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


MAX_TP = sigmoid(-1.0)


@dataclass
class LabelledFile:
    """Anomaly scores of one file with its labelled windows (row index ranges, inclusive)."""

    name: str
    scores: np.ndarray
    windows: list[tuple[int, int]]

    @property
    def probation(self) -> int:
        return probation_rows(len(self.scores))

    @property
    def category(self) -> str:
        return self.name.split("/", 1)[0] if "/" in self.name else ""


def probation_rows(n: int) -> int:
    return int(min(math.floor(PROBATION * n), PROBATION * 5000))


@dataclass
class Prepared:
    """What a file's NAB score depends on, for any threshold.

    `fp_scores`/`fp_cost`: score and (negative) cost of every scoreable row outside windows;
    `windows`: per window, the running maximum of its scoreable rows' scores and each row's reward
    (a window's first detection is its first row whose running maximum reaches the threshold).
    """

    fp_scores: np.ndarray
    fp_cost: np.ndarray
    windows: list[tuple[np.ndarray, np.ndarray]]


def prepare(f: LabelledFile, weights: dict[str, float]) -> Prepared:
    n = len(f.scores)
    start = f.probation
    in_window = np.zeros(n, dtype=bool)
    fp_cost = np.full(n, -weights["fp"])
    for lo, hi in f.windows:
        in_window[lo : hi + 1] = True
    for k, (lo, hi) in enumerate(f.windows):
        width = hi - lo + 1
        stop = f.windows[k + 1][0] if k + 1 < len(f.windows) else n
        rows = np.arange(hi + 1, stop)
        if rows.size:
            x = (rows - hi) / max(width - 1, 1)
            cost = np.where(x > 3.0, -1.0, 2.0 / (1.0 + np.exp(np.minimum(5.0 * x, 50.0))) - 1.0)
            fp_cost[rows] = weights["fp"] * cost
    outside = ~in_window
    outside[:start] = False
    windows = []
    for lo, hi in f.windows:
        width = hi - lo + 1
        rows = np.arange(max(lo, start), hi + 1)
        position = -(hi - rows + 1) / width
        reward = weights["tp"] * (2.0 / (1.0 + np.exp(5.0 * position)) - 1.0) / MAX_TP
        windows.append((np.maximum.accumulate(f.scores[rows]), reward))
    return Prepared(f.scores[outside], fp_cost[outside], windows)


def bounds(files: list[LabelledFile], weights: dict[str, float]) -> tuple[float, float]:
    """(null, perfect) raw totals of `files` under `weights`."""
    n_windows = sum(len(f.windows) for f in files)
    return -weights["fn"] * n_windows, weights["tp"] * n_windows


def raw_totals(
    prepared: list[Prepared], thresholds: np.ndarray, weights: dict[str, float]
) -> np.ndarray:
    """Raw NAB total of `prepared` files at each threshold (vectorised over thresholds)."""
    total = np.zeros(len(thresholds))
    fp_scores = np.concatenate([p.fp_scores for p in prepared] or [np.zeros(0)])
    fp_cost = np.concatenate([p.fp_cost for p in prepared] or [np.zeros(0)])
    order = np.argsort(fp_scores)
    sorted_scores = fp_scores[order]
    tail_cost = np.concatenate([np.cumsum(fp_cost[order][::-1])[::-1], [0.0]])
    total += tail_cost[np.searchsorted(sorted_scores, thresholds, side="left")]
    for p in prepared:
        for running_max, reward in p.windows:
            first = np.searchsorted(running_max, thresholds, side="left")
            padded = np.concatenate([reward, [-weights["fn"]]])
            total += padded[first]
    return total


def normalised(raw: float | np.ndarray, null: float, perfect: float) -> float | np.ndarray:
    if perfect == null:
        return raw * 0.0
    return 100.0 * (raw - null) / (perfect - null)


def candidate_thresholds(files: list[LabelledFile]) -> np.ndarray:
    """Every distinct score (a threshold between two of them changes nothing), plus 'never'."""
    scores = np.unique(np.concatenate([f.scores[f.probation :] for f in files]))
    return np.concatenate([scores, [np.inf]])


def best_threshold(
    files: list[LabelledFile], weights: dict[str, float] = STANDARD
) -> tuple[float, float]:
    """(threshold, raw total) maximising the corpus total; the highest such threshold on ties."""
    if not files:
        return math.inf, 0.0
    prepared = [prepare(f, weights) for f in files]
    thresholds = candidate_thresholds(files)
    totals = raw_totals(prepared, thresholds, weights)
    best = np.flatnonzero(totals >= totals.max() - 1e-9)[-1]
    return float(thresholds[best]), float(totals[best])


def score_at(files: list[LabelledFile], threshold: float, weights: dict[str, float]) -> dict:
    """Normalised score and counts of `files` at a given threshold."""
    prepared = [prepare(f, weights) for f in files]
    raw = float(raw_totals(prepared, np.array([threshold]), weights)[0])
    null, perfect = bounds(files, weights)
    found = sum(int(rm.size > 0 and rm[-1] >= threshold) for p in prepared for rm, _ in p.windows)
    false_rows = sum(int((p.fp_scores >= threshold).sum()) for p in prepared)
    return {
        "score": float(normalised(raw, null, perfect)),
        "raw": raw,
        "null": null,
        "perfect": perfect,
        "threshold": threshold,
        "files": len(files),
        "windows": sum(len(f.windows) for f in files),
        "found": found,
        "false_rows": false_rows,
    }


def evaluate(files: list[LabelledFile], weights: dict[str, float] = STANDARD) -> dict:
    """Normalised NAB score with the best single threshold for all `files`."""
    threshold, _ = best_threshold(files, weights)
    return score_at(files, threshold, weights)


def leave_one_category_out(files: list[LabelledFile], weights: dict[str, float]) -> dict | None:
    """Each category scored at the threshold fitted on the others; pooled like one corpus.

    The honest estimate of the score on categories never seen: no threshold saw its data.
    None with fewer than two categories.
    """
    categories = sorted({f.category for f in files})
    if len(categories) < 2:
        return None
    raw = 0.0
    per_category = {}
    for held in categories:
        train = [f for f in files if f.category != held]
        test = [f for f in files if f.category == held]
        threshold, _ = best_threshold(train, weights)
        result = score_at(test, threshold, weights)
        per_category[held] = result
        raw += result["raw"]
    null, perfect = bounds(files, weights)
    return {"score": float(normalised(raw, null, perfect)), "categories": per_category}
