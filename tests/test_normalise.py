"""Timestamps to UTC, clock-skew correction and currency codes."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracking_plan.normalise import (
    MIN_EPOCH,
    event_time,
    format_timestamp,
    is_currency,
    normalise_currency,
    parse_canonical,
    parse_timestamp,
    plausible,
)

NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-23T12:00:00Z", NOON),
        ("2026-11-23T12:00:00z", NOON),
        ("2026-11-23T12:00:00.000Z", NOON),
        ("2026-11-23T12:00:00.250Z", NOON + 0.25),
        ("2026-11-23T12:00:00.123456789Z", NOON + 0.123456),  # beyond µs is truncated
        ("2026-11-23T14:00:00+02:00", NOON),
        ("2026-11-23T07:30:00-04:30", NOON),
        ("2026-11-23T12:00:00", NOON),  # no offset: UTC
        ("2026-11-23 12:00:00+00:00", NOON),
        ("20261123T120000Z", NOON),  # basic format
        ("20261123", NOON - 12 * 3600),  # eight digits: a basic date, not an epoch
        (NOON, NOON),
        (int(NOON), NOON),
        (NOON * 1000, NOON),  # milliseconds
        (int(NOON * 1000) + 5, NOON + 0.005),
        (str(int(NOON)), NOON),
        (str(int(NOON * 1000)), NOON),
        (f"{NOON}", NOON),
    ],
)
def test_parse(value: object, expected: float) -> None:
    assert parse_timestamp(value) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        "",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-02-30",
        "12:00",
        "x" * 10_000,
        "2026-11-23T12:00:00Q",
        math.nan,
        math.inf,
        -math.inf,
        10**400,
        "1e999",
        [NOON],
        {"t": NOON},
        "\ud800",
        "2026-11-23T12:00:00\x00Z",
    ],
)
def test_not_a_timestamp(value: object) -> None:
    assert parse_timestamp(value) is None


def test_milliseconds_and_seconds_are_told_apart_by_magnitude() -> None:
    assert parse_timestamp(99_999_999_999) == 99_999_999_999  # seconds, year 5138
    assert parse_timestamp(100_000_000_000) == 100_000_000  # milliseconds, 1973


def test_format() -> None:
    assert format_timestamp(NOON) == "2026-11-23T12:00:00.000Z"
    assert format_timestamp(NOON + 59.9996) == "2026-11-23T12:01:00.000Z"  # rounds to ms
    assert format_timestamp(MIN_EPOCH) == "2000-01-01T00:00:00.000Z"


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=253_402_300_799_999))
def test_format_matches_datetime_and_round_trips(millis: int) -> None:
    epoch = millis / 1000
    text = format_timestamp(epoch)
    reference = datetime.fromtimestamp(millis // 1000, UTC).replace(
        microsecond=millis % 1000 * 1000
    )
    assert text == reference.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"
    assert parse_canonical(text) == pytest.approx(epoch, abs=1e-6)
    assert parse_timestamp(text) == pytest.approx(epoch, abs=1e-6)


def test_canonical_fast_path_only_takes_the_canonical_form() -> None:
    assert parse_canonical("2026-11-23T12:00:00.000Z") == NOON
    for other in [
        "2026-11-23T12:00:00Z",
        "2026-11-23T12:00:00.000+00:00",
        "2026-11-23T12:00:60.000Z",
        "2026-11-23T24:00:00.000Z",
        "2026-11-23X12:00:00.000Z",
        "2026-11-23T12:00:00,000Z",
        "２０２６-11-23T12:00:00.000Z",
        12,
    ]:
        assert parse_canonical(other) is None


def test_plausible() -> None:
    assert plausible(NOON, NOON)
    assert plausible(NOON + 86_400, NOON)
    assert not plausible(NOON + 86_401, NOON)
    assert not plausible(MIN_EPOCH - 1, NOON)


def test_clock_skew_correction() -> None:
    # The device clock is an hour fast: it says it sent at 13:00:05 an event of 13:00:00;
    # the server received it at 12:00:06, so the event happened at 12:00:01 server time.
    assert event_time(NOON + 3600, NOON + 3605, NOON + 6) == NOON + 1
    assert event_time(NOON, None, NOON + 6) == NOON  # no sentAt: trust the client
    assert event_time(NOON, NOON + 1, None) == NOON  # no receivedAt: nothing to correct with
    assert event_time(None, NOON, NOON + 6) == NOON + 6  # no client time: reception time


def test_currency() -> None:
    assert normalise_currency("eur") == "EUR"
    assert normalise_currency("Usd") == "USD"
    assert normalise_currency("EUR") == "EUR"
    for bad in ["EURO", "", "XXX", "€", "e u", "ZZZ"]:
        assert normalise_currency(bad) is None
    assert is_currency("JPY") and not is_currency("jpy")
