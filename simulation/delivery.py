"""How calls travel from the SDKs to the collector: when each is sent and received, in which
request.

- The website (analytics.js) sends every call at once; a few wait for a retry.
- The apps queue calls and flush the queue when it holds 20, 30 seconds after the first
  queued call, and when the app goes to the background. A session without connectivity keeps
  its queue until the phone is back online, hours later: the batch then arrives with its
  original timestamps and a `sentAt` of the flush. An app killed before its last flush loses
  that queue.
- The backend (analytics-python) flushes its queue every 10 seconds.

Each request is received at one time (all its calls share `received_at`). Delivery is decided
from a session's calls as the SDK queued them, before incidents change them, and every random
draw is keyed by the session and the call: an incident that removes a call does not move the
others.
"""

from __future__ import annotations

import math

from simulation.journeys import SOURCES, Call
from simulation.randomness import key, split, unit

FLUSH_AT = 20
FLUSH_INTERVAL = 30.0
SERVER_FLUSH = 10.0
BATCH_LIMIT = 100  # calls per request when a backlog is flushed
OFFLINE_MEDIAN = 3.0 * 3600.0  # a queued backlog goes out this long after the session, median
OFFLINE_MIN, OFFLINE_MAX = 15 * 60.0, 30 * 3600.0


def _spread(u: float, median: float, sigma: float) -> float:
    """A positive, right-skewed amount around `median` for the uniform draw `u` (a logistic
    draw scaled to a standard normal's spread, exponentiated with `sigma`)."""
    z = math.log(max(u, 1e-12) / max(1 - u, 1e-12)) * 0.55
    return median * math.exp(sigma * z)


def _latency(u: float, median: float) -> float:
    """Network time of a request, seconds."""
    return _spread(u, median, 0.6)


def deliver_web(call: Call, seed: int, tag: int) -> None:
    """A website call: sent at once, received a moment later (0.3 %: after a retry)."""
    request = key(seed, tag, call.body["messageId"])
    u1, u2 = split(request)
    call.sent = call.ts + 0.02 + 0.2 * u1
    call.received = call.sent + _latency(u2, 0.12)
    if u1 < 0.003:
        call.received += 5.0 + 55.0 * u2
    call.request = request


def deliver_server(call: Call, seed: int, tag: int) -> None:
    """A backend call: sent with its batch at the next 10-second flush."""
    flush = math.floor(call.ts / SERVER_FLUSH + 1.0) * SERVER_FLUSH
    call.sent = flush
    call.received = flush + _latency(unit(seed, tag, int(flush)), 0.05)
    call.request = key(seed, tag, int(flush))


def deliver_session(
    calls: list[Call], seed: int, session: int, offline: bool, killed: bool
) -> list[Call]:
    """Give each call of a session its sent and received times; returns the calls delivered
    (an app killed before its last flush loses the rest)."""
    app: list[Call] = []
    for call in calls:
        if call.source == SOURCES["server"]:
            deliver_server(call, seed, 11)
        elif call.source == SOURCES["web"]:
            deliver_web(call, seed, 12)
        else:
            app.append(call)
    lost: set[int] = set()
    if app:
        lost = _deliver_app(app, seed, session, offline, killed)
    return [c for c in calls if id(c) not in lost]


def _deliver_app(
    calls: list[Call], seed: int, session: int, offline: bool, killed: bool
) -> set[int]:
    """The mobile SDK's queue (see the module docstring); the ids of the calls it lost."""
    end = calls[-1].ts + 0.5  # backgrounded: flush
    if offline:
        delay = _spread(unit(seed, session, 21), OFFLINE_MEDIAN, 1.0)
        back = end + min(OFFLINE_MAX, max(OFFLINE_MIN, delay))
        for start in range(0, len(calls), BATCH_LIMIT):
            batch = calls[start : start + BATCH_LIMIT]
            at = back + start / BATCH_LIMIT
            _send(batch, at, seed, session, start)
        return set()
    queue: list[Call] = []
    flushes = 0
    for call in calls:
        # the timer flushes a queue 30 s after its first call, before this call is queued
        if queue and call.ts >= queue[0].ts + FLUSH_INTERVAL:
            _send(queue, queue[0].ts + FLUSH_INTERVAL, seed, session, flushes)
            flushes, queue = flushes + 1, []
        queue.append(call)
        if len(queue) >= FLUSH_AT:
            _send(queue, call.ts + 0.05, seed, session, flushes)
            flushes, queue = flushes + 1, []
    if queue:
        if killed:
            return {id(c) for c in queue}
        _send(queue, max(end, queue[-1].ts + 0.05), seed, session, flushes)
    return set()


def _send(batch: list[Call], at: float, seed: int, session: int, number: int) -> None:
    received = at + _latency(unit(seed, session, 22, number), 0.35)
    request = key(seed, session, 23, number)
    for call in batch:
        call.sent, call.received, call.request = at, received, request
