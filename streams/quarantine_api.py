"""Read-only HTTP API over the quarantine (`trackwatch quarantine serve`, loopback by default).

    GET /api/quarantine?since=2h&source=web&event=Order%20Completed&code=wrong_type
                       &version=2026.11.1&limit=50      -> {"records": [...], "count": n}
    GET /api/quarantine/<partition>:<offset>:<index>    -> one record, or 404

Filters take comma-separated values or repeat (`source=web&source=ios`). Every error is a JSON
body ``{"success": false, "code", "message", "field"}``: 400 for a bad parameter, 404 for an
unknown record or path, 405 for anything but GET, 503 (with Retry-After) when Kafka cannot be
read. At most `MAX_CONCURRENT` reads run at once; more get 503 at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from streams.quarantine_view import (
    find_quarantined,
    parse_filter,
    parse_id,
    parse_limit,
    read_quarantine,
)

log = logging.getLogger("trackwatch.quarantine_api")

MAX_CONCURRENT = 2
MAX_QUERY_CHARS = 4096
BOOTSTRAP_KEY: web.AppKey[str] = web.AppKey("bootstrap")
SLOTS_KEY: web.AppKey[asyncio.Semaphore] = web.AppKey("slots")
FILTERS = ("since", "source", "event", "code", "version", "limit")


def is_loopback(host: str) -> bool:
    """Does `host` only listen on this machine?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def response(self) -> web.Response:
        body: dict[str, Any] = {"success": False, "code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        headers = {"Retry-After": "2"} if self.status == 503 else None
        return _json(body, self.status, headers)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def create_quarantine_api(bootstrap: str) -> web.Application:
    """The API's aiohttp application, reading events.quarantine on `bootstrap`."""
    app = web.Application(middlewares=[_errors], client_max_size=1024)
    app[BOOTSTRAP_KEY] = bootstrap
    app[SLOTS_KEY] = asyncio.Semaphore(MAX_CONCURRENT)
    app.router.add_route("*", "/api/quarantine", _list)
    app.router.add_route("*", "/api/quarantine/{id}", _show)
    return app


def _query(request: web.Request) -> dict[str, list[str]]:
    if len(request.query_string) > MAX_QUERY_CHARS:
        raise ApiError(400, "bad_request", f"the query is over {MAX_QUERY_CHARS} characters")
    unknown = sorted(set(request.query) - set(FILTERS))
    if unknown:
        raise ApiError(
            400,
            "bad_request",
            f"unknown parameter {unknown[0][:40]!r}; use {', '.join(FILTERS)}",
            unknown[0][:40],
        )
    return {name: request.query.getall(name, []) for name in FILTERS}


async def _read(request: web.Request, work: Callable[[str], Awaitable[Any]]) -> Any:
    """Run a Kafka read, at most `MAX_CONCURRENT` at once; broker trouble is a 503."""
    from aiokafka.errors import KafkaError

    from streams.quarantine import ReplayError

    slots = request.app[SLOTS_KEY]
    if slots.locked():
        raise ApiError(503, "busy", "too many quarantine reads at once; retry shortly")
    async with slots:
        try:
            return await work(request.app[BOOTSTRAP_KEY])
        except (ReplayError, KafkaError, OSError, TimeoutError) as exc:
            raise ApiError(503, "unavailable", f"cannot read the quarantine: {exc}") from None


async def _list(request: web.Request) -> web.Response:
    if request.method != "GET":
        raise web.HTTPMethodNotAllowed(request.method, ["GET"])
    query = _query(request)
    try:
        since = query["since"][-1] if query["since"] else "1h"
        where = parse_filter(
            since, query["source"], query["event"], query["code"], query["version"]
        )
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc).replace("--", "")) from None
    try:
        limit = parse_limit(query["limit"][-1] if query["limit"] else None)
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc), "limit") from None
    found = await _read(request, lambda b: read_quarantine(b, where, limit))
    return _json({"records": [item.to_json() for item in found], "count": len(found)})


async def _show(request: web.Request) -> web.Response:
    if request.method != "GET":
        raise web.HTTPMethodNotAllowed(request.method, ["GET"])
    if request.query_string:
        raise ApiError(400, "bad_request", "a record takes no parameters")
    try:
        partition, offset, index = parse_id(request.match_info["id"])
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc), "id") from None
    item = await _read(request, lambda b: find_quarantined(b, partition, offset, index))
    if item is None:
        raise ApiError(404, "not_found", f"no quarantined record {partition}:{offset}:{index}")
    return _json(item.to_json())


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as problem:
        return problem.response()
    except web.HTTPException as exc:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        body = {"success": False, "code": code, "message": f"{request.method}: {exc.reason}"}
        return _json(body, exc.status, headers)
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return ApiError(500, "internal_error", "internal error").response()


__all__ = ["ApiError", "create_quarantine_api", "is_loopback"]
