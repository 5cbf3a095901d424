"""ISO-8601 UTC text with milliseconds (`2026-03-02T08:15:00.123Z`), fast for many calls."""

from __future__ import annotations

from datetime import UTC, datetime

_minutes: dict[int, str] = {}
_CACHE_MAX = 20_000


def iso(epoch: float) -> str:
    """`epoch` as ISO-8601 UTC with milliseconds and a `Z` (the collector's format)."""
    millis = round(epoch * 1000.0)
    minute, rest = divmod(millis, 60_000)
    text = _minutes.get(minute)
    if text is None:
        if len(_minutes) >= _CACHE_MAX:
            _minutes.clear()
        text = _minutes[minute] = datetime.fromtimestamp(minute * 60, UTC).strftime(
            "%Y-%m-%dT%H:%M:"
        )
    second, ms = divmod(rest, 1000)
    return f"{text}{second:02d}.{ms:03d}Z"
