"""Generic anomaly scorer for any univariate series (not only counts), causal and comparable.

Each value is standardised against the recent past only: robust z = (x - median) / (IQR / 1.349)
over the last `window` values (bounded memory; kept sorted, so an update costs O(log window)).
Two views are scored: the value itself (spikes) and the mean of the last `short` values (level
shifts). Each view's |z| is calibrated on its own recent history (rescaled so that its 99th
percentile maps to the normal's: heavy tails, light tails and autocorrelation alike), its
two-sided normal p-value is taken, and the smaller one, doubled, becomes the score through
`detectors.intervals.score_from_pvalue` (p = 1e-3 → 0.5, p ≤ 1e-6 → 1). The same rarity gets the
same score on any series, whatever its unit or noise. A score never depends on later rows. There
is no seasonal model: a change smaller than the daily swing of a seasonal series is missed.

`detect_csv(in, out)` backs `trackwatch detect`: columns timestamp,value → + anomaly_score.
"""

from __future__ import annotations

import bisect
import csv
import math
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from scipy import special

from detectors.intervals import score_from_pvalue
from detectors.records import epoch_seconds

_Z99 = 2.5758293035489004  # two-sided 99 % normal quantile


class _SortedWindow:
    """The last `size` values, also kept sorted (bisect), for O(log n) quantiles."""

    __slots__ = ("order", "size", "sorted")

    def __init__(self, size: int) -> None:
        self.size = size
        self.order: deque[float] = deque()
        self.sorted: list[float] = []

    def __len__(self) -> int:
        return len(self.order)

    def add(self, value: float) -> None:
        if len(self.order) == self.size:
            old = self.order.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, old)]
        self.order.append(value)
        bisect.insort(self.sorted, value)

    def quantile(self, q: float) -> float:
        """Linear-interpolated quantile (as numpy's default)."""
        xs = self.sorted
        pos = q * (len(xs) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


class UnivariateScorer:
    """Streaming scorer: `update(ts, value)` returns the score of `value` in [0, 1].

    Two views of the same standardisation: the value itself (spikes) and the mean of the last
    `short` values (level shifts, which single points show too weakly). Each is calibrated on its
    own recent history; the smaller p-value, doubled (Bonferroni), gives the score.
    """

    def __init__(self, window: int = 400, min_history: int = 30, short: int = 5) -> None:
        if window < 10 or min_history < 5 or min_history > window or not 1 < short < min_history:
            raise ValueError("need window ≥ 10, 5 ≤ min_history ≤ window, 1 < short < min_history")
        self.window = window
        self.min_history = min_history
        self.short = short
        self.values = _SortedWindow(window)
        self.recent: deque[float] = deque(maxlen=short)
        self.zs = _SortedWindow(window)
        self.zs_short = _SortedWindow(window)

    def update(self, ts: float, value: float) -> float:
        """Score `value` against the past, then remember it. `ts` only documents the order."""
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"value must be a finite number, got {value!r}")
        score = 0.0
        past = self.values
        self.recent.append(value)
        if len(past) >= self.min_history:
            med = past.quantile(0.5)
            scale = (past.quantile(0.75) - past.quantile(0.25)) / 1.349  # IQR → sd if normal
            if scale <= 0.0:  # mostly ties (e.g. a count that is usually 0)
                scale = sum(abs(x - med) for x in past.order) / len(past)
            if scale <= 0.0:
                scale = 1e-9 * max(abs(med), 1.0)
            z = abs(value - med) / scale
            z_short = abs(sum(self.recent) / len(self.recent) - med) / scale
            p = min(_calibrated_p(self.zs, z, self.min_history), 1.0)
            p_short = _calibrated_p(self.zs_short, z_short, self.min_history)
            score = score_from_pvalue(min(1.0, 2.0 * min(p, p_short)))
        past.add(value)
        return score


def _calibrated_p(history: _SortedWindow, z: float, min_history: int) -> float:
    """Two-sided normal p-value of `z` after rescaling so that the 99th percentile of the recent
    z's maps to the normal's (heavy tails and autocorrelation); then remember `z`."""
    calib = 1.0
    if len(history) >= min_history:
        q99 = history.quantile(0.99)
        if q99 > 0.0:
            calib = _Z99 / q99
    history.add(z)
    return float(special.erfc(z * calib / math.sqrt(2.0)))


def score_series(
    timestamps: Iterable[float], values: Iterable[float], window: int = 400
) -> list[float]:
    """Scores of a whole series, each computed from the rows before it only."""
    scorer = UnivariateScorer(window=window)
    return [scorer.update(t, v) for t, v in zip(timestamps, values, strict=True)]


class DetectInputError(ValueError):
    """A CSV given to `detect_csv` is unusable; the message names the file, line and problem."""


def _read_rows(in_path: Path, handle) -> tuple[list[dict], list[float], list[float]]:
    with handle:
        reader = csv.DictReader(handle)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        missing = [c for c in ("timestamp", "value") if c not in fields]
        if missing:
            raise DetectInputError(
                f"{in_path}: line 1: missing column(s) {', '.join(missing)}; "
                f"the header must contain timestamp,value (got {','.join(fields) or 'nothing'})"
            )
        reader.fieldnames = fields
        rows, times, values = [], [], []
        try:
            for row in reader:
                line = reader.line_num
                if None in row or any(row.get(c) is None for c in fields):
                    raise DetectInputError(f"{in_path}: line {line}: expected {len(fields)} fields")
                raw_t, raw_v = row["timestamp"], row["value"]
                try:
                    t = epoch_seconds(raw_t)
                except (ValueError, OverflowError) as exc:
                    raise DetectInputError(
                        f"{in_path}: line {line}: timestamp {raw_t[:40]!r} is neither epoch "
                        "seconds nor ISO-8601"
                    ) from exc
                try:
                    v = float(raw_v)
                except ValueError as exc:
                    raise DetectInputError(
                        f"{in_path}: line {line}: value {raw_v[:40]!r} is not a number"
                    ) from exc
                if not math.isfinite(v):
                    raise DetectInputError(f"{in_path}: line {line}: value must be finite")
                if times and t < times[-1]:
                    raise DetectInputError(
                        f"{in_path}: line {line}: timestamp {raw_t[:40]!r} goes backwards; "
                        "sort the file by time"
                    )
                rows.append(row)
                times.append(t)
                values.append(v)
        except csv.Error as exc:
            # the failing record is the one after the last complete line read
            raise DetectInputError(f"{in_path}: line {reader.line_num + 1}: {exc}") from exc
    return rows, times, values


def detect_csv(in_path: str | Path, out_path: str | Path) -> int:
    """Read `timestamp,value` rows, write them back with `anomaly_score`. Returns the row count.

    Timestamps are epoch seconds or ISO-8601 and must not go backwards; values must be finite
    numbers. Extra columns are kept. Raises DetectInputError naming the line on bad input.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    try:
        handle = in_path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DetectInputError(f"{in_path}: cannot read ({exc.strerror})") from exc
    try:
        rows, times, values = _read_rows(in_path, handle)
    except UnicodeDecodeError as exc:
        raise DetectInputError(f"{in_path}: not UTF-8 text ({exc.reason})") from exc
    if not rows:
        raise DetectInputError(f"{in_path}: no data rows after the header")
    scores = score_series(times, values)
    with out_path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=[*rows[0].keys(), "anomaly_score"])
        writer.writeheader()
        for row, score in zip(rows, scores, strict=True):
            writer.writerow({**row, "anomaly_score": f"{score:.6f}"})
    return len(rows)
