"""The collector's HTTP contract: every 4xx path, auth, limits, gzip, 503, routes and metrics.

These tests are about HTTP, so Kafka is replaced by `FakeSink` (it records what the collector
would write); tests/test_collector_integration.py runs the same app against the real broker.
The server runs on a real socket in a background thread and is called with `http.client`,
which lets the tests send exactly the bytes and headers they want.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import http.client
import socket
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
import pytest

from streams.collector.http import (
    ROUTES,
    EnvelopeSink,
    ProducerUnavailable,
    bound_port,
    create_collector,
    serve_collector,
)
from streams.envelope import decode_batch, parse_received_at
from streams.settings import Settings

WRITE_KEYS = {"wk_web": "web", "wk_ios": "ios", "clé-ünï": "server"}


def basic(key: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{key}:{password}".encode()).decode()


class FakeSink:
    """Records submitted envelopes; fails with ProducerUnavailable while `failing` is set."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []
        self.failing = False

    async def submit(self, items: list[tuple[str, bytes]]) -> None:
        if self.failing:
            raise ProducerUnavailable("broker down (fake)")
        self.items.extend(items)

    def envelopes(self) -> list[dict[str, Any]]:
        return [env for _, data in self.items for env in decode_batch(b"[" + data + b"]")]


class CollectorThread:
    """The collector app on 127.0.0.1:<free port>, served by an event loop in a thread."""

    def __init__(
        self,
        settings: Settings,
        make_sink: Callable[[], Awaitable[EnvelopeSink]],
        write_keys: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.make_sink = make_sink
        self.write_keys = write_keys or WRITE_KEYS
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.sink: Any = None
        self.port = 0

    def run(self, coro: Awaitable[Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def start(self) -> CollectorThread:
        self.thread.start()

        async def up() -> None:
            self.sink = await self.make_sink()
            app = create_collector(self.settings, self.sink, self.write_keys)
            self.runner = await serve_collector(app, "127.0.0.1", 0)
            self.port = bound_port(self.runner)

        self.run(up())
        return self

    def stop(self) -> None:
        async def down() -> None:
            await self.runner.cleanup()
            close = getattr(self.sink, "close", None)
            if close is not None:
                await close()

        try:
            self.run(down())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def post(
        self,
        path: str,
        body: bytes | dict | list | str,
        key: str | None = "wk_web",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """POST and return (status, headers, parsed JSON body or raw text)."""
        if not isinstance(body, bytes):
            body = orjson.dumps(body) if not isinstance(body, str) else body.encode()
        sent = {"Content-Type": "application/json"}
        if key is not None:
            sent["Authorization"] = basic(key)
        sent.update(headers or {})
        return self.request("POST", path, body, sent)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            try:
                parsed: Any = orjson.loads(data)
            except orjson.JSONDecodeError:
                parsed = data.decode("utf-8", "replace")
            return response.status, dict(response.headers), parsed
        finally:
            conn.close()


async def _fake_sink() -> FakeSink:
    return FakeSink()


@pytest.fixture(scope="module")
def server() -> Iterator[CollectorThread]:
    thread = CollectorThread(Settings(), _fake_sink).start()
    yield thread
    thread.stop()


@pytest.fixture
def collector(server: CollectorThread) -> CollectorThread:
    server.sink.items.clear()
    server.sink.failing = False
    return server


def assert_refused(
    collector: CollectorThread, result: tuple[int, dict, Any], status: int, *needles: str
) -> dict:
    """The answer is a JSON refusal with `status` naming every needle; nothing was written."""
    got_status, _headers, body = result
    assert got_status == status, body
    assert isinstance(body, dict), body
    assert body["success"] is False
    text = body["error"] + " " + str(body.get("field", ""))
    for needle in needles:
        assert needle in text, (needle, body)
    assert collector.sink.items == []
    return body


# ---------------------------------------------------------------------------------------------
# Accepted calls
# ---------------------------------------------------------------------------------------------


def test_track_is_accepted_wrapped_and_typed(collector: CollectorThread) -> None:
    call = {"event": "Product Viewed", "anonymousId": "a-1", "properties": {"sku": "X"}}
    status, headers, body = collector.post("/v1/track", call)
    assert (status, body) == (200, {"success": True})
    assert headers["Content-Type"].startswith("application/json")
    [env] = collector.sink.envelopes()
    assert env["source"] == "web"
    assert env["body"] == {**call, "type": "track"}
    assert parse_received_at(env["received_at"]).tzinfo is not None
    assert env["received_at"].endswith("Z")
    [(key, _)] = collector.sink.items
    assert key == "a-1"


@pytest.mark.parametrize("path", [p for p, t in ROUTES.items() if t != "batch"])
def test_every_single_call_route_sets_its_type(collector: CollectorThread, path: str) -> None:
    status, _, _ = collector.post(path, {"userId": "u-7"})
    assert status == 200
    [env] = collector.sink.envelopes()
    assert env["body"]["type"] == ROUTES[path]


def test_batch_keeps_order_sources_and_shared_context(collector: CollectorThread) -> None:
    calls = [
        {"type": "track", "event": f"E{i}", "anonymousId": "a", "context": {"page": {"n": i}}}
        for i in range(20)
    ] + [{"type": "identify", "userId": "u", "context": {"ip": "own"}}]
    payload = {"batch": calls, "context": {"ip": "1.2.3.4", "library": {"name": "x"}}}
    status, _, body = collector.post("/v1/batch", payload, key="wk_ios")
    assert (status, body) == (200, {"success": True})
    envs = collector.sink.envelopes()
    assert [e["body"].get("event") for e in envs] == [f"E{i}" for i in range(20)] + [None]
    assert {e["source"] for e in envs} == {"ios"}
    assert envs[0]["body"]["context"] == {
        "ip": "1.2.3.4",
        "library": {"name": "x"},
        "page": {"n": 0},
    }
    assert envs[-1]["body"]["context"]["ip"] == "own"  # the call's own context wins
    assert len({e["received_at"] for e in envs}) == 1


def test_empty_batch_is_a_no_op(collector: CollectorThread) -> None:
    assert collector.post("/v1/batch", {"batch": []})[0] == 200
    assert collector.sink.items == []


def test_gzip_and_deflate_bodies_are_inflated(collector: CollectorThread) -> None:
    raw = orjson.dumps({"batch": [{"type": "track", "event": "Zipped"}] * 3})
    assert (
        collector.post("/v1/batch", gzip.compress(raw), headers={"Content-Encoding": "gzip"})[0]
        == 200
    )
    assert (
        collector.post("/v1/batch", zlib.compress(raw), headers={"Content-Encoding": "deflate"})[0]
        == 200
    )
    assert [e["body"]["event"] for e in collector.sink.envelopes()] == ["Zipped"] * 6


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/json; charset=utf-8", "application/vnd.segment+json"],
)
def test_json_content_types_are_accepted(collector: CollectorThread, content_type: str) -> None:
    status, _, _ = collector.post(
        "/v1/track", {"event": "E"}, headers={"Content-Type": content_type}
    )
    assert status == 200


def test_odd_unicode_and_nul_survive_unchanged(collector: CollectorThread) -> None:
    props = {"\u0000": "nul\u0000", "ключ": "🎉", "\u202e": "rtl", "a\ufeffb": 1, "": None}
    status, _, _ = collector.post("/v1/track", {"event": "Ünïcödé \U0001f600", "properties": props})
    assert status == 200
    [env] = collector.sink.envelopes()
    assert env["body"]["properties"] == props
    assert env["body"]["event"] == "Ünïcödé \U0001f600"


# ---------------------------------------------------------------------------------------------
# Auth (401)
# ---------------------------------------------------------------------------------------------


def test_missing_write_key_is_401_with_basic_challenge(collector: CollectorThread) -> None:
    result = collector.post("/v1/track", {"event": "E"}, key=None)
    assert_refused(collector, result, 401, "missing write key")
    assert result[1]["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize("key", ["nope", "WK_WEB", "wk_web ", ""])
def test_unknown_write_key_is_401(collector: CollectorThread, key: str) -> None:
    result = collector.post("/v1/track", {"event": "E"}, key=key)
    assert_refused(collector, result, 401, "write key")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer wk_web",
        "Basic",
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"\xff\xfe:").decode(),
    ],
)
def test_malformed_authorization_is_401(collector: CollectorThread, header: str) -> None:
    result = collector.post(
        "/v1/track", {"event": "E"}, key=None, headers={"Authorization": header}
    )
    assert_refused(collector, result, 401, "Authorization")


def test_unicode_write_key_and_key_without_colon(collector: CollectorThread) -> None:
    assert collector.post("/v1/track", {"event": "E"}, key="clé-ünï")[0] == 200
    bare = "Basic " + base64.b64encode(b"wk_ios").decode()
    assert (
        collector.post("/v1/track", {"event": "E"}, key=None, headers={"Authorization": bare})[0]
        == 200
    )
    assert [e["source"] for e in collector.sink.envelopes()] == ["server", "ios"]


def test_write_key_in_body_is_used_and_not_forwarded(collector: CollectorThread) -> None:
    status, _, _ = collector.post(
        "/v1/batch", {"writeKey": "wk_ios", "batch": [{"type": "page", "writeKey": "x"}]}, key=None
    )
    assert status == 200
    [env] = collector.sink.envelopes()
    assert env["source"] == "ios"
    assert "writeKey" not in env["body"]
    collector.sink.items.clear()
    result = collector.post("/v1/track", {"writeKey": "bad", "event": "E"}, key=None)
    assert_refused(collector, result, 401, "unknown write key")


# ---------------------------------------------------------------------------------------------
# Headers (415), size (413), encoding (400)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/octet-stream",
        "image/png",
    ],
)
def test_non_json_content_type_is_415(collector: CollectorThread, content_type: str) -> None:
    result = collector.post("/v1/track", {"event": "E"}, headers={"Content-Type": content_type})
    assert_refused(collector, result, 415, "Content-Type", "application/json")


def test_missing_content_type_is_415(collector: CollectorThread) -> None:
    result = collector.request(
        "POST", "/v1/track", b'{"event":"E"}', {"Authorization": basic("wk_web")}
    )
    assert_refused(collector, result, 415, "Content-Type")


@pytest.mark.parametrize("encoding", ["br", "compress", "zstd", "gzip, gzip"])
def test_unsupported_content_encoding_is_415(collector: CollectorThread, encoding: str) -> None:
    result = collector.post("/v1/track", {"event": "E"}, headers={"Content-Encoding": encoding})
    assert_refused(collector, result, 415, "Content-Encoding")


def test_event_over_32_kb_is_413(collector: CollectorThread) -> None:
    big = {"event": "E", "properties": {"blob": "x" * (32 * 1024)}}
    assert_refused(collector, collector.post("/v1/track", big), 413, "32 KB")


def test_event_just_under_the_limit_is_accepted(collector: CollectorThread) -> None:
    shell = orjson.dumps({"event": "E", "properties": {"blob": ""}, "type": "track"})
    filler = "x" * (32 * 1024 - len(shell))
    assert collector.post("/v1/track", {"event": "E", "properties": {"blob": filler}})[0] == 200


def test_batch_request_over_500_kb_is_413(collector: CollectorThread) -> None:
    calls = [{"type": "track", "event": "E", "properties": {"blob": "x" * 20_000}}] * 30
    assert_refused(collector, collector.post("/v1/batch", {"batch": calls}), 413, "500 KB")


def test_batch_item_over_32_kb_is_413_naming_the_item(collector: CollectorThread) -> None:
    calls = [{"type": "track", "event": "ok"}, {"type": "track", "properties": {"b": "x" * 40_000}}]
    body = assert_refused(
        collector, collector.post("/v1/batch", {"batch": calls}), 413, "batch[1]", "32 KB"
    )
    assert body["field"] == "batch[1]"


def test_batch_item_at_the_limit_as_sent_is_accepted_with_the_batch_fields(
    collector: CollectorThread,
) -> None:
    """The 32 KB limit is the call as the tracker sent it: the batch's sentAt and context the
    collector copies into it do not push it over (found with analytics-node, which sends
    sentAt per batch: a call of 32,758 bytes had its whole batch refused)."""
    shell = orjson.dumps({"type": "track", "event": "E", "properties": {"blob": ""}})
    at_limit = {
        "type": "track",
        "event": "E",
        "properties": {"blob": "x" * (32 * 1024 - len(shell))},
    }
    assert len(orjson.dumps(at_limit)) == 32 * 1024
    batch = {
        "batch": [{"type": "track", "event": "small"}, at_limit],
        "sentAt": "2026-12-01T10:00:00.000Z",
        "context": {"library": {"name": "analytics-node"}},
    }
    status, _, body = collector.post("/v1/batch", batch)
    assert status == 200, body
    stored = [e["body"] for e in collector.sink.envelopes()]
    assert [len(b.get("properties", {}).get("blob", "")) for b in stored] == [
        0,
        32 * 1024 - len(shell),
    ]
    assert all(b["sentAt"] == "2026-12-01T10:00:00.000Z" for b in stored)
    assert all(b["context"]["library"]["name"] == "analytics-node" for b in stored)
    # one byte more as sent is over
    at_limit["properties"]["blob"] += "x"
    collector.sink.items.clear()
    assert_refused(collector, collector.post("/v1/batch", batch), 413, "batch[1]", "32 KB")


def test_batch_context_too_large_for_its_calls_is_413(collector: CollectorThread) -> None:
    """What the collector copies into a call is bounded too: a batch context of many KB on a
    call near the limit is refused, naming why."""
    call = {"type": "track", "event": "E", "properties": {"blob": "x" * 32_000}}
    batch = {"batch": [call], "context": {"page": {"title": "t" * 2000}}}
    assert_refused(collector, collector.post("/v1/batch", batch), 413, "batch[0]", "shared fields")


def test_gzip_bomb_is_refused_without_inflating_it(collector: CollectorThread) -> None:
    bomb = gzip.compress(b'{"batch": [' + b" " * 200_000_000 + b"]}", compresslevel=9)
    assert len(bomb) < 300_000
    result = collector.post("/v1/batch", bomb, headers={"Content-Encoding": "gzip"})
    assert_refused(collector, result, 413, "500 KB")
    assert collector.post("/v1/track", {"event": "after bomb"})[0] == 200  # still serving


def test_gzip_single_event_bomb_is_413(collector: CollectorThread) -> None:
    bomb = gzip.compress(b"{" + b" " * 5_000_000 + b"}")
    result = collector.post("/v1/track", bomb, headers={"Content-Encoding": "gzip"})
    assert_refused(collector, result, 413, "32 KB")


@pytest.mark.parametrize(
    "data", [b"\x1f\x8b\x08garbage", b"not gzip at all", gzip.compress(b'{"a":1}')[:-6]]
)
def test_corrupt_gzip_is_400(collector: CollectorThread, data: bytes) -> None:
    result = collector.post("/v1/track", data, headers={"Content-Encoding": "gzip"})
    assert_refused(collector, result, 400, "Content-Encoding")


# ---------------------------------------------------------------------------------------------
# JSON and shape (400)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "line", "column"),
    [
        (b'{"event": "E",}', 1, 14),
        (b'{\n  "event": "E"\n  "x": 1\n}', 3, 3),
        (b"{'a': 1}", 1, 2),
        (b'{"a": NaN}', 1, 7),
    ],
)
def test_malformed_json_names_line_and_column(
    collector: CollectorThread, data: bytes, line: int, column: int
) -> None:
    result = collector.post("/v1/track", data)
    assert_refused(collector, result, 400, "malformed JSON", f"line {line}, column {column}")


@pytest.mark.parametrize(
    "data", [b"", b"   \n", b"\xff\xfe{}", b'{"a": "\\ud800"}', b'{"a": 1e400}']
)
def test_empty_invalid_utf8_and_unrepresentable_json_are_400(
    collector: CollectorThread, data: bytes
) -> None:
    body = assert_refused(collector, collector.post("/v1/track", data), 400)
    assert body["code"] == "malformed_json"


@pytest.mark.parametrize("payload", [[], [{"event": "E"}], "text", 42, None, True])
def test_single_call_must_be_an_object(collector: CollectorThread, payload: Any) -> None:
    assert_refused(
        collector, collector.post("/v1/track", orjson.dumps(payload)), 400, "JSON object"
    )


def test_type_not_matching_the_route_is_400(collector: CollectorThread) -> None:
    body = assert_refused(
        collector, collector.post("/v1/track", {"type": "page"}), 400, "'page'", "/v1/page"
    )
    assert body["field"] == "type"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"batch": {"type": "track"}}, "batch"),
        ({"calls": []}, "batch"),
        ({"batch": [{"type": "track"}, "x"]}, "batch[1]"),
        ({"batch": [{"event": "E"}]}, "batch[0].type"),
        ({"batch": [{"type": "trak"}]}, "batch[0].type"),
        ({"batch": [{"type": ["track"]}]}, "batch[0].type"),
        ({"batch": [{"type": "track"}, {"type": "batch"}]}, "batch[1].type"),
    ],
)
def test_wrong_batch_shape_names_the_field(
    collector: CollectorThread, payload: Any, field: str
) -> None:
    body = assert_refused(collector, collector.post("/v1/batch", payload), 400, field)
    assert body["field"] == field


def test_batch_that_is_a_list_is_400(collector: CollectorThread) -> None:
    assert_refused(collector, collector.post("/v1/batch", [{"type": "track"}]), 400, "batch")


def test_deep_nesting_is_400_not_a_crash(collector: CollectorThread) -> None:
    for depth in (300, 5000):
        data = ('{"event":"E","properties":' + '{"a":' * depth + "1" + "}" * depth + "}").encode()
        result = collector.post("/v1/track", data)
        assert_refused(collector, result, 400)
    ok = '{"event":"E","properties":' + '{"a":' * 100 + "1" + "}" * 100 + "}"
    assert collector.post("/v1/track", ok.encode())[0] == 200


# ---------------------------------------------------------------------------------------------
# Kafka unavailable (503), routing, health, metrics, CORS, hostile HTTP
# ---------------------------------------------------------------------------------------------


def test_kafka_unavailable_is_503_with_retry_after(collector: CollectorThread) -> None:
    collector.sink.failing = True
    result = collector.post("/v1/batch", {"batch": [{"type": "track"}]})
    assert_refused(collector, result, 503, "retry later")
    assert int(result[1]["Retry-After"]) == Settings().retry_after


def test_unknown_path_and_wrong_method_are_json(collector: CollectorThread) -> None:
    status, _, body = collector.request("GET", "/v1/nope")
    assert status == 404 and body["code"] == "not_found"
    status, headers, body = collector.request("GET", "/v1/track")
    assert status == 405 and body["code"] == "method_not_allowed" and "POST" in headers["Allow"]


def test_healthz_metrics_and_cors_preflight(collector: CollectorThread) -> None:
    assert collector.request("GET", "/healthz")[0] == 200
    collector.post("/v1/track", {"event": "E"}, key="nope")
    status, headers, text = collector.request("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'trackwatch_http_requests_total{route="/v1/track",status="401"}' in text
    assert 'trackwatch_events_collected_total{source="web"}' in text
    assert "trackwatch_http_request_duration_seconds_bucket" in text
    status, headers, _ = collector.request(
        "OPTIONS", "/v1/batch", headers={"Origin": "https://shop.example"}
    )
    assert status == 204 and headers["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in headers["Access-Control-Allow-Headers"]


def _raw_http(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /v1/track HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
        b"POST /v1/track HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(5000))
        + b"\r\n",
        b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\x00\r\n\r\n",
        b"POST /v1/tr\x00ack HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS ClientHello
        b"GARBAGE\r\n\r\n",
    ],
    ids=[
        "huge-header",
        "many-headers",
        "nul-header",
        "nul-path",
        "negative-length",
        "smuggling",
        "tls",
        "garbage",
    ],
)
def test_hostile_http_is_refused_and_server_survives(
    collector: CollectorThread, request_bytes: bytes
) -> None:
    answer = _raw_http(collector.port, request_bytes)
    if answer:  # aiohttp answers a 4xx (or just closes the connection)
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:200]
    assert collector.sink.items == []
    assert collector.post("/v1/track", {"event": "still alive"})[0] == 200


def test_chunked_body_over_the_limit_is_413(collector: CollectorThread) -> None:
    head = (
        b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: " + basic("wk_web").encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b'{"event":"' + b"x" * 40_000
    body = b"%x\r\n%s\r\n" % (len(chunk), chunk) + b'2\r\n"}\r\n0\r\n\r\n'
    answer = _raw_http(collector.port, head + body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert collector.sink.items == []


def test_error_messages_stay_short_with_huge_values(collector: CollectorThread) -> None:
    body = assert_refused(
        collector, collector.post("/v1/track", {"type": "x" * 20_000}), 400, "type"
    )
    assert len(body["error"]) < 300
    body = assert_refused(
        collector, collector.post("/v1/batch", {"batch": [{"type": ["y"] * 5000}]}), 400
    )
    assert len(body["error"]) < 300


def test_analytics_js_batching_route_takes_a_batch(collector: CollectorThread) -> None:
    """analytics.js in "batching" delivery posts to /v1/b, with the write key both in the body
    and as Basic auth (so the browser sends a CORS preflight first): found in Chromium, where
    /v1/b was a 404 and every batched event was lost."""
    status, headers, _ = collector.request(
        "OPTIONS",
        "/v1/b",
        headers={"Origin": "http://shop.example", "Access-Control-Request-Method": "POST"},
    )
    assert status == 204 and "Authorization" in headers["Access-Control-Allow-Headers"]
    batch = {
        "writeKey": "wk_web",
        "batch": [{"type": "page", "name": "Home"}, {"type": "track", "event": "E"}],
        "sentAt": "2026-12-01T10:00:00.000Z",
    }
    status, headers, body = collector.post(
        "/v1/b", orjson.dumps(batch), key=None, headers={"Content-Type": "text/plain"}
    )
    assert (status, body) == (200, {"success": True})
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert [(e["source"], e["body"]["type"]) for e in collector.sink.envelopes()] == [
        ("web", "page"),
        ("web", "track"),
    ]
    assert all("writeKey" not in e["body"] for e in collector.sink.envelopes())
