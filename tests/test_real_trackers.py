"""The real tracker SDKs from PyPI, as users run them, against the collector on the real embedded
broker and the real worker (examples/ecommerce.yaml): every call type, valid and invalid, lands
where it should (events.valid / events.quarantine) with the expected codes; no PII value is
anywhere in events.raw, events.valid or events.quarantine; `trackwatch quarantine list/show`
and its HTTP API read what was quarantined; a wrong write key is a clean 401 the SDKs read.

segment-analytics-python 2.4.0 runs in sync mode (one /v1/batch request per call, plain JSON);
rudder-sdk-python 2.1.9 queues and flushes (several calls per gzip /v1/batch request) and sends
identify traits in context.traits.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import rudderstack.analytics as rudder_analytics
import segment.analytics as segment_analytics
from aiohttp.test_utils import TestClient, TestServer
from rudderstack.analytics.request import APIError as RudderAPIError
from segment.analytics.request import APIError as SegmentAPIError
from test_collector import CollectorThread
from typer.testing import CliRunner

from streams.cli.app import app as cli_app
from streams.quarantine_api import create_quarantine_api
from streams.topics import QUARANTINE, RAW, VALID
from tests.tracker_support import check_landing, raw_values, tracker_stack, wait_landed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = {"wk_server_test": "server", "wk_web_test": "web"}
PII_KEY = "test-pii-key"
# personal values the trackers send: none may be stored anywhere
SECRETS = ("ada.lovelace@example.com", "+44 20 7946 0958", "hunter2-Secr3t", "grace@example.org")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, CollectorThread]]:
    """Embedded broker, collector (with a PII key) and a worker process."""
    with tracker_stack(tmp_path_factory.mktemp("trackers"), KEYS, PII_KEY) as stack:
        yield stack


def _segment(port: int, key: str = "wk_server_test") -> Any:
    return segment_analytics.Client(
        key, host=f"http://127.0.0.1:{port}", sync_mode=True, max_retries=0
    )


def _ids(prefix: str) -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"{prefix}-{n}"


def send_segment(port: int, run: str) -> dict[str, str]:
    """Every call type through segment-analytics-python; messageId -> what it should become."""
    client = _segment(port)
    ids = _ids(f"{run}-seg")
    sent: dict[str, str] = {}

    def call(expect: str, method: str, *args: Any, **kwargs: Any) -> None:
        mid = next(ids)
        getattr(client, method)(*args, message_id=mid, **kwargs)
        sent[mid] = expect

    call("valid", "track", "u1", "Signed Up", {"method": "email"})
    call("bad:not_in_enum:$.properties.method", "track", "u1", "Signed Up", {"method": "fax"})
    call(
        "bad:pii_detected:$.properties.password",
        "track",
        "u1",
        "Signed Up",
        {"method": "email", "password": SECRETS[2]},
    )
    page = {"path": "/", "referrer": "", "search": "", "title": "Shop", "url": "http://x/"}
    call("valid", "page", "u1", name="Home", properties={**page, "name": "Home"})
    call("bad:wrong_type:$.properties.url", "page", "u1", name="Home", properties={"url": 5})
    call("valid", "screen", "u1", name="Cart", properties={"name": "Cart"})
    bad_screen = "bad:unplanned_property:$.properties.zz"
    call(bad_screen, "screen", "u1", name="Cart", properties={"zz": 1})
    call("valid", "identify", "u1", {"plan": "pro", "firstName": "Ada"})
    call(
        "bad:pii_detected:$.traits.email",
        "identify",
        "u1",
        {"plan": "pro", "email": SECRETS[0], "phone": SECRETS[1]},
    )
    call("valid", "group", "u1", "acme", {"plan": "business", "employees": 12, "name": "Acme"})
    call("bad:out_of_range:$.traits.employees", "group", "u1", "acme", {"employees": 0})
    call("valid", "alias", "anon-1", "u1")
    call("bad:missing_required:$.previousId", "alias", "", "u1")
    return sent


def send_rudder(port: int, run: str) -> dict[str, str]:
    """Every call type through rudder-sdk-python (queued, flushed as gzip batches)."""
    client = rudder_analytics.Client(
        "wk_web_test", host=f"http://127.0.0.1:{port}", max_retries=0, upload_size=50
    )
    ids = _ids(f"{run}-rud")
    sent: dict[str, str] = {}
    ctx = {"library": {"name": "analytics-python"}}

    def call(expect: str, method: str, *args: Any, **kwargs: Any) -> None:
        mid = next(ids)
        getattr(client, method)(*args, message_id=mid, context=dict(ctx), **kwargs)
        sent[mid] = expect

    # source web is in flag mode: invalid events are forwarded with their violations
    call("valid", "track", "u2", "Products Searched", {"query": "shoes"})
    call("flag:wrong_type:$.properties.query", "track", "u2", "Products Searched", {"query": 1})
    call("valid", "page", "u2", name="Home", properties={"path": "/", "title": "Shop"})
    call("valid", "screen", "u2", name="Home")
    call("valid", "identify", "u2", {"plan": "plus"})
    call("flag:not_in_enum:$.context.traits.plan", "identify", "u2", {"plan": "gold"})
    call(
        "flag:pii_detected:$.context.traits.email",
        "identify",
        "u2",
        {"plan": "free", "email": SECRETS[3]},
    )
    call("valid", "group", "u2", "acme", {"plan": "free"})
    call("valid", "alias", "anon-2", "u2")
    client.flush()
    client.join()
    return sent


def test_real_sdks_every_call_type_lands_where_it_should(
    stack: tuple[str, CollectorThread], tmp_path: Path
) -> None:
    bootstrap, collector = stack
    run = uuid.uuid4().hex[:6]
    sent = {**send_segment(collector.port, run), **send_rudder(collector.port, run)}

    valid, quarantined = wait_landed(bootstrap, set(sent))
    check_landing(sent, valid, quarantined)
    # the forwarded identify traits of rudder stay in context, the PII trait stripped
    flagged = [e for m, e in valid.items() if sent.get(m, "").endswith("context.traits.email")]
    assert flagged and "email" not in flagged[0]["context"]["traits"]

    # no personal value in any topic: masked by the collector before events.raw
    for topic in (RAW, VALID, QUARANTINE):
        blob = b"\n".join(raw_values(bootstrap, topic))
        for secret in SECRETS:
            assert secret.encode() not in blob, (topic, secret)
    # what was wrong is still visible: the key and its path, never the value
    identify = next(r for m, r in quarantined.items() if sent.get(m, "").endswith("$.traits.email"))
    assert identify["envelope"]["body"]["traits"]["email"] == "<redacted>"

    # the quarantine is readable: CLI (JSON lines) and HTTP API
    runner = CliRunner()
    listed = runner.invoke(
        cli_app,
        ["quarantine", "list", "--broker", bootstrap, "--source", "server", "--json",
         "--limit", "1000"],
    )  # fmt: skip
    assert listed.exit_code == 0, listed.output
    rows = [orjson.loads(line) for line in listed.output.splitlines()]
    mine = {r["message_id"]: r for r in rows if str(r["message_id"]).startswith(run)}
    assert set(mine) == {m for m in quarantined if m.startswith(run)}
    one = mine[f"{run}-seg-2"]
    assert one["codes"] == ["not_in_enum"] and one["event"] == "Signed Up"
    shown = runner.invoke(cli_app, ["quarantine", "show", one["id"], "--broker", bootstrap])
    assert shown.exit_code == 0 and "not_in_enum" in shown.output and "fax" in shown.output
    table = runner.invoke(
        cli_app, ["quarantine", "list", "--broker", bootstrap, "--code", "out_of_range"]
    )
    assert table.exit_code == 0 and "out_of_range" in table.output and "acme" not in table.output
    assert "newest 1 matching" in table.output

    async def api() -> None:
        async with TestClient(TestServer(create_quarantine_api(bootstrap))) as client:
            answer = await client.get(
                "/api/quarantine", params={"event": "alias", "since": "1h", "limit": "100"}
            )
            body = await answer.json()
            assert answer.status == 200
            assert {r["message_id"] for r in body["records"]} >= {f"{run}-seg-13"}
            detail = await client.get(f"/api/quarantine/{one['id']}")
            assert detail.status == 200 and (await detail.json())["message_id"] == one["message_id"]

    asyncio.run(api())


def test_wrong_write_key_is_a_401_the_sdks_read(stack: tuple[str, CollectorThread]) -> None:
    _, collector = stack
    with pytest.raises(SegmentAPIError) as seg:
        _segment(collector.port, key="wk_nope").track("u1", "Signed Up", {"method": "email"})
    assert (seg.value.status, seg.value.code, seg.value.message) == (
        401,
        "unauthorized",
        "unknown write key",
    )
    # rudder-sdk-python's own request: an APIError (not KeyError('message')), which its
    # consumer does not retry (a 4xx other than 429)
    from rudderstack.analytics.request import post

    logging.getLogger("rudderstack").disabled = True
    with pytest.raises(RudderAPIError) as rud:
        post("wk_nope", f"http://127.0.0.1:{collector.port}", batch=[{"type": "track"}])
    assert (rud.value.status, rud.value.message) == (401, "unknown write key")
