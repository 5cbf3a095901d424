"""`detect_csv`: a `timestamp,value` CSV in, the same rows with `anomaly_score` out.

Timestamps are epoch seconds or ISO-8601 (naive: UTC). Time is taken as it comes: rows are scored
in file order; timestamps that repeat, go backwards (a daylight-saving step back, a clock reset) or
jump forward over a gap are accepted, and each kind is reported once through `warn` with its
count and first line. Values must be finite numbers; anything unusable is a `DetectInputError`
naming the file, the line and the problem.
"""

from __future__ import annotations

import csv
import itertools
import math
import sys
from collections.abc import Callable
from pathlib import Path

from detectors.records import epoch_seconds
from detectors.univariate.scorer import score_series

GAP_FACTOR = 10.0  # a step this many times the typical interval is reported as a gap


class DetectInputError(ValueError):
    """A CSV given to `detect_csv` is unusable; the message names the file, line and problem."""


def _stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _read_rows(in_path: Path, handle) -> tuple[list[dict], list[float], list[float], list[int]]:
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
        rows, times, values, lines = [], [], [], []
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
                if not (math.isfinite(v) and math.isfinite(t)):
                    what = "value" if not math.isfinite(v) else "timestamp"
                    raise DetectInputError(f"{in_path}: line {line}: {what} must be finite")
                rows.append(row)
                times.append(t)
                values.append(v)
                lines.append(line)
        except csv.Error as exc:
            # the failing record is the one after the last complete line read
            raise DetectInputError(f"{in_path}: line {reader.line_num + 1}: {exc}") from exc
    return rows, times, values, lines


def time_warnings(in_path: Path, times: list[float], lines: list[int]) -> list[str]:
    """One message per kind of irregular time step (repeated, backwards, gap): count, first line."""
    steps = [b - a for a, b in itertools.pairwise(times)]
    positive = sorted(s for s in steps if s > 0)
    typical = positive[len(positive) // 2] if positive else 0.0
    kinds: dict[str, list[int]] = {"repeated": [], "backwards": [], "gap": []}
    for i, step in enumerate(steps, 1):
        if step == 0:
            kinds["repeated"].append(i)
        elif step < 0:
            kinds["backwards"].append(i)
        elif typical and step > GAP_FACTOR * typical:
            kinds["gap"].append(i)
    text = {
        "repeated": "timestamp(s) repeat the previous one",
        "backwards": "timestamp(s) go backwards (a clock step back, e.g. daylight saving)",
        "gap": f"gap(s) longer than {GAP_FACTOR:g}× the usual {typical:g} s interval",
    }
    return [
        f"{in_path}: {len(at)} {text[kind]}, first at line {lines[at[0]]}; scored in file order"
        for kind, at in kinds.items()
        if at
    ]


def detect_csv(
    in_path: str | Path, out_path: str | Path, warn: Callable[[str], None] | None = None
) -> int:
    """Read `timestamp,value` rows, write them back with `anomaly_score`. Returns the row count.

    Extra columns are kept. Irregular time (repeated, backwards, gaps) is reported through
    `warn` (default: a `warning:` line on stderr), never refused. Raises DetectInputError naming
    the line on bad input.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    warn = warn or _stderr
    try:
        handle = in_path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DetectInputError(f"{in_path}: cannot read ({exc.strerror})") from exc
    try:
        rows, times, values, lines = _read_rows(in_path, handle)
    except UnicodeDecodeError as exc:
        raise DetectInputError(f"{in_path}: not UTF-8 text ({exc.reason})") from exc
    if not rows:
        raise DetectInputError(f"{in_path}: no data rows after the header")
    for message in time_warnings(in_path, times, lines):
        warn(message)
    scores = score_series(times, values)
    with out_path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=[*rows[0].keys(), "anomaly_score"])
        writer.writeheader()
        for row, score in zip(rows, scores, strict=True):
            writer.writerow({**row, "anomaly_score": f"{score:.6f}"})
    return len(rows)
