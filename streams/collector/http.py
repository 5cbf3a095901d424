"""The Segment-compatible HTTP collector: POST /v1/track|page|screen|identify|group|alias|batch.

A request is answered ``200 {"success": true}`` only after Kafka acknowledged every event it
carried (acks=all). Events are micro-batched towards Kafka (`BatchingProducer`): per partition of
events.raw, one Kafka message per `flush_interval` or `max_batch_envelopes`, and each request
awaits the batches holding its events. Bad input gets a 4xx JSON body naming the problem:

    {"success": false, "code": "bad_shape", "message": "<what is wrong>", "error": "<the same>",
     "field": "batch[3].type"}

(`message` is what Segment-compatible SDKs read; `error` repeats it for older clients.)

The write key (HTTP Basic user name, or ``writeKey`` in the body as analytics.js sends it) picks
the event's source; the key itself is never forwarded to Kafka.

Personal data never reaches Kafka: before a call is encoded, the values of the plan's forbidden
PII names are redacted and those of its `pii: true` properties replaced by a keyed hash
(`tracking_plan.pii.PiiMasker`, key `TRACKWATCH_PII_KEY`). The collector reads those rules from
its plan file (`settings.plan`) when it starts.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from streams.collector.producer import BatchingProducer, ProducerUnavailable
from streams.envelope import envelope_prefix, partition_key_of_body, utc_now_iso
from streams.metrics import COLLECTED, HTTP_LATENCY, HTTP_REQUESTS
from streams.settings import Settings, SettingsError, load_write_keys
from tracking_plan.pii import PiiMasker

log = logging.getLogger("trackwatch.collector")

__all__ = [  # BatchingProducer and ProducerUnavailable come from streams.collector.producer
    "ROUTES",
    "BatchingProducer",
    "EnvelopeSink",
    "Problem",
    "ProducerUnavailable",
    "bound_port",
    "create_collector",
    "encode_calls",
    "inflate",
    "pii_masker",
    "serve_collector",
    "take_write_key",
]

# Route path -> the Segment call type it accepts ("batch" takes a list of calls).
ROUTES: dict[str, str] = {
    "/v1/track": "track",
    "/v1/t": "track",
    "/v1/page": "page",
    "/v1/p": "page",
    "/v1/screen": "screen",
    "/v1/identify": "identify",
    "/v1/i": "identify",
    "/v1/group": "group",
    "/v1/g": "group",
    "/v1/alias": "alias",
    "/v1/a": "alias",
    "/v1/batch": "batch",
    "/v1/b": "batch",  # analytics.js with deliveryStrategy "batching"
    "/v1/import": "batch",
}
CALL_TYPES = ("track", "page", "screen", "identify", "group", "alias")
# What the collector may add to a call within the per-event limit (the batch's sentAt, context
# and integrations, keyed hashes of personal values): settings keep 1 KB of room per Kafka message
ADDED_BYTES = 512
JSON_CONTENT_TYPES = ("application/json", "text/plain")  # analytics.js beacons use text/plain
CONTENT_ENCODINGS = ("identity", "gzip", "deflate")  # inflated here, with bounded output
MAX_JSON_DEPTH = 250  # orjson cannot re-encode deeper documents
COLLECTOR_KEY: web.AppKey[Collector] = web.AppKey("collector")


class EnvelopeSink(Protocol):
    """Where the collector hands encoded envelopes: `BatchingProducer`, or a fake in unit tests."""

    async def submit(self, items: list[tuple[str, bytes]]) -> None:
        """Write (partition key, encoded envelope) pairs; return once Kafka acknowledged all of
        them, raise ProducerUnavailable otherwise."""
        ...


class Problem(Exception):
    """A request the collector refuses, with the HTTP status and a message naming the problem."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, close: bool = False
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.close = close  # the body was not read to its end: do not reuse the connection

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        # `message` is what Segment-style SDKs read (rudder-sdk-python, analytics-python);
        # `error` carries the same text for clients of earlier trackwatch versions.
        body: dict[str, Any] = {
            "success": False,
            "code": self.code,
            "message": self.message,
            "error": self.message,
        }
        if self.field is not None:
            body["field"] = self.field
        response = _json(body, status=self.status, headers=headers)
        if self.close:
            response.force_close()
        return response


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Collector:
    """The state behind the routes: settings, write keys and the sink."""

    settings: Settings
    write_keys: dict[str, str]
    sink: EnvelopeSink
    masker: PiiMasker | None = None

    def source_for(self, key: str | None) -> str:
        if not key:
            raise Problem(
                401,
                "unauthorized",
                "missing write key: send it as the HTTP Basic user name (password empty)",
            )
        source = self.write_keys.get(key)
        if source is None:
            raise Problem(401, "unauthorized", "unknown write key")
        return source


def basic_auth_user(header: str | None) -> str | None:
    """The user name of an HTTP Basic Authorization header (None if there is no header)."""
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "basic" or not credentials.strip():
        raise Problem(401, "unauthorized", "Authorization must be HTTP Basic with the write key")
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Problem(
            401, "unauthorized", "Authorization header is not valid base64 of 'writekey:'"
        ) from None
    user, _, _password = decoded.partition(":")
    return user


def _check_headers(request: web.Request) -> None:
    if request.content_type not in JSON_CONTENT_TYPES and not request.content_type.endswith(
        "+json"
    ):
        raise Problem(
            415,
            "unsupported_media_type",
            f"Content-Type {request.content_type!r} is not accepted: send application/json",
            "Content-Type",
        )
    encoding = _content_encoding(request)
    if encoding not in CONTENT_ENCODINGS:
        raise Problem(
            415,
            "unsupported_encoding",
            f"Content-Encoding {encoding!r} is not accepted: use gzip, deflate or none",
            "Content-Encoding",
        )


def _content_encoding(request: web.Request) -> str:
    return request.headers.get("Content-Encoding", "identity").strip().lower() or "identity"


async def _read_body(request: web.Request, limit: int, what: str) -> bytes:
    """Read and inflate the body, refusing it as soon as it exceeds `limit` bytes.

    The server runs with aiohttp's auto_decompress off (`serve_collector`): the collector inflates
    gzip/deflate itself, chunk by chunk with a bounded output, so a decompression bomb costs at
    most `limit` bytes of memory, and every encoding error gets a JSON answer.
    """
    too_large = Problem(
        413,
        "payload_too_large",
        f"{what} exceeds the limit of {limit // 1024} KB ({limit} bytes)",
        close=True,
    )
    encoding = _content_encoding(request)
    if request.content_length is not None and request.content_length > limit:
        raise too_large  # compressed bodies are never larger than their content here
    inflater = _Inflater(encoding) if encoding != "identity" else None
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.content.iter_any():
            if inflater is not None:
                chunk = inflater.feed(chunk, limit - total)
            total += len(chunk)
            if total > limit:
                raise too_large
            chunks.append(chunk)
        if inflater is not None:
            inflater.finish()
    except (HttpProcessingError, RequestPayloadError, zlib.error, _Truncated) as exc:
        raise Problem(
            400,
            "bad_encoding",
            f"cannot read the {encoding} request body: {exc}",
            "Content-Encoding",
            close=True,
        ) from None
    return b"".join(chunks)


class _Truncated(Exception):
    """The compressed stream ended early or carries trailing bytes."""


class _Inflater:
    """Bounded gzip/deflate decoder: never produces more output than asked for."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.decoder: Any = None

    def feed(self, data: bytes, room: int) -> bytes:
        """Inflate `data`; returns at most room + 1 bytes (more than `room` means: too large)."""
        if self.decoder is None:
            # gzip, or zlib-wrapped deflate (auto-detected); raw deflate if no zlib header.
            raw_deflate = self.encoding == "deflate" and bool(data) and data[0] & 0x0F != 8
            self.decoder = zlib.decompressobj(-zlib.MAX_WBITS if raw_deflate else 32 + 15)
        if self.decoder.eof:
            if data:
                raise _Truncated("bytes after the end of the compressed stream")
            return b""
        # Output is capped at room + 1: input left in unconsumed_tail only matters when the body
        # is too large anyway, which the caller then refuses.
        return self.decoder.decompress(data, max(room, 0) + 1)

    def finish(self) -> None:
        if self.decoder is None:
            raise _Truncated("empty compressed body")
        if not self.decoder.eof:
            raise _Truncated("the compressed stream is truncated")
        if self.decoder.unused_data:
            raise _Truncated("bytes after the end of the compressed stream")


def _parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise Problem(400, "malformed_json", "the request body is empty: send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(
            400,
            "malformed_json",
            f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
        ) from None


def _encode_body(body: dict[str, Any], where: str) -> bytes:
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError as exc:  # nesting deeper than orjson re-encodes
        raise Problem(
            400, "bad_shape", f"{where} cannot be stored: {exc} (max depth {MAX_JSON_DEPTH})", where
        ) from None


def _short(value: Any, limit: int = 60) -> str:
    """A printable, bounded description of a client's value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _single_call(payload: Any, call_type: str) -> list[dict[str, Any]]:
    if not isinstance(payload, dict):
        raise Problem(
            400,
            "bad_shape",
            f"the body must be a JSON object (a {call_type} call), got {type(payload).__name__}",
        )
    sent_type = payload.get("type")
    if sent_type is not None and sent_type != call_type:
        raise Problem(
            400,
            "bad_shape",
            f"type is {_short(sent_type)} but this route takes {call_type!r} calls "
            f"(use /v1/{sent_type if sent_type in CALL_TYPES else 'batch'} or drop the field)",
            "type",
        )
    payload["type"] = call_type
    return [payload]


def _batch_calls(payload: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The calls of a batch, and what the batch gives them all (`_add_shared`)."""
    if not isinstance(payload, dict):
        raise Problem(
            400,
            "bad_shape",
            f'the body must be a JSON object {{"batch": [...]}}, got {type(payload).__name__}',
        )
    calls = payload.get("batch")
    if not isinstance(calls, list):
        got = "missing" if calls is None else f"a {type(calls).__name__}"
        raise Problem(400, "bad_shape", f"batch must be a list of calls, got {got}", "batch")
    shared = {
        k: payload[k] for k in ("context", "integrations") if isinstance(payload.get(k), dict)
    }
    sent_at = payload.get("sentAt")  # SDKs stamp the whole batch: each call's clock-skew base
    for index, call in enumerate(calls):
        where = f"batch[{index}]"
        if not isinstance(call, dict):
            raise Problem(
                400, "bad_shape", f"{where} must be a JSON object, got {type(call).__name__}", where
            )
        call_type = call.get("type")
        if call_type not in CALL_TYPES:
            got = "missing" if call_type is None else _short(call_type)
            raise Problem(
                400,
                "bad_shape",
                f"{where}.type must be one of {', '.join(CALL_TYPES)}; got {got}",
                f"{where}.type",
            )
        call.pop("writeKey", None)
    if sent_at is not None:
        shared["sentAt"] = sent_at
    return calls, shared


def _add_shared(call: dict[str, Any], shared: dict[str, Any]) -> bool:
    """Apply a batch's `sentAt`, `context` and `integrations` to one of its calls (the call's
    own values win); whether the call changed."""
    changed = False
    for name, values in shared.items():
        own = call.get(name)
        if name == "sentAt":
            if name not in call:
                call[name] = values
                changed = True
        elif isinstance(own, dict):
            changed = changed or not values.keys() <= own.keys()
            call[name] = {**values, **own}
        else:
            call[name] = dict(values)
            changed = True
    return changed


def take_write_key(payload: Any) -> str | None:
    """Remove a body ``writeKey`` (never forwarded) and return it if it is a string."""
    key = payload.pop("writeKey", None) if isinstance(payload, dict) else None
    return key if isinstance(key, str) else None


def encode_calls(
    payload: Any, call_type: str, max_event_bytes: int, masker: PiiMasker | None = None
) -> list[tuple[str, bytes]]:
    """Check the shape of a parsed request and encode its calls: [(partition key, body JSON)].

    `call_type` is the route's type or "batch"; `masker` replaces personal values first.
    Raises Problem (400 shape, 413 event size).
    """
    is_batch = call_type == "batch"
    calls, shared = _batch_calls(payload) if is_batch else (_single_call(payload, call_type), {})
    encoded: list[tuple[str, bytes]] = []
    for index, call in enumerate(calls):
        where = f"batch[{index}]" if is_batch else "the event"
        # the limit applies to the call as the tracker sent it (as Segment's does), not to what
        # the collector adds below: a tracker cannot know about the batch's sentAt copied into
        # each call, nor about keyed hashes longer than the values they replace
        body = _encode_body(call, where)
        if len(body) > max_event_bytes:
            raise _too_large(where, len(body), max_event_bytes, is_batch)
        changed = _add_shared(call, shared)
        if masker is not None:
            changed = masker.mask(call) > 0 or changed
        if changed:
            body = _encode_body(call, where)
            if len(body) > max_event_bytes + ADDED_BYTES:  # a batch context of many KB
                raise _too_large(where, len(body), max_event_bytes, is_batch, added=True)
        encoded.append((partition_key_of_body(call), body))
    return encoded


def _too_large(where: str, size: int, limit: int, is_batch: bool, added: bool = False) -> Problem:
    what = " once the batch's shared fields and keyed hashes are added" if added else ""
    return Problem(
        413,
        "payload_too_large",
        f"{where} is {size} bytes{what}, over the per-event limit of {limit // 1024} KB",
        where if is_batch else None,
    )


def inflate(data: bytes, encoding: str, limit: int) -> bytes:
    """Decode a whole gzip/deflate body at once with the collector's bounds (tests, fuzzing).

    Raises Problem: 413 past `limit` bytes, 400 for a corrupt or truncated stream.
    """
    if encoding == "identity":
        return data
    inflater = _Inflater(encoding)
    try:
        out = inflater.feed(data, limit)
        if len(out) > limit:
            raise Problem(413, "payload_too_large", f"the body exceeds {limit} bytes")
        inflater.finish()
    except (zlib.error, _Truncated) as exc:
        raise Problem(400, "bad_encoding", f"cannot read the {encoding} body: {exc}") from None
    return out


def pii_masker(settings: Settings) -> PiiMasker:
    """The masker of the plan file `settings.plan` with the key `settings.pii_key`.

    Raises SettingsError naming the plan when it cannot be loaded: a collector that does not
    know the PII rules must not start (it would write personal data to Kafka).
    """
    from tracking_plan.loader import PlanError, load_plan

    try:
        plan = load_plan(settings.plan)
    except PlanError as exc:
        raise SettingsError(
            f"the collector reads its PII rules from the tracking plan: {exc} "
            "(pass --plan FILE or set TRACKWATCH_PLAN)"
        ) from None
    key = settings.pii_key.encode("utf-8", "surrogatepass") if settings.pii_key else None
    masker = PiiMasker(plan, key)
    if masker.declared and key is None:
        log.warning(
            "TRACKWATCH_PII_KEY is not set: values of pii: true properties are redacted "
            "instead of replaced by a keyed hash (set it to keep joins on them)"
        )
    return masker


def create_collector(
    settings: Settings,
    producer: EnvelopeSink,
    write_keys: dict[str, str] | None = None,
    masker: PiiMasker | None = None,
) -> web.Application:
    """The collector's aiohttp application.

    `producer` receives the encoded envelopes (a `BatchingProducer` in production); the caller
    owns its lifetime. `write_keys` ({key: source}) defaults to the file `settings.write_keys`;
    `masker` (the plan's PII rules) to `pii_masker(settings)`, which loads `settings.plan`.
    Run the app with `serve_collector` (or any aiohttp runner).
    """
    if write_keys is None:
        write_keys = load_write_keys(settings.write_keys)
    if masker is None:
        masker = pii_masker(settings)
    collector = Collector(settings, write_keys, producer, masker)
    app = web.Application(middlewares=[_problems_and_metrics], client_max_size=1024)
    app[COLLECTOR_KEY] = collector
    for path in ROUTES:
        app.router.add_post(path, _collect)
        app.router.add_route("OPTIONS", path, _preflight)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    return app


CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Content-Encoding",
    "Access-Control-Max-Age": "86400",
}


async def _preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=CORS_HEADERS)


async def _collect(request: web.Request) -> web.Response:
    collector = request.app[COLLECTOR_KEY]
    settings = collector.settings
    call_type = ROUTES[request.match_info.route.resource.canonical]
    header_key = basic_auth_user(request.headers.get("Authorization"))
    source = collector.source_for(header_key) if header_key is not None else None
    _check_headers(request)
    is_batch = call_type == "batch"
    limit = settings.max_request_bytes if is_batch else settings.max_event_bytes
    raw = await _read_body(request, limit, "the batch request" if is_batch else "the event")
    payload = _parse_json(raw)
    body_key = take_write_key(payload)
    if source is None:  # analytics.js may send the key in the body
        source = collector.source_for(body_key)
    prefix = envelope_prefix(source, utc_now_iso())
    items = [
        (key, prefix + body + b"}")
        for key, body in encode_calls(
            payload, call_type, settings.max_event_bytes, collector.masker
        )
    ]
    try:
        await collector.sink.submit(items)
    except ProducerUnavailable as exc:
        raise Problem(503, "unavailable", f"events not accepted, retry later: {exc}") from None
    if items:
        COLLECTED.labels(source=source).inc(len(items))
    return _json({"success": True}, headers={"Access-Control-Allow-Origin": "*"})


async def _healthz(request: web.Request) -> web.Response:
    """200 ``{"status": "ok"}`` while Kafka acknowledges; 503 ``{"status": "degraded",
    "reason": ...}`` when the collector cannot deliver (see `BatchingProducer.health`)."""
    sink = request.app[COLLECTOR_KEY].sink
    health = getattr(sink, "health", None)
    if health is not None:
        state = dict(await health())
    else:  # a sink without a health report (tests): judge by its last error
        error = getattr(sink, "last_error", None)
        state = {"ok": error is None, "reason": error, "kafka_error": error}
    ok = bool(state.pop("ok"))
    body = {"status": "ok" if ok else "degraded", **state}
    headers = None if ok else {"Retry-After": str(request.app[COLLECTOR_KEY].settings.retry_after)}
    return _json(body, status=200 if ok else 503, headers=headers)


async def _metrics(request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(REGISTRY))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _problems_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every refusal into a JSON body; count and time every answer by route and status."""
    started = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    try:
        response = await handler(request)
    except Problem as problem:
        headers: dict[str, str] = {"Access-Control-Allow-Origin": "*"}
        if problem.status == 503:
            headers["Retry-After"] = str(request.app[COLLECTOR_KEY].settings.retry_after)
        if problem.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="trackwatch"'
        response = problem.response(headers)
    except web.HTTPException as exc:  # routing: 404, 405
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        response = Problem(
            exc.status, code, f"{request.method} {request.path}: {exc.reason}"
        ).response({k: v for k, v in exc.headers.items() if k.lower() == "allow"})
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        response = Problem(
            500, "internal_error", "internal error; the event was not accepted"
        ).response()
    if route not in ("/metrics", "/healthz"):
        HTTP_REQUESTS.labels(route=route, status=str(response.status)).inc()
        HTTP_LATENCY.labels(route=route).observe(time.perf_counter() - started)
    return response


# --------------------------------------------------------------------------------------------
# Running it
# --------------------------------------------------------------------------------------------

# aiohttp server options: header limits; bodies are inflated by the collector (see _read_body);
# a refused body is drained for at most 1 s before the connection is closed.
SERVER_OPTIONS = {
    "max_line_size": 8190,
    "max_field_size": 8190,
    "lingering_time": 1.0,
    "auto_decompress": False,
}


async def serve_collector(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start `app` on host:port (port 0 picks a free one); returns the runner to clean up."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, **SERVER_OPTIONS)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port a started runner listens on."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the collector is not listening on TCP")
