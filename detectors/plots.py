"""PNG charts for backtests: a series' observed values against the model's expected band, with
the labelled incident shaded, the alert marked and its sentence underneath. Uses matplotlib's
Agg backend (no display).

Volumes are drawn per window. A rate (conversion, violation share) on a few users a minute is 0 %
or 100 % in most windows that have users and unmeasured in the others, so it is drawn over the
last hour instead: the users' rate, the rate the model expected for them, and the range chance
gives that many users (binomial, 99 %)."""

from __future__ import annotations

import re
import textwrap
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt

from detectors.backtest import AlertSpan, Label, Row
from detectors.explain import describe
from detectors.intervals import betabinom_rate_interval
from detectors.rollup import parse_series_key

HOUR = 3600.0
_BINOMIAL_NU = 1e9  # a beta-binomial this concentrated is the binomial


def safe_name(text: str) -> str:
    """A file name from any text (labels may hold any unicode)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")
    return (name or "incident")[:80]


def readable(series_key: str) -> str:
    """`conversion|from_event=A|source=web|to_event=B` → "Conversion from A to B on web" (the
    alert sentences' own words)."""
    return describe(*parse_series_key(series_key))


def wrap_caption(text: str, width: int = 150, lines: int = 4) -> str:
    """The sentence on at most `lines` lines; a number keeps the word after it on its line
    ("4 h", "75 %", "61 users")."""
    text = re.sub(r"(\d) (?=\S)", "\\1\u00a0", text)
    return "\n".join(textwrap.wrap(text, width)[:lines])


def hourly_rates(rows: Sequence[Row], span: float = HOUR) -> list[Row]:
    """Each row's rate over the `span` seconds up to it: observed and expected rates weighted by
    the windows' users, and the binomial 99 % range for that many users around the expected."""
    out: list[Row] = []
    recent: deque[Row] = deque()
    num = exp = users = 0.0
    for row in rows:
        if row[6] <= 0.0:
            continue
        recent.append(row)
        num, exp, users = num + row[1] * row[6], exp + row[2] * row[6], users + row[6]
        while recent[0][0] <= row[0] - span:
            old = recent.popleft()
            num, exp, users = num - old[1] * old[6], exp - old[2] * old[6], users - old[6]
        rate, expected = num / users, exp / users
        lower, upper = betabinom_rate_interval(users, expected, _BINOMIAL_NU, 0.99)
        out.append((row[0], rate, expected, lower, upper, row[5], users))
    return out


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

    rate = parse_series_key(series_key)[0] in ("conversion", "violation")
    drawn = hourly_rates(rows) if rate else list(rows)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        times = [when(r[0]) for r in drawn]
        if drawn:
            top.fill_between(
                times, [r[3] for r in drawn], [r[4] for r in drawn], color="#9ecae1", alpha=0.5,
                step="post", label="normal range" + (" for those users" if rate else ""),
            )  # fmt: skip
            top.step(times, [r[2] for r in drawn], where="post", color="#3182bd", lw=1,
                     label="expected")  # fmt: skip
            top.step(times, [r[1] for r in drawn], where="post", color="#222222", lw=0.8,
                     label="observed")  # fmt: skip
            bottom.step(times, [r[5] for r in drawn], where="post", color="#e6550d", lw=0.8)
        else:
            top.text(0.5, 0.5, "no data recorded for this series", ha="center",
                     transform=top.transAxes)  # fmt: skip
        for ax in (top, bottom):
            ax.axvspan(when(label.start), when(label.end), color="#fdae6b", alpha=0.3)
            for span in alerts:
                ax.axvline(when(span.fired), color="#d62728", lw=1.2, ls="--")
        top.set_title(
            f"{label.name}\n{label.kind} — {readable(series_key)}", fontsize=10, parse_math=False
        )  # names are anyone's text: "$" is no TeX
        top.set_ylabel("rate over the last hour" if rate else "per window")
        if drawn:
            top.legend(loc="upper left", fontsize=8)
        bottom.set_ylabel("score")
        bottom.set_ylim(0, 1.05)
        bottom.xaxis.set_major_formatter(mdates.DateFormatter("%a %H:%M", tz=UTC))
        fig.autofmt_xdate()
        said = alerts[0].explanation if alerts and alerts[0].explanation else None
        if said is None and label.expect_alert:
            said = "No alert matched this incident."
        caption = wrap_caption(said) if said else ""
        fig.text(0.01, 0.01, caption, fontsize=8, va="bottom", ha="left", parse_math=False)
        fig.tight_layout(rect=(0, 0.02 + 0.025 * caption.count("\n") + (0.03 if caption else 0),
                               1, 1))  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)
    return path
