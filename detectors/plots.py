"""PNG charts for backtests: a series' observed values against the model's expected band, with
the labelled incident shaded and the alerts marked. Uses matplotlib's Agg backend (no display)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt

from detectors.backtest import AlertSpan, Label

Row = tuple[float, float, float, float, float, float]  # ts, observed, expected, lo, up, score


def safe_name(text: str) -> str:
    """A file name from any text (labels may hold any unicode)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")
    return (name or "incident")[:80]


def plot_incident(
    path: Path,
    label: Label,
    series_key: str,
    rows: Sequence[Row],
    alerts: Sequence[AlertSpan] = (),
) -> Path:
    """Draw one incident and save it as PNG at `path`; returns the path."""

    def when(ts: float) -> datetime:
        return datetime.fromtimestamp(ts, tz=UTC)

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        times = [when(r[0]) for r in rows]
        if rows:
            top.fill_between(
                times, [r[3] for r in rows], [r[4] for r in rows], color="#9ecae1", alpha=0.5,
                step="post", label="normal range",
            )  # fmt: skip
            top.step(times, [r[2] for r in rows], where="post", color="#3182bd", lw=1,
                     label="expected")  # fmt: skip
            top.step(times, [r[1] for r in rows], where="post", color="#222222", lw=0.8,
                     label="observed")  # fmt: skip
            bottom.step(times, [r[5] for r in rows], where="post", color="#e6550d", lw=0.8)
        else:
            top.text(0.5, 0.5, "no data recorded for this series", ha="center",
                     transform=top.transAxes)  # fmt: skip
        for ax in (top, bottom):
            ax.axvspan(when(label.start), when(label.end), color="#fdae6b", alpha=0.3)
            for span in alerts:
                ax.axvline(when(span.fired), color="#d62728", lw=1.2, ls="--")
        top.set_title(f"{label.name} — {label.kind} — {series_key}", fontsize=10)
        top.set_ylabel("per window")
        if rows:
            top.legend(loc="upper left", fontsize=8)
        bottom.set_ylabel("score")
        bottom.set_ylim(0, 1.05)
        bottom.xaxis.set_major_formatter(mdates.DateFormatter("%a %H:%M", tz=UTC))
        fig.autofmt_xdate()
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)
    return path
