"""The HTTP sender, against a small aiohttp collector stand-in on the loopback interface."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp import web

from streams.simulator.send import SendError, SendStats, check_url, send
from streams.simulator.traffic import simulate
from tests.conftest import EXAMPLE_PLAN
from tracking_plan.loader import load_plan

KEYS = {"web": "wk_web", "ios": "wk_ios", "android": "wk_android", "server": "wk_server"}
MONDAY = datetime(2026, 11, 2, 18, tzinfo=UTC)


class Collector:
    """Records every request; `answer(n)` decides the response of the n-th request."""

    def __init__(self, answer: Callable[[int], web.Response] | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.answer = answer or (lambda n: web.json_response({"success": True}))

    async def handle(self, request: web.Request) -> web.Response:
        self.times.append(time.monotonic())
        auth = request.headers.get("Authorization", "")
        key = base64.b64decode(auth.removeprefix("Basic ")).decode().removesuffix(":")
        body = orjson.loads(await request.read())
        self.requests.append({"key": key, "path": request.path, "batch": body["batch"]})
        return self.answer(len(self.requests))


async def serve_and_send(
    collector: Collector, envelopes: list[dict[str, Any]], **kw: Any
) -> SendStats:
    app = web.Application()
    app.router.add_post("/v1/batch", collector.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        return await send(envelopes, f"http://127.0.0.1:{port}", KEYS, **kw)
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
def envelopes() -> list[dict[str, Any]]:
    return list(simulate(load_plan(EXAMPLE_PLAN), MONDAY, 0.02, 5000, 3))


def test_everything_arrives_once_per_source_key_without_sent_at(
    envelopes: list[dict[str, Any]],
) -> None:
    collector = Collector()
    stats = asyncio.run(serve_and_send(collector, envelopes, speed=0))
    assert stats.sent == stats.accepted == len(envelopes) > 500
    assert stats.rejected == 0 and stats.first_error is None
    received = [(r["key"], call) for r in collector.requests for call in r["batch"]]
    assert len(received) == len(envelopes)
    by_id = {(e["body"]["messageId"], e["body"]["sentAt"]): e for e in envelopes}
    assert len(by_id) == len(envelopes)
    sent_keys = sorted((KEYS[e["source"]], e["body"]["messageId"]) for e in envelopes)
    assert sorted((key, call["messageId"]) for key, call in received) == sent_keys
    for _key, call in received:
        assert "sentAt" not in call  # event time comes from the simulated `timestamp`
    timestamps = sorted(call["timestamp"] for _, call in received)
    assert timestamps == sorted(e["body"]["timestamp"] for e in envelopes)
    assert all(r["path"] == "/v1/batch" and len(r["batch"]) <= 500 for r in collector.requests)


def test_503_is_retried_after_retry_after(envelopes: list[dict[str, Any]]) -> None:
    def answer(n: int) -> web.Response:
        if n <= 2:
            return web.json_response(
                {"success": False, "error": "kafka unavailable"},
                status=503,
                headers={"Retry-After": "0.3"},
            )
        return web.json_response({"success": True})

    collector = Collector(answer)
    web_only = [e for e in envelopes if e["source"] == "web"][:100]
    stats = asyncio.run(serve_and_send(collector, web_only, speed=0))
    assert stats.accepted == 100 and stats.rejected == 0
    assert stats.retries == 2 and stats.requests == 3
    assert collector.times[1] - collector.times[0] >= 0.29
    assert collector.times[2] - collector.times[1] >= 0.29


def test_4xx_rejects_the_batch_and_keeps_the_first_error(envelopes: list[dict[str, Any]]) -> None:
    def answer(n: int) -> web.Response:
        body = {"success": False, "code": "bad_shape", "error": "batch[0].type is odd"}
        return web.json_response(body, status=400)

    stats = asyncio.run(serve_and_send(Collector(answer), envelopes[:50], speed=0))
    assert stats.rejected == 50 and stats.accepted == 0 and stats.retries == 0
    assert stats.first_error is not None and "batch[0].type is odd" in stats.first_error
    assert stats.errors == {"400": 50}


def test_bounded_by_max_events(envelopes: list[dict[str, Any]]) -> None:
    collector = Collector()
    stats = asyncio.run(serve_and_send(collector, envelopes, speed=0, max_events=123))
    assert stats.sent == stats.accepted == 123
    assert sum(len(r["batch"]) for r in collector.requests) == 123


def test_time_compression_and_duration(envelopes: list[dict[str, Any]]) -> None:
    """At speed 60 one simulated minute takes a real second: stopping after 1.5 s sends only
    the events of the first ~90 simulated seconds."""
    start = MONDAY.timestamp()
    collector = Collector()
    stats = asyncio.run(
        serve_and_send(collector, envelopes, speed=60, sim_start=start, duration=1.5)
    )
    first_90s = [e for e in envelopes if e["received_at"] < "2026-11-02T18:01:30"]
    first_60s = [e for e in envelopes if e["received_at"] < "2026-11-02T18:01:00"]
    assert len(first_60s) <= stats.sent <= len(first_90s) < len(envelopes)
    assert stats.accepted == stats.sent


def test_unreachable_collector_counts_rejections(envelopes: list[dict[str, Any]]) -> None:
    web_only = [e for e in envelopes if e["source"] == "web"][:10]

    async def go() -> SendStats:
        return await send(web_only, "http://127.0.0.1:9", KEYS, speed=0, max_attempts=2)

    stats = asyncio.run(go())
    assert stats.rejected == 10 and stats.accepted == 0 and stats.retries == 1
    assert stats.errors == {"connection": 10}


def test_unknown_source_and_bad_urls(envelopes: list[dict[str, Any]]) -> None:
    with pytest.raises(SendError, match="no write key for source 'web'"):
        asyncio.run(send(envelopes[:5], "http://127.0.0.1:9", {"ios": "k"}, speed=0))
    for url in ("ftp://example.com", "127.0.0.1:8080", "http://", "http://h:1/?a=1", "☃"):
        with pytest.raises(SendError):
            check_url(url)
    assert check_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"


def test_stop_event_ends_sending_cleanly(envelopes: list[dict[str, Any]]) -> None:
    """What SIGTERM does in the CLI: stop taking events, post what is pending, report."""

    async def go() -> tuple[SendStats, Collector]:
        collector = Collector()
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.8, stop.set)
        stats = await serve_and_send(
            collector, envelopes, speed=60, sim_start=MONDAY.timestamp(), stop=stop
        )
        return stats, collector

    began = time.monotonic()
    stats, collector = asyncio.run(go())
    assert time.monotonic() - began < 10  # it did not replay the whole half hour
    assert 0 < stats.sent < len(envelopes)
    assert stats.accepted == stats.sent == sum(len(r["batch"]) for r in collector.requests)
