"""The real JavaScript trackers, as users run them, against the collector on the real embedded
broker and the real worker (examples/ecommerce.yaml): where every call landed (events.valid /
events.quarantine), with which violation codes, and what the trackers saw.

- @segment/analytics-node 3.x (npm, tests/e2e/node): a Node.js server sending every call type,
  valid and invalid, batched (several calls per /v1/batch request); a wrong write key.
- analytics.js (@segment/analytics-next, the npm package's own browser bundle served from this
  machine: no CDN) in Debian's headless Chromium driven by playwright-core: a page calls
  page(), track(), identify(), group(), alias() and sends to the collector (`apiHost`,
  `protocol: http`), cross-origin, with the write key in the body as analytics.js does.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from test_collector import CollectorThread

from tests.e2e_parts import NODE_DIR, chromium, node
from tests.tracker_support import check_landing, landed, tracker_stack, wait_landed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = {"wk_node_server": "server", "wk_browser_web": "web"}


@pytest.fixture(scope="module")
def chromium_bin() -> str:
    return chromium()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, CollectorThread]]:
    node()  # no stack to start without the trackers
    with tracker_stack(tmp_path_factory.mktemp("js-trackers"), KEYS) as stack:
        yield stack


def run_node(port: int, key: str, calls: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    """Send `calls` ({method, params}) through analytics-node; what the SDK reported."""
    request = {
        "host": f"http://127.0.0.1:{port}",
        "writeKey": key,
        "options": {"maxRetries": 0, "flushInterval": 200, **options},
        "calls": calls,
    }
    done = subprocess.run(
        [node(), str(NODE_DIR / "send_node.mjs")],
        input=orjson.dumps(request),
        capture_output=True,
        cwd=NODE_DIR,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return orjson.loads(done.stdout)


def node_calls(run: str) -> tuple[list[dict[str, Any]], dict[str, str], set[str]]:
    """Every call type, valid and invalid, from a server (source `server`: block mode).
    Returns the calls, messageId -> where it should land, and the messageIds the SDK itself
    must refuse (never sent)."""
    calls: list[dict[str, Any]] = []
    expect: dict[str, str] = {}
    refused: set[str] = set()

    def call(outcome: str, method: str, **params: Any) -> None:
        mid = f"{run}-node-{len(calls) + 1}"
        params.setdefault("userId", "u-node")
        calls.append({"method": method, "params": {**params, "messageId": mid}})
        if outcome == "refused":
            refused.add(mid)
        else:
            expect[mid] = outcome

    call("valid", "track", event="Signed Up", properties={"method": "email"})
    call(
        "bad:not_in_enum:$.properties.method",
        "track",
        event="Signed Up",
        properties={"method": "fax"},
    )
    call("bad:missing_required:$.properties.method", "track", event="Signed Up", properties={})
    call("bad:unplanned_event:$", "track", event="Promo Popup Shown", properties={"n": 1})
    call("bad:wrong_source:$", "track", event="Products Searched", properties={"query": "shoes"})
    call(
        "bad:pii_detected:$.properties.password",
        "track",
        event="Signed Up",
        properties={"method": "email", "password": "hunter2"},
    )
    # odd but valid text, and a call anonymous only
    call(
        "valid",
        "track",
        event="Signed Up",
        properties={"method": "google"},
        anonymousId="anon-\u202e\u0645\u0631\u062d\u0628\u0627-☕",
        userId=None,
    )
    # Segment's limit is 32 KB per call as sent: a call just under it is accepted, although
    # the collector copies the batch's sentAt into it
    call("valid", "page", name="Product", properties={"product_id": "x" * (32 * 1024 - 309)})
    standard = {
        "path": "/p/1",
        "referrer": "https://example.org/",
        "search": "?q=1",
        "title": "Acme",
        "url": "https://shop.example/p/1",
    }
    call("valid", "page", name="Home", properties=standard)
    call("bad:wrong_type:$.properties.url", "page", name="Home", properties={"url": 5})
    call(
        "bad:wrong_type:$.properties.product_id",
        "page",
        name="Product",
        properties={"product_id": 7},
    )
    call("valid", "screen", name="Cart", properties={"name": "Cart"})
    call("bad:unplanned_property:$.properties.zz", "screen", name="Cart", properties={"zz": 1})
    call("valid", "identify", traits={"plan": "pro", "firstName": "Ada", "country": "GB"})
    call("bad:not_in_enum:$.traits.plan", "identify", traits={"plan": "gold"})
    call("bad:pattern_mismatch:$.traits.country", "identify", traits={"country": "gb"})
    call("valid", "group", groupId="acme", traits={"plan": "business", "employees": 12})
    call("bad:out_of_range:$.traits.employees", "group", groupId="acme", traits={"employees": 0})
    call("valid", "alias", previousId="anon-7", userId="u-node")
    # refused by the SDK before sending: no identity
    call("refused", "track", event="Signed Up", properties={"method": "email"}, userId=None)
    for c in calls:  # the SDK wants an absent identity left out, not null
        if c["params"].get("userId") is None:
            c["params"].pop("userId")
    return calls, expect, refused


def test_analytics_node_every_call_type_lands_where_it_should(
    stack: tuple[str, CollectorThread],
) -> None:
    bootstrap, collector = stack
    run = uuid.uuid4().hex[:6]
    calls, expect, refused = node_calls(run)
    report = run_node(collector.port, "wk_node_server", calls, flushAt=5)

    # the SDK batches: several calls per /v1/batch request, every request answered 200
    assert report["requests"] and max(r["calls"] for r in report["requests"]) > 1, report
    assert all(r["url"].endswith("/v1/batch") for r in report["requests"])
    assert {r["status"] for r in report["responses"]} == {200}, report["responses"]
    assert sum(r["calls"] for r in report["requests"]) == len(expect)
    # the SDK refused the calls it must refuse, and only those
    failed = {
        calls[c["index"]]["params"]["messageId"]: c["error"]
        for c in report["callbacks"]
        if c["error"]
    }
    assert set(failed) == refused, failed
    assert len(report["callbacks"]) == len(calls)

    sizes = {m: n for r in report["requests"] for m, n in r["sizes"].items()}
    assert 32 * 1024 - 100 < sizes[f"{run}-node-8"] <= 32 * 1024  # as sent: under the limit
    valid, quarantined = wait_landed(bootstrap, set(expect))
    check_landing(expect, valid, quarantined)
    assert not refused & (set(valid) | set(quarantined))
    # the server's library and the call types as the SDK sent them
    first = valid[f"{run}-node-1"]
    assert first["context"]["library"]["name"] == "@segment/analytics-node"
    assert {valid[m]["type"] for m in valid if m.startswith(run)} == {
        "track",
        "page",
        "screen",
        "identify",
        "group",
        "alias",
    }
    pii = quarantined[f"{run}-node-6"]["envelope"]["body"]
    assert pii["properties"]["password"] == "<redacted>"


def test_analytics_node_reads_a_wrong_write_key_as_a_401(
    stack: tuple[str, CollectorThread],
) -> None:
    _, collector = stack
    calls = [
        {
            "method": "track",
            "params": {"userId": "u", "event": "Signed Up", "properties": {"method": "email"}},
        }
    ]
    report = run_node(collector.port, "wk_nope", calls, maxRetries=3)
    # one request, not retried (a 401 is final for the SDK), with a Segment-style body
    assert [r["status"] for r in report["responses"]] == [401], report
    body = report["responses"][0]["body"]
    assert body["success"] is False and body["message"] == "unknown write key"
    assert body["code"] == "unauthorized"
    assert report["errors"] == [{"code": "delivery_failure", "reason": "[401] Unauthorized"}]
    assert report["callbacks"][0]["error"] == "[401] Unauthorized"


def test_analytics_node_call_over_32_kb_gets_its_batch_refused(
    stack: tuple[str, CollectorThread],
) -> None:
    """analytics-node 3.x does not hold calls to 32 KB itself (its size estimate counts URI
    escapes, not bytes): a bigger call is sent, and its whole batch is refused with a 413
    naming the call, as Segment's API refuses it; the SDK reports the failure for every call of
    that batch and nothing of it is stored."""
    bootstrap, collector = stack
    run = uuid.uuid4().hex[:6]
    calls = [
        {
            "method": "track",
            "params": {
                "userId": "u",
                "event": "Signed Up",
                "messageId": f"{run}-{i}",
                "properties": {"method": "email", "note": "z" * size},
            },
        }
        for i, size in enumerate((10, 40_000, 10))
    ]
    report = run_node(collector.port, "wk_node_server", calls, flushAt=3, maxRetries=3)
    assert [r["calls"] for r in report["requests"]] == [3], report["requests"]
    assert [r["status"] for r in report["responses"]] == [413]
    body = report["responses"][0]["body"]
    assert body["code"] == "payload_too_large" and body["field"] == "batch[1]"
    assert "32 KB" in body["message"]
    assert [c["error"] for c in report["callbacks"]] == ["[413] Request Entity Too Large"] * 3
    valid, quarantined = landed(bootstrap)
    assert not {c["params"]["messageId"] for c in calls} & (set(valid) | set(quarantined))


# ---------------------------------------------------------------------------------------------
# analytics.js in headless Chromium
# ---------------------------------------------------------------------------------------------

# (label, method, args, where it lands): source web is in flag mode, so events that break the
# plan are forwarded with their violations
BROWSER_CALLS: list[tuple[str, str, list[Any], str]] = [
    ("page-home", "page", ["Home"], "valid"),  # analytics.js adds path, referrer, search, ...
    ("page-bare", "page", [], "valid"),  # no name: the page's own properties only
    ("page-bad", "page", ["Product", {"product_id": 5}],
     "flag:wrong_type:$.properties.product_id"),
    ("track", "track", ["Products Searched", {"query": "chaussures ☕", "results_count": 3}],
     "valid"),
    ("track-bad", "track", ["Products Searched", {"query": 1}],
     "flag:wrong_type:$.properties.query"),
    ("track-unplanned", "track", ["Banner Clicked", {"banner": "summer"}],
     "flag:unplanned_event:$"),
    ("identify", "identify", ["u-web-1", {"plan": "plus", "firstName": "Grace"}], "valid"),
    ("identify-bad", "identify", ["u-web-1", {"plan": "gold"}],
     "flag:not_in_enum:$.traits.plan"),
    ("identify-pii", "identify", ["u-web-1", {"plan": "free", "email": "grace@example.org"}],
     "flag:pii_detected:$.traits.email"),
    ("group", "group", ["acme", {"plan": "business", "employees": 40}], "valid"),
    ("group-bad", "group", ["acme", {"employees": 0}], "flag:out_of_range:$.traits.employees"),
    ("alias", "alias", ["u-web-2"], "valid"),  # previousId: the current user (u-web-1)
]  # fmt: skip


def run_browser(chromium_bin: str, port: int, delivery: str) -> dict[str, Any]:
    request = {
        "chromium": chromium_bin,
        "apiHost": f"127.0.0.1:{port}/v1",
        "writeKey": "wk_browser_web",
        "delivery": delivery,
        "calls": [{"label": lb, "method": m, "args": a} for lb, m, a, _ in BROWSER_CALLS],
    }
    done = subprocess.run(
        [node(), str(NODE_DIR / "browser_page.mjs")],
        input=orjson.dumps(request),
        capture_output=True,
        cwd=NODE_DIR,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return orjson.loads(done.stdout)


@pytest.mark.parametrize("delivery", ["standard", "batching"])
def test_analytics_js_in_chromium_lands_where_it_should(
    chromium_bin: str, stack: tuple[str, CollectorThread], delivery: str
) -> None:
    bootstrap, collector = stack
    report = run_browser(chromium_bin, collector.port, delivery)
    assert report["offsite"] == [] and report["pageErrors"] == [], report
    assert isinstance(report["calls"], list), report
    mids = {c["label"]: c["messageId"] for c in report["calls"]}
    posts = [r for r in report["requests"] if r["method"] == "POST"]
    assert posts and {(r["status"], orjson.dumps(r.get("body"))) for r in posts} == {
        (200, b'{"success":true}')
    }, report["requests"]
    paths = {r["url"].rsplit("/", 1)[1] for r in posts}
    if delivery == "standard":  # one request per call, on the short routes
        assert paths == {"p", "t", "i", "g", "a"} and len(posts) == len(BROWSER_CALLS)
    else:  # several calls per request
        assert paths == {"b"} and len(posts) < len(BROWSER_CALLS)
    expect = {mids[label]: where for label, _, _, where in BROWSER_CALLS}
    valid, quarantined = wait_landed(bootstrap, set(expect))
    check_landing(expect, valid, quarantined)
    home = valid[mids["page-home"]]
    assert home["context"]["library"]["name"] == "analytics.js"
    assert {"path", "url", "title", "referrer", "search"} <= set(home["properties"])
    assert valid[mids["alias"]]["previousId"] == "u-web-1"
    assert valid[mids["identify-pii"]]["traits"].get("email") in (None, "<redacted>")
