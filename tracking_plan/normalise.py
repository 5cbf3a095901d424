"""Normalisation of event values: timestamps to UTC, clock-skew correction, currency codes.

Timestamps
    Accepted: ISO-8601 strings with any UTC offset or `Z` (`z` too), any number of fractional
    digits, basic and extended formats (whatever `datetime.fromisoformat` reads); a string with
    no offset is taken as UTC. Epoch numbers, or strings holding one, are seconds when
    `abs(value) < 1e11` and milliseconds otherwise (1e11 s is the year 5138, 1e11 ms is 1973, so
    the two ranges of plausible dates never overlap). An eight-digit string such as `20261123`
    is an ISO basic date, not an epoch. `bool` is never a timestamp.
    Output: epoch seconds (float) from `parse_timestamp`, and ISO-8601 UTC with millisecond
    precision and a `Z` from `format_timestamp`, e.g. `2026-11-23T18:16:33.123Z`.
    A timestamp is *plausible* when it lies between 2000-01-01T00:00:00Z and one day after the
    time the event was received (`plausible`).

Clock skew (`event_time`)
    Device clocks are often wrong. Like Segment, when a call carries both the client's time of
    the event (`originalTimestamp`, else `timestamp`) and the client's time of sending (`sentAt`),
    and the server knows when it received the call, the event time is corrected to
    `receivedAt - (sentAt - originalTimestamp)`: the delay the client measured on its own clock,
    applied to the server's clock.

Currency
    ISO 4217 alphabetic codes, upper-cased (`eur` -> `EUR`); `is_currency` checks the code list in
    `tracking_plan.normalise_currency_codes`.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime

from tracking_plan.normalise_currency_codes import CURRENCY_CODES

MIN_EPOCH = 946_684_800.0  # 2000-01-01T00:00:00Z
MAX_FUTURE_SECONDS = 86_400.0  # a timestamp may be at most one day after reception
_MS_THRESHOLD = 1e11  # |epoch| at or above this is milliseconds
_MAX_ISO_LENGTH = 64  # longer strings are not timestamps (and are not handed to the parser)
_NUMERIC = re.compile(r"[+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?")
_fromisoformat = datetime.fromisoformat
_isfinite = math.isfinite

# Fast paths for the canonical form `YYYY-MM-DDTHH:MM:SS.mmmZ` that Segment libraries send and
# that `format_timestamp` writes. Events arrive clustered in time, so per-minute caches hit
# nearly always: second text -> epoch, minute text -> epoch, and epoch minute -> its text.
_CACHE_MAX = 100_000
_minute_epochs: dict[str, float] = {}
_minute_texts: dict[int, str] = {}
_second_epochs: dict[str, float] = {}  # "YYYY-MM-DDTHH:MM:SS" -> epoch, for valid seconds only
_SECOND_CACHE_MAX = 20_000
_second_texts: dict[int, str] = {}  # epoch second -> "YYYY-MM-DDTHH:MM:SS."
_SECONDS = {f"{s:02d}": float(s) for s in range(60)}
_MILLIS = {f"{ms:03d}": ms / 1000.0 for ms in range(1000)}
_SECONDS_TEXT = tuple(f"{s:02d}" for s in range(60))
MILLIS_Z = tuple(f"{ms:03d}Z" for ms in range(1000))  # millisecond -> "mmmZ"

# For code that inlines the canonical fast paths (the generated validator): the caches are
# cleared when full, never replaced, so these bound methods stay valid.
cached_second_epoch = _second_epochs.get  # "YYYY-MM-DDTHH:MM:SS" -> epoch, or None
cached_second_text = _second_texts.get  # epoch second -> "YYYY-MM-DDTHH:MM:SS.", or None
millis_z_fraction = {f".{ms:03d}Z": ms / 1000.0 for ms in range(1000)}.get  # ".mmmZ" -> 0.mmm


def _epoch_number(value: float) -> float | None:
    try:
        number = float(value)
    except (OverflowError, ValueError):
        return None
    if not _isfinite(number):
        return None
    return number / 1000.0 if abs(number) >= _MS_THRESHOLD else number


def _minute_epoch(minute: str) -> float | None:
    """Epoch of `YYYY-MM-DDTHH:MM` (UTC), cached; None when it is not a valid date and time."""
    epoch = _minute_epochs.get(minute)
    if epoch is None:
        if minute[4] != "-" or minute[7] != "-" or minute[10] != "T" or minute[13] != ":":
            return None
        try:
            epoch = _fromisoformat(minute + ":00+00:00").timestamp()
        except ValueError:
            return None
        if len(_minute_epochs) >= _CACHE_MAX:
            _minute_epochs.clear()
        _minute_epochs[minute] = epoch
    return epoch


def parse_canonical(value: object) -> float | None:
    """Epoch seconds when `value` is exactly `YYYY-MM-DDTHH:MM:SS.mmmZ` (the form
    `format_timestamp` writes, so the text is already normalised), else None. Fast."""
    if type(value) is not str or len(value) != 24 or value[23] != "Z":  # type: ignore[arg-type]
        return None
    text: str = value  # type: ignore[assignment]
    second = _second_epochs.get(text[:19])
    millis = _MILLIS.get(text[20:23])
    if second is not None and millis is not None and text[19] == ".":
        return second + millis
    seconds = _SECONDS.get(text[17:19])
    if seconds is None or millis is None or text[16] != ":" or text[19] != ".":
        return None
    minute = _minute_epochs.get(text[:16])
    if minute is None:
        minute = _minute_epoch(text[:16])
        if minute is None:
            return None
    if len(_second_epochs) >= _SECOND_CACHE_MAX:
        _second_epochs.clear()
    _second_epochs[text[:19]] = minute + seconds
    return minute + seconds + millis


def parse_timestamp(value: object) -> float | None:
    """Epoch seconds for an ISO-8601 string, epoch seconds/ms number or numeric string; None
    when `value` is not a timestamp at all. Never raises."""
    kind = type(value)
    if kind is str:
        text: str = value  # type: ignore[assignment]
        epoch = parse_canonical(text)
        if epoch is not None:
            return epoch
        if not text or len(text) > _MAX_ISO_LENGTH or not text.isascii() or not text.isprintable():
            return None  # the C parser would stop at a NUL and accept what precedes it
        if len(text) != 8 and _NUMERIC.fullmatch(text):
            return _epoch_number(text)  # type: ignore[arg-type]
        if not text[:4].isdigit():  # ISO-8601 starts with a 4-digit year: spare the parser
            return None
        if text[-1] == "z":
            text = text[:-1] + "Z"
        try:
            moment = _fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            return moment.timestamp()
        except (OverflowError, ValueError, OSError):
            return None
    if kind is int or kind is float:
        return _epoch_number(value)  # type: ignore[arg-type]
    return None


def second_text(second: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS.` of an epoch second (UTC), cached (see `format_timestamp`)."""
    minute, seconds = divmod(second, 60)
    prefix = _minute_texts.get(minute)
    if prefix is None:
        prefix = time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(minute * 60))
        if len(_minute_texts) >= _CACHE_MAX:
            _minute_texts.clear()
        _minute_texts[minute] = prefix
    text = prefix + _SECONDS_TEXT[seconds] + "."
    if len(_second_texts) >= _SECOND_CACHE_MAX:
        _second_texts.clear()
    _second_texts[second] = text
    return text


def format_timestamp(epoch: float) -> str:
    """ISO-8601 UTC with milliseconds and `Z`. `epoch` must be a plausible timestamp."""
    second, millis = divmod(round(epoch * 1000), 1000)
    head = _second_texts.get(second)
    if head is None:
        head = second_text(second)
    return head + MILLIS_Z[millis]


def plausible(epoch: float, received_at: float) -> bool:
    """Not before 2000 and at most one day after the event was received."""
    return MIN_EPOCH <= epoch <= received_at + MAX_FUTURE_SECONDS


def event_time(
    original: float | None, sent_at: float | None, received_at: float | None
) -> float | None:
    """The event time after Segment-style clock-skew correction (see module docstring)."""
    if original is None:
        return received_at
    if sent_at is None or received_at is None:
        return original
    return received_at - (sent_at - original)


def normalise_currency(value: str) -> str | None:
    """The upper-cased ISO 4217 code, or None when `value` is not one."""
    code = value.upper() if not value.isupper() else value
    return code if code in CURRENCY_CODES else None


def is_currency(code: str) -> bool:
    return code in CURRENCY_CODES


def now() -> float:
    """The current time in epoch seconds (the default reception time)."""
    return time.time()
