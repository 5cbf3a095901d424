"""The wire format of the `events.raw` topic (pure: no Kafka, no HTTP).

An *envelope* wraps one tracking call exactly as the collector received it::

    {"source": "web",                          # the source its write key belongs to
     "received_at": "2026-11-23T18:20:00.123Z", # collector clock, ISO-8601 UTC, milliseconds
     "body": {...}}                             # the call as parsed JSON (type set from the route)

One Kafka message of `events.raw` carries a *micro-batch*: its value is the UTF-8 JSON array of
envelopes (orjson-encoded), ``[envelope, envelope, ...]``; its key is the partition key of the
batch (``b"p<partition>"``): every envelope of one message belongs to the same partition, chosen
from the envelope's identity (`partition_key`), so the events of one user stay in order.
Consumers call `decode_batch`, which raises `BadBatch` with a reason on anything else.
"""

from __future__ import annotations

import hashlib
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

Envelope = dict[str, Any]

ENVELOPE_FIELDS = ("source", "received_at", "body")


class BadBatch(ValueError):
    """A message of events.raw is not a JSON array of envelopes.

    `code` is the violation code the worker should quarantine it with: ``malformed_json`` when
    the bytes are not JSON at all, ``bad_envelope`` when the JSON has the wrong shape.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def utc_now_iso() -> str:
    """The current UTC time as the collector stamps it: ``2026-11-23T18:20:00.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_received_at(value: str) -> datetime:
    """Parse a `received_at` string back into an aware UTC datetime (ValueError if it is not)."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"received_at {value!r} has no time zone")
    return parsed.astimezone(UTC)


_SECOND_CACHE_MAX = 20_000
_second_epochs: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" of a parsed stamp -> epoch second
_MILLIS = {f"{ms:03d}": ms for ms in range(1000)}  # exactly three ASCII digits
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = timedelta(seconds=1)


def received_at_epoch(value: str) -> float:
    """``parse_received_at(value).timestamp()`` (the same float), fast for the stamps the
    collector writes, ``YYYY-MM-DDTHH:MM:SS.mmmZ``: the epoch second of their first 19
    characters is cached once parsed. ValueError or OverflowError when `value` is not one."""
    canonical = len(value) == 24 and value[19] == "." and value[23] == "Z"
    millis = _MILLIS.get(value[20:23]) if canonical else None
    if millis is not None:
        second = _second_epochs.get(value[:19])
        if second is not None:  # exact milliseconds / 1000 rounds like `timestamp()`
            return (second * 1000 + millis) / 1000
    parsed = parse_received_at(value)
    if millis is not None:
        if len(_second_epochs) >= _SECOND_CACHE_MAX:
            _second_epochs.clear()
        _second_epochs[value[:19]] = (parsed - _EPOCH) // _ONE_SECOND
    return parsed.timestamp()


def make_envelope(source: str, body: dict[str, Any], received_at: str | None = None) -> Envelope:
    """Wrap one call; `received_at` defaults to now."""
    return {"source": source, "received_at": received_at or utc_now_iso(), "body": body}


def _identity(body: dict[str, Any], field: str) -> str | None:
    value = body.get(field)
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # some SDKs send numeric user ids
    return None


def partition_key(envelope: Envelope) -> str:
    """The key that decides the partition of an envelope (see `partition_key_of_body`)."""
    return partition_key_of_body(envelope["body"], envelope.get("source"))


def partition_key_of_body(body: dict[str, Any], source: str | None = None) -> str:
    """anonymousId, else userId, else the message id of a call.

    anonymousId comes first because it is stable across identify(): the events of one device
    before and after login land on the same partition, in order.
    """
    return (
        _identity(body, "anonymousId")
        or _identity(body, "userId")
        or message_id({"source": source, "body": body})
    )


def partition_for(key: str, partitions: int) -> int:
    """Map a partition key to a partition in ``range(partitions)`` (stable across processes)."""
    if partitions <= 0:
        raise ValueError("partitions must be positive")
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % partitions


def message_id(envelope: Envelope) -> str:
    """The id the worker deduplicates on: the call's messageId, else a hash of its content.

    Calls without a messageId (non-standard senders) get ``sha1:<hex>`` of their canonical JSON
    (and source), so an exact resend is still recognised as a duplicate.
    """
    body = envelope["body"]
    value = body.get("messageId")
    if isinstance(value, str) and value:
        return value
    try:
        canonical = orjson.dumps(
            [envelope.get("source"), body], option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
        )
    except TypeError:  # nested deeper than orjson writes (254 levels; it reads 1024)
        canonical = repr([envelope.get("source"), body]).encode("utf-8", "surrogatepass")
    return "sha1:" + hashlib.sha1(canonical, usedforsecurity=False).hexdigest()


def batch_key(partition: int) -> bytes:
    """The Kafka key of a batch message bound for `partition`."""
    return b"p%d" % partition


def encode_envelope(envelope: Envelope) -> bytes:
    """One envelope as JSON bytes (the unit the collector measures and joins)."""
    return orjson.dumps(envelope)


def envelope_prefix(source: str, received_at: str) -> bytes:
    """The JSON of an envelope up to its body: ``{"source":…,"received_at":…,"body":``."""
    return orjson.dumps({"source": source, "received_at": received_at})[:-1] + b',"body":'


def encode_envelope_body(source: str, received_at: str, body_json: bytes) -> bytes:
    """An envelope encoded around a body that is already JSON (saves re-encoding the body).

    Gives the same JSON as ``encode_envelope(make_envelope(source, body, received_at))``; with
    many bodies, compute `envelope_prefix` once and join ``prefix + body_json + b"}"``.
    """
    return envelope_prefix(source, received_at) + body_json + b"}"


def join_encoded(encoded: list[bytes]) -> bytes:
    """Join envelopes already encoded by `encode_envelope` into a batch message value."""
    return b"[" + b",".join(encoded) + b"]"


def encode_batch(envelopes: list[Envelope]) -> bytes:
    """The Kafka message value for a batch of envelopes: a JSON array."""
    return orjson.dumps(envelopes)


def check_envelope(item: Any, index: int = 0) -> Envelope:
    """Return `item` if it has the envelope shape, else raise `BadBatch` naming the field."""
    where = f"envelope [{index}]"
    if not isinstance(item, dict):
        raise BadBatch("bad_envelope", f"{where} is {type(item).__name__}, expected an object")
    missing = [field for field in ENVELOPE_FIELDS if field not in item]
    if missing:
        raise BadBatch("bad_envelope", f"{where} lacks {', '.join(missing)}")
    if not isinstance(item["source"], str) or not item["source"]:
        raise BadBatch("bad_envelope", f"{where}: source must be a non-empty string")
    if not isinstance(item["received_at"], str):
        raise BadBatch("bad_envelope", f"{where}: received_at must be an ISO-8601 string")
    if not isinstance(item["body"], dict):
        raise BadBatch("bad_envelope", f"{where}: body must be a JSON object")
    return item


def decode_batch(data: bytes | bytearray | memoryview | str | None) -> list[Envelope]:
    """Decode one events.raw message value into its envelopes.

    Raises `BadBatch` (code ``malformed_json`` or ``bad_envelope``) if the value is not a JSON
    array of objects with source, received_at and body. A single envelope object (not in an
    array) is accepted as a batch of one, so hand-written test messages also work.
    """
    if data is None:
        raise BadBatch("bad_envelope", "message has no value")
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadBatch("malformed_json", f"message value is not JSON: {exc}") from None
    if isinstance(parsed, dict):
        parsed = [parsed]
    if not isinstance(parsed, list):
        raise BadBatch(
            "bad_envelope", f"message value is a JSON {type(parsed).__name__}, expected an array"
        )
    return [check_envelope(item, index) for index, item in enumerate(parsed)]
