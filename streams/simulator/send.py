"""Send simulated traffic to a collector over HTTP, in (compressed) real time.

Each envelope from `streams.simulator.traffic.simulate` is posted in a Segment batch
(``POST <url>/v1/batch``, HTTP Basic with the write key of its source, password empty) when its
turn comes: at ``speed`` 60 one simulated hour is replayed per real minute.

Event time comes from ``timestamp``: the sender keeps the simulated ``timestamp`` of every call
and removes ``sentAt``, because the collector stamps its own (real) reception time and the
validator would otherwise "correct" the simulated clock back to the real one
(``receivedAt - (sentAt - timestamp)``). With speed 1 and a simulation starting now, the
timestamps are simply now. Start speeded-up simulations in the past (the CLI starts them
`days` ago) so that no event time lies in the future.

Clock. `send` maps simulated time to real time from an anchor: `sim_start` is the simulated
moment that corresponds to the start of sending, and `speed` simulated seconds pass per real
second. The CLI feeds a live stack on the real clock (speed 1, `sim_start` = now): events are
stamped with the time they are sent, like a real tracker's, and a simulation that starts in the
past (history) sends its past at once, as fast as the collector takes it, then goes on live.
`write_history` writes that past straight into events.raw instead (no HTTP; `trackwatch run`
does so before its collector accepts anything, so no event is stamped ahead of the history).

Only the given URL is ever contacted. A 503 is retried after its Retry-After (or a backoff);
other failures are retried a few times; a 4xx rejects the batch, which is counted and the first
error kept. `SendStats` counts what was accepted and rejected.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from tracking_plan.normalise import parse_timestamp

MAX_BATCH_EVENTS = 500
MAX_BATCH_BYTES = 400_000  # the collector takes 500 KB per batch; keep a margin
FLUSH_SECONDS = 0.2
MAX_ATTEMPTS = 8
MAX_RETRY_AFTER = 30.0
CONCURRENCY = 4


@dataclass
class SendStats:
    """What happened to the events handed to `send`."""

    sent: int = 0  # events posted (each counted once, however often retried)
    accepted: int = 0  # answered 200
    rejected: int = 0  # answered 4xx, or given up after retries
    requests: int = 0
    retries: int = 0
    first_error: str | None = None
    last_event_time: str | None = None  # simulated time of the last event handed over
    errors: dict[str, int] = field(default_factory=dict)


class SendError(RuntimeError):
    """The sender cannot start (bad URL, unknown source)."""


def check_url(url: str) -> str:
    """The collector base URL without a trailing slash; SendError if it is not http(s)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SendError(f"collector URL {url!r} must look like http://127.0.0.1:8080")
    if parts.query or parts.fragment:
        raise SendError(f"collector URL {url!r} must not have a query or fragment")
    return url.rstrip("/")


def basic_auth(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode("ascii")


class _Batcher:
    """Pending calls per source, posted when full or when `FLUSH_SECONDS` passed."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        auth: dict[str, str],
        stats: SendStats,
        max_attempts: int,
    ) -> None:
        self.max_attempts = max_attempts
        self.session = session
        self.endpoint = url + "/v1/batch"
        self.auth = auth
        self.stats = stats
        self.pending: dict[str, list[bytes]] = {}
        self.sizes: dict[str, int] = {}
        self.since = time.monotonic()
        self.slots = asyncio.Semaphore(CONCURRENCY)
        self.tasks: set[asyncio.Task[None]] = set()

    async def add(self, source: str, body: dict[str, Any]) -> None:
        data = orjson.dumps(body)
        batch = self.pending.setdefault(source, [])
        if batch and self.sizes[source] + len(data) > MAX_BATCH_BYTES:
            await self.flush(source)
            batch = self.pending.setdefault(source, [])
        batch.append(data)
        self.sizes[source] = self.sizes.get(source, 0) + len(data) + 1
        if len(batch) >= MAX_BATCH_EVENTS:
            await self.flush(source)

    async def flush_due(self) -> None:
        if time.monotonic() - self.since >= FLUSH_SECONDS:
            await self.flush_all()

    async def flush_all(self) -> None:
        for source in list(self.pending):
            await self.flush(source)
        self.since = time.monotonic()

    async def flush(self, source: str) -> None:
        batch = self.pending.pop(source, None)
        self.sizes.pop(source, None)
        if not batch:
            return
        payload = b'{"batch":[' + b",".join(batch) + b"]}"
        await self.slots.acquire()  # bounded number of requests in flight
        task = asyncio.create_task(self._post(source, payload, len(batch)))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        await self.flush_all()
        if self.tasks:
            await asyncio.gather(*self.tasks)

    async def _post(self, source: str, payload: bytes, count: int) -> None:
        stats = self.stats
        headers = {"Authorization": self.auth[source], "Content-Type": "application/json"}
        try:
            for attempt in range(1, self.max_attempts + 1):
                stats.requests += 1
                try:
                    async with self.session.post(
                        self.endpoint, data=payload, headers=headers
                    ) as response:
                        status = response.status
                        text = await response.text()
                        retry_after = response.headers.get("Retry-After")
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    status, text, retry_after = 0, f"{type(exc).__name__}: {exc}", None
                if status == 200:
                    stats.accepted += count
                    return
                if 400 <= status < 500 or attempt == self.max_attempts:
                    self._reject(status, text, count)
                    return
                stats.retries += 1
                await asyncio.sleep(_retry_delay(retry_after, attempt))
        finally:
            self.slots.release()

    def _reject(self, status: int, text: str, count: int) -> None:
        stats = self.stats
        stats.rejected += count
        key = str(status) if status else "connection"
        stats.errors[key] = stats.errors.get(key, 0) + count
        if stats.first_error is None:
            shown = text if len(text) <= 300 else text[:299] + "…"
            stats.first_error = f"HTTP {status}: {shown}" if status else shown


def _retry_delay(retry_after: str | None, attempt: int) -> float:
    """Retry-After in seconds when given (capped), else exponential backoff from 0.5 s."""
    if retry_after is not None:
        try:
            value = float(retry_after)
        except ValueError:
            value = -1.0
        if 0 <= value < float("inf"):
            return min(value, MAX_RETRY_AFTER)
    return min(0.5 * 2 ** (attempt - 1), MAX_RETRY_AFTER)


async def send(
    envelopes: Iterable[dict[str, Any]],
    url: str,
    write_keys: dict[str, str],
    *,
    speed: float = 60.0,
    sim_start: float | None = None,
    duration: float | None = None,
    max_events: int | None = None,
    progress: Callable[[SendStats], None] | None = None,
    timeout: float = 30.0,
    max_attempts: int = MAX_ATTEMPTS,
    stop: asyncio.Event | None = None,
) -> SendStats:
    """Post `envelopes` (in received_at order) to the collector at `url`.

    `write_keys` maps source -> write key. `speed` is simulated seconds per real second
    (<= 0: as fast as possible); `sim_start` is the simulated time (epoch seconds) that maps to
    the moment sending starts (default: the first envelope's). Stops after `duration` real
    seconds, `max_events` events or when `stop` is set (e.g. on SIGTERM), whichever comes
    first, and then posts what is pending and waits for the requests in flight.
    """
    base = check_url(url)
    if speed != speed or speed == float("inf"):
        raise SendError("speed must be a finite number")
    auth = {source: basic_auth(key) for source, key in write_keys.items()}
    stats = SendStats()
    began = time.monotonic()
    stop_at = began + duration if duration is not None else None
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(timeout=client_timeout, connector=connector) as session:
        batcher = _Batcher(session, base, auth, stats, max(1, max_attempts))
        try:
            for envelope in envelopes:
                if max_events is not None and stats.sent >= max_events:
                    break
                if stop is not None and stop.is_set():
                    break
                source = envelope["source"]
                if source not in auth:
                    raise SendError(
                        f"no write key for source {source!r}; the write-key file has "
                        f"{', '.join(sorted(auth)) or 'none'}"
                    )
                if speed > 0:
                    received = parse_timestamp(envelope["received_at"]) or 0.0
                    if sim_start is None:
                        sim_start = received
                    due = began + (received - sim_start) / speed
                    if stop_at is not None and due >= stop_at:
                        break  # its turn would come after the end
                    while (wait := due - time.monotonic()) > 0:
                        if stop is not None and stop.is_set():
                            break
                        await asyncio.sleep(min(wait, FLUSH_SECONDS))
                        await batcher.flush_due()
                        if progress is not None:
                            progress(stats)
                elif stop_at is not None and time.monotonic() >= stop_at:
                    break
                body = dict(envelope["body"])
                body.pop("sentAt", None)
                await batcher.add(source, body)
                stats.sent += 1
                stats.last_event_time = body.get("timestamp")
                if stats.sent % 200 == 0:
                    await batcher.flush_due()
                    if progress is not None:
                        progress(stats)
                    await asyncio.sleep(0)
        finally:
            await batcher.close()
    if progress is not None:
        progress(stats)
    return stats


HISTORY_CHUNK = 2000  # envelopes per submit: each partition's buffer fills several messages
HISTORY_IN_FLIGHT = 4  # submits awaiting Kafka's acknowledgement at once


async def write_history(
    envelopes: Iterator[dict[str, Any]],
    broker: str,
    *,
    until: Callable[[], float] = time.time,
    progress: Callable[[int, str], None] | None = None,
) -> tuple[int, dict[str, Any] | None]:
    """Write the envelopes received before `until()` (re-read as it goes: the present moves on)
    straight into events.raw on `broker`, partitioned like the collector does, every one of them
    acknowledged by Kafka before this returns. Returns how many were written and the first
    envelope that was not (its turn is still to come), or None when the simulation ended.

    Raises SendError when Kafka cannot be reached or does not acknowledge.
    """
    from aiokafka.errors import KafkaError

    from streams.collector.producer import BatchingProducer, ProducerUnavailable
    from streams.envelope import encode_envelope, partition_key
    from streams.settings import Settings

    try:
        producer = await BatchingProducer.connect(Settings(broker=broker, produce_timeout=60.0))
    except (KafkaError, OSError, ProducerUnavailable) as exc:
        raise SendError(f"cannot write history to Kafka at {broker}: {exc}") from None
    written = 0
    chunk: list[tuple[str, bytes]] = []
    last = ""
    left: dict[str, Any] | None = None
    # a few chunks in flight: the producer keeps each partition's messages in order
    in_flight: deque[asyncio.Task[None]] = deque()

    async def settle(keep: int) -> None:
        nonlocal written
        while len(in_flight) > keep:
            await in_flight.popleft()  # raises ProducerUnavailable
            written += HISTORY_CHUNK
            if progress is not None:
                progress(written, last)

    try:
        for envelope in envelopes:
            last = envelope["received_at"]
            if (parse_timestamp(last) or 0.0) >= until():
                left = envelope
                break
            chunk.append((partition_key(envelope), encode_envelope(envelope)))
            if len(chunk) >= HISTORY_CHUNK:
                in_flight.append(asyncio.create_task(producer.submit(chunk)))
                chunk = []
                await settle(HISTORY_IN_FLIGHT)
        await settle(0)
        if chunk:
            await producer.submit(chunk)
            written += len(chunk)
    except ProducerUnavailable as exc:
        raise SendError(f"Kafka at {broker} did not take the history: {exc}") from None
    finally:
        for task in in_flight:
            task.cancel()
        await producer.close()
    if progress is not None:
        progress(written, last)
    return written, left
