"""The events.raw wire format: envelopes, batches, keys and partitions."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.envelope import (
    BadBatch,
    batch_key,
    decode_batch,
    encode_batch,
    encode_envelope,
    encode_envelope_body,
    join_encoded,
    make_envelope,
    message_id,
    parse_received_at,
    partition_for,
    partition_key,
    received_at_epoch,
    utc_now_iso,
)

json_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
    max_leaves=10,
)
bodies = st.dictionaries(json_text, json_values, max_size=6)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=10), bodies), max_size=5))
def test_batches_round_trip_however_they_are_encoded(items: list[tuple[str, dict]]) -> None:
    envs = [make_envelope(source, body, "2026-11-23T18:20:00.123Z") for source, body in items]
    joined = join_encoded(
        [encode_envelope_body(e["source"], e["received_at"], orjson.dumps(e["body"])) for e in envs]
    )
    assert joined == encode_batch(envs) == join_encoded([encode_envelope(e) for e in envs])
    assert decode_batch(joined) == envs


def test_received_at_is_utc_iso_with_milliseconds() -> None:
    stamp = utc_now_iso()
    assert stamp.endswith("Z") and len(stamp) == len("2026-11-23T18:20:00.123Z")
    parsed = parse_received_at(stamp)
    assert parsed.tzinfo is not None
    assert abs((datetime.now(UTC) - parsed).total_seconds()) < 5
    assert parse_received_at("2026-11-23T19:20:00+01:00") == datetime(
        2026, 11, 23, 18, 20, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="time zone"):
        parse_received_at("2026-11-23T18:20:00")
    with pytest.raises(ValueError):
        parse_received_at("yesterday")


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59)),
    st.integers(0, 999),
)
def test_received_at_epoch_is_the_parsed_timestamp_to_the_bit(
    moment: datetime, millis: int
) -> None:
    """The fast path (cached second + milliseconds) gives the very float of
    `parse_received_at(...).timestamp()`, on the first stamp of a second and after."""
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"
    if len(stamp) != 24:  # years before 1000 are not written with 4 digits by strftime
        return
    expected = parse_received_at(stamp).timestamp()
    assert received_at_epoch(stamp).hex() == expected.hex()
    assert received_at_epoch(stamp).hex() == expected.hex()  # cached second
    other = stamp[:20] + f"{999 - millis:03d}Z"  # the same second
    assert received_at_epoch(other).hex() == parse_received_at(other).timestamp().hex()


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-11-23T19:20:00+01:00",
        "2026-11-23T18:20:00.5Z",
        "2026-11-23 18:20:00.123Z",
        "2026-11-23T18:20:00.123456Z",
        "2026-11-23T18:20:00.12aZ",
        "2026-11-23T18:20:00. 12Z",
        "2026-11-23T18:20:00.١٢٣Z",
        "2026-11-23T18:20:60.123Z",
        "2026-13-23T18:20:00.123Z",
        "2026-11-23T18:20:00",
        "yesterday",
        "",
    ],
)
def test_received_at_epoch_agrees_with_parse_received_at_on_other_stamps(stamp: str) -> None:
    try:
        expected: float | type[Exception] = parse_received_at(stamp).timestamp()
    except ValueError:
        expected = ValueError
    for _ in range(2):  # uncached, then maybe cached
        if expected is ValueError:
            with pytest.raises(ValueError):
                received_at_epoch(stamp)
        else:
            assert received_at_epoch(stamp) == expected


@pytest.mark.parametrize(
    ("data", "code", "needle"),
    [
        (b"", "malformed_json", "not JSON"),
        (b"[{]", "malformed_json", "not JSON"),
        (b"\xff", "malformed_json", "not JSON"),
        (None, "bad_envelope", "no value"),
        (b'"text"', "bad_envelope", "expected an array"),
        (b"[1]", "bad_envelope", r"envelope \[0\] is int"),
        (b'[{"source": "web", "body": {}}]', "bad_envelope", "lacks received_at"),
        (b'[{"source": "", "received_at": "x", "body": {}}]', "bad_envelope", "source"),
        (b'[{"source": "web", "received_at": 5, "body": {}}]', "bad_envelope", "received_at"),
        (b'[{"source": "web", "received_at": "x", "body": [1]}]', "bad_envelope", "body must be"),
    ],
)
def test_decode_batch_refuses_with_a_quarantine_code(data: Any, code: str, needle: str) -> None:
    with pytest.raises(BadBatch, match=needle) as info:
        decode_batch(data)
    assert info.value.code == code


def test_a_lone_envelope_object_is_a_batch_of_one() -> None:
    env = make_envelope("web", {"type": "track"})
    assert decode_batch(orjson.dumps(env)) == [env]


def test_partition_key_prefers_anonymous_id_then_user_id_then_message_id() -> None:
    both = make_envelope("web", {"anonymousId": "a", "userId": "u", "messageId": "m"})
    assert partition_key(both) == "a"
    assert partition_key(make_envelope("web", {"userId": "u", "anonymousId": ""})) == "u"
    assert partition_key(make_envelope("web", {"userId": 42})) == "42"
    assert partition_key(make_envelope("web", {"userId": True, "messageId": "m"})) == "m"


def test_message_id_falls_back_to_a_content_hash() -> None:
    assert message_id(make_envelope("web", {"messageId": "m-1"})) == "m-1"
    a = message_id(make_envelope("web", {"event": "E", "x": 1}, "2026-01-01T00:00:00Z"))
    b = message_id(make_envelope("web", {"x": 1, "event": "E"}, "2026-02-01T00:00:00Z"))
    c = message_id(make_envelope("ios", {"event": "E", "x": 1}))
    assert a == b != c and a.startswith("sha1:")


@given(st.text(max_size=40), st.integers(1, 64))
def test_partition_for_is_in_range_and_deterministic(key: str, partitions: int) -> None:
    p = partition_for(key, partitions)
    assert 0 <= p < partitions and p == partition_for(key, partitions)


def test_partition_for_is_stable_across_processes_and_spreads() -> None:
    """Stable across interpreters (no PYTHONHASHSEED dependence) and roughly uniform."""
    keys = [f"anon-{i}" for i in range(4000)]
    here = [partition_for(k, 8) for k in keys[:50]]
    code = (
        "from streams.envelope import partition_for as p;"
        "print([p(f'anon-{i}', 8) for i in range(50)])"
    )
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert str(here) == there.stdout.strip()
    counts = [0] * 8
    for k in keys:
        counts[partition_for(k, 8)] += 1
    assert min(counts) > 4000 / 8 * 0.8
    with pytest.raises(ValueError):
        partition_for("x", 0)


def test_batch_key_names_the_partition() -> None:
    assert batch_key(3) == b"p3"
