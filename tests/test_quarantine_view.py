"""Reading the quarantine: record parsing (any bytes), filters and ids from hostile input, the CLI
options and the read-only HTTP API against the real embedded broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer
from typer.testing import CliRunner

from streams.broker import EmbeddedBroker
from streams.cli.app import app as cli_app
from streams.quarantine_api import create_quarantine_api, is_loopback
from streams.quarantine_view import (
    QuarantinedEvent,
    parse_filter,
    parse_id,
    parse_limit,
    read_quarantine,
)
from streams.topics import QUARANTINE

RUNNER = CliRunner()


def record(mid: str, source: str, event: str, code: str, version: str = "v1") -> dict[str, Any]:
    body = {"type": "track", "event": event, "messageId": mid, "userId": "u"}
    return {
        "envelope": {"source": source, "received_at": "2026-01-01T00:00:00.000Z", "body": body},
        "violations": [{"code": code, "path": "$.properties.x", "expected": "a", "got": "b"}],
        "plan_version": version,
    }


# ------------------------------------------------------------------------------- pure parts


def test_records_of_a_message_and_of_garbage() -> None:
    value = orjson.dumps([record("m1", "web", "E", "wrong_type"), {"nope": 1}, 3])
    items = QuarantinedEvent.of_message(2, 15, 1_700_000_000_000, value)
    assert [i.id for i in items] == ["2:15:0", "2:15:1", "2:15:2"]
    assert (items[0].source, items[0].event, items[0].codes) == ("web", "E", ("wrong_type",))
    assert items[1].codes == ("unreadable",) and items[2].codes == ("unreadable",)
    garbage = QuarantinedEvent.of_message(0, 0, -5, b"\xff\x00not json")
    assert garbage[0].codes == ("unreadable",) and garbage[0].to_json()["record"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.builds(lambda v: orjson.dumps(v), st.from_type(dict)))
def test_any_message_gives_records_never_an_error(value: bytes) -> None:
    for item in QuarantinedEvent.of_message(0, 1, 0, value):
        orjson.dumps(item.to_json(), option=orjson.OPT_NON_STR_KEYS)


@pytest.mark.parametrize(
    "bad",
    ["", "1:2", "a:b:c", "1:2:3:4", "-1:2:3", "1:99999999999999999999:0", "١:٢:٣", "1:2:3\x00"],
)
def test_hostile_ids_are_refused_with_a_hint(bad: str) -> None:
    with pytest.raises(ValueError, match=r"quarantine id|beyond"):
        parse_id(bad)


def test_filters_from_hostile_input() -> None:
    assert parse_filter(None, ["web,ios", " web "]).sources == {"web", "ios"}
    assert parse_filter(None, None, ["Order Completed", "é\u200f"]).events == {
        "Order Completed",
        "é\u200f",
    }
    for kwargs, message in (
        ({"since": "soon"}, "neither a duration"),
        ({"since": "9" * 80}, "longer than 64"),
        ({"since": "2999-01-01"}, "future"),
        ({"sources": ["x" * 201]}, "longer than 200"),
        ({"codes": [",".join(str(i) for i in range(21))]}, "at most 20"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_filter(**kwargs)
    for bad in ("0", "1001", "ten", "1e3", "-5"):
        with pytest.raises(ValueError, match="limit"):
            parse_limit(bad)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")


# ------------------------------------------------------------------------------- on the broker


@pytest.fixture(scope="module")
def quarantine(broker: EmbeddedBroker) -> tuple[str, str]:
    """Records of a run of their own on the session broker's events.quarantine."""
    run = uuid.uuid4().hex[:8]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    messages = [
        [record(f"{run}-1", "web", "Order Completed", "wrong_type")],
        [record(f"{run}-2", "ios", "Signed Up", "not_in_enum", "v2"), {"garbage": True}],
        [record(f"{run}-3", "web", "Ünïcode ✓", "pii_detected")],
    ]
    for value in messages:
        producer.send(QUARANTINE, orjson.dumps(value), partition=0)
    producer.send(QUARANTINE, b"\x00 not json", partition=1)
    producer.flush()
    producer.close()
    return broker.bootstrap, run


def _mine(items: list[Any], run: str) -> set[str]:
    return {i.message_id for i in items if (i.message_id or "").startswith(run)}


@pytest.mark.integration
def test_read_with_filters(quarantine: tuple[str, str]) -> None:
    bootstrap, run = quarantine

    def read(**kwargs: Any) -> set[str]:
        where = parse_filter("1h", **kwargs)
        return _mine(asyncio.run(read_quarantine(bootstrap, where, 1000)), run)

    assert read() == {f"{run}-1", f"{run}-2", f"{run}-3"}
    assert read(sources=["web"]) == {f"{run}-1", f"{run}-3"}
    assert read(events=["Ünïcode ✓"]) == {f"{run}-3"}
    assert read(codes=["not_in_enum,wrong_type"]) == {f"{run}-1", f"{run}-2"}
    assert read(versions=["v2"]) == {f"{run}-2"}
    newest = asyncio.run(read_quarantine(bootstrap, parse_filter("1h"), 1))
    assert len(newest) == 1
    future = asyncio.run(read_quarantine(bootstrap, parse_filter(time.strftime("%Y-%m-%d")), 5))
    assert len(future) <= 5


@pytest.mark.integration
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "--since", "yesterday-ish"], "neither a duration"),
        (["list", "--limit", "0"], "limit"),
        (["list", "--source", "x" * 300], "longer than 200"),
        (["show", "not-an-id"], "not a quarantine id"),
        (["show", "0:999999999:0"], "no quarantined record"),
        (["tail", "--since", "\u202e1h"], "neither a duration"),
    ],
)
def test_cli_refuses_bad_options_in_one_line(
    quarantine: tuple[str, str], args: list[str], message: str
) -> None:
    bootstrap, _ = quarantine
    result = RUNNER.invoke(cli_app, ["quarantine", *args, "--broker", bootstrap])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.integration
def test_cli_unreachable_broker_is_one_line() -> None:
    result = RUNNER.invoke(cli_app, ["quarantine", "list", "--broker", "127.0.0.1:1"])
    assert result.exit_code == 2 and "cannot reach Kafka" in result.output


@pytest.mark.integration
def test_cli_list_show_tail(quarantine: tuple[str, str]) -> None:
    bootstrap, run = quarantine
    listed = RUNNER.invoke(
        cli_app, ["quarantine", "list", "--broker", bootstrap, "--json", "--event", "Ünïcode ✓"]
    )
    rows = [orjson.loads(line) for line in listed.output.splitlines()]
    assert [r["message_id"] for r in rows if r["message_id"].startswith(run)] == [f"{run}-3"]
    shown = RUNNER.invoke(cli_app, ["quarantine", "show", rows[-1]["id"], "--broker", bootstrap])
    assert shown.exit_code == 0 and "pii_detected" in shown.output
    tail = RUNNER.invoke(
        cli_app,
        ["quarantine", "tail", "--broker", bootstrap, "--since", "1h", "--json",
         "--duration", "3", "--source", "ios"],
    )  # fmt: skip
    assert tail.exit_code == 0, tail.output
    assert f"{run}-2" in tail.output and f"{run}-1" not in tail.output


@pytest.mark.integration
def test_http_api_is_read_only_and_answers_every_bad_request_in_json(
    quarantine: tuple[str, str],
) -> None:
    bootstrap, run = quarantine

    async def scenario() -> None:
        async with TestClient(TestServer(create_quarantine_api(bootstrap))) as client:
            ok = await client.get("/api/quarantine", params={"source": "ios", "limit": "1000"})
            body = await ok.json()
            assert ok.status == 200 and f"{run}-2" in {r["message_id"] for r in body["records"]}
            record_id = next(r["id"] for r in body["records"] if r["message_id"] == f"{run}-2")
            one = await client.get(f"/api/quarantine/{record_id}")
            assert one.status == 200 and (await one.json())["plan_version"] == "v2"
            for method, path, status, code in (
                ("POST", "/api/quarantine", 405, "method_not_allowed"),
                ("DELETE", f"/api/quarantine/{record_id}", 405, "method_not_allowed"),
                ("GET", "/api/quarantine?limit=0", 400, "bad_request"),
                ("GET", "/api/quarantine?since=%E2%80%AE2h", 400, "bad_request"),
                ("GET", "/api/quarantine?colour=red", 400, "bad_request"),
                ("GET", "/api/quarantine?source=" + "x" * 5000, 400, "bad_request"),
                ("GET", "/api/quarantine/1:2", 400, "bad_request"),
                ("GET", "/api/quarantine/%00%FF", 400, "bad_request"),
                ("GET", "/api/quarantine/0:999999999:0", 404, "not_found"),
                ("GET", f"/api/quarantine/{record_id}?x=1", 400, "bad_request"),
                ("GET", "/api/elsewhere", 404, "not_found"),
            ):
                answer = await client.request(method, path)
                payload = await answer.json()
                assert (answer.status, payload["code"]) == (status, code), (path, payload)
                assert payload["success"] is False and payload["message"]

        async with TestClient(TestServer(create_quarantine_api("127.0.0.1:1"))) as client:
            down = await client.get("/api/quarantine")
            assert down.status == 503 and (await down.json())["code"] == "unavailable"

    asyncio.run(scenario())
