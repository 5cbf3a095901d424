"""Per-partition state snapshots kept in a Faust table (so they survive restarts).

Each agent keeps its state (the deduper, the open windows, the detectors) in memory for the
partitions it owns and writes one snapshot per partition from time to time: not one changelog
write per event. The snapshot holds the offset of the last input message it includes; the agent
acknowledges input messages only after the snapshot that covers them is written, so Kafka's
committed offset never passes the snapshot. After a crash the worker restores the snapshot and
skips input at or below its offset: every message counts exactly once in the state.

A snapshot can exceed Kafka's message size (an exact user set, a big dedupe window), so its
JSON text is written as string chunks of at most `CHUNK_CHARS` under ``<p>/<slot>/<i>``, followed
by a manifest (a small dict) under ``<p>``. Table values use Faust's JSON codec: that is what its
changelog recovery decodes with. The two slots alternate: a crash while writing chunks leaves the
manifest pointing at the previous, complete slot.

`table[key] = v` only queues the changelog write in Faust's producer buffer, and
`producer.flush()` may return before a queued write reached the broker (the buffer counts a
message being handed to aiokafka as sent; it gives up after 0.1 s without progress). So the table
keeps the futures of its changelog writes and `written()` awaits the broker's acknowledgement of
every one of them; `save()` returns only once its snapshot is acknowledged, so the input it
covers may be acknowledged then.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

import faust
import orjson
from faust.streams import (
    _current_event,
)  # the context var `table[key] = v` reads its partition from

log = logging.getLogger(__name__)
CHUNK_CHARS = 200_000  # <= 800 kB of UTF-8 even if every character took 4 bytes


class SnapshotTable(faust.Table):
    """A Faust table that remembers its changelog writes until `written()` awaits them."""

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        fut = super().send_changelog(*args, **kwargs)
        self.__dict__.setdefault("_unconfirmed", []).append(fut)
        return fut


def state_table(app: faust.App, name: str, partitions: int) -> Any:
    """A table of snapshot chunks (key: str, value: str or dict), co-partitioned with the input."""
    table = SnapshotTable(
        app,
        name=name,
        partitions=partitions,
        beacon=app.tables.beacon,
        help=f"{name}: per-partition state snapshots",
    )
    return app.tables.add(table)


async def written(table: Any) -> list[Any]:
    """Wait until the broker acknowledged every changelog write of `table` so far (raises if one
    failed: the input it covers must then not be acknowledged); their RecordMetadata."""
    pending = table.__dict__.pop("_unconfirmed", [])
    return list(await asyncio.gather(*pending)) if pending else []


def _set(table: Any, event: faust.EventT, key: str, value: Any) -> None:
    """`table[key] = value` with the changelog partition of `event` (also outside iteration)."""
    token = _current_event.set(weakref.ref(event))
    try:
        table[key] = value
    finally:
        _current_event.reset(token)


async def save(table: Any, event: faust.EventT, state: dict[str, Any], offset: int) -> int:
    """Write `state` (covering input up to `offset`) for the partition of `event` and wait until
    the broker has it; chars written. Each changelog record is awaited before the next is sent,
    so every record is a record batch of its own: the embedded broker (Tansu) answers ListOffsets
    with the last batch's base offset + 1, and Faust's changelog recovery reads only up to that
    offset, so a manifest batched behind its chunks would not be restored after a crash."""
    partition = event.message.partition
    text = orjson.dumps(state).decode()
    previous = table.get(str(partition)) or {"slot": 1}
    slot = 1 - int(previous["slot"])
    chunks = [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]
    await written(table)
    acked = []
    for index, chunk in enumerate(chunks):
        _set(table, event, f"{partition}/{slot}/{index}", chunk)
        acked += await written(table)
    manifest = {"slot": slot, "chunks": len(chunks), "offset": offset, "chars": len(text)}
    _set(table, event, str(partition), manifest)
    acked += await written(table)
    log.debug(
        "%s: snapshot of partition %d up to offset %d at changelog %s",
        table.name, partition, offset, [(r.partition, r.offset) for r in acked],
    )  # fmt: skip
    return len(text)


def covered(table: Any, partition: int) -> int:
    """The input offset the last snapshot of `partition` covers (-1 if none)."""
    manifest = table.get(str(partition))
    return int(manifest["offset"]) if manifest else -1


def load(table: Any, partition: int) -> tuple[dict[str, Any] | None, int]:
    """The last snapshot of `partition` and the input offset it covers (None, -1 if none)."""
    manifest = table.get(str(partition))
    if not manifest:
        return None, -1
    parts = []
    for index in range(int(manifest["chunks"])):
        chunk = table.get(f"{partition}/{manifest['slot']}/{index}")
        if not isinstance(chunk, str):
            raise RuntimeError(f"snapshot of partition {partition} misses chunk {index}")
        parts.append(chunk)
    text = "".join(parts)
    return (orjson.loads(text) if text else None), int(manifest["offset"])
