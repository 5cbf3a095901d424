"""Fuzzing the collector over real HTTP (hypothesis): random bytes, random JSON, random headers.

Properties: never a 5xx, every answer is JSON, and an oracle written independently of the
collector predicts accept/refuse; what is accepted is stored exactly as sent.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_collector import CollectorThread, FakeSink, basic

from streams.collector.http import CALL_TYPES, ROUTES
from streams.settings import Settings

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SINGLE_ROUTES = sorted(p for p, t in ROUTES.items() if t != "batch")
LIMIT = Settings().max_event_bytes

# JSON text: any code point but lone surrogates (JSON cannot carry them as UTF-8).
json_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(json_text, inner, max_size=5),
    max_leaves=40,
)
call_objects = st.dictionaries(
    st.sampled_from(["event", "type", "userId", "anonymousId", "properties", "messageId"])
    | json_text,
    json_values,
    max_size=8,
)


async def _sink() -> FakeSink:
    return FakeSink()


def _strip_pii(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_pii(v) for k, v in node.items() if k != "pii"}
    if isinstance(node, list):
        return [_strip_pii(v) for v in node]
    return node


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorThread]:
    # "Stored exactly as sent" is about framing, so the plan here names no personal data
    # (masking has its own tests in test_collector_trackers.py).
    plan = _strip_pii(yaml.safe_load(Settings().plan.read_text(encoding="utf-8")))
    path = tmp_path_factory.mktemp("plan") / "plan.yaml"
    path.write_text(yaml.safe_dump(plan), encoding="utf-8")
    thread = CollectorThread(Settings(plan=path), _sink).start()
    yield thread
    thread.stop()


def _fresh(server: CollectorThread) -> CollectorThread:
    server.sink.items.clear()
    return server


def _check_answer(server: CollectorThread, status: int, body: Any) -> None:
    assert status < 500, body
    assert isinstance(body, dict) and isinstance(body.get("success"), bool), body
    assert body["success"] is (status == 200)
    if status != 200:
        assert server.sink.items == [], "a refused request must write nothing"
        assert body["error"], body


@FUZZ
@given(data=st.binary(max_size=2000), path=st.sampled_from(sorted(ROUTES)))
def test_random_bytes_never_crash(server: CollectorThread, data: bytes, path: str) -> None:
    server = _fresh(server)
    status, _, body = server.post(path, data)
    _check_answer(server, status, body)
    assert status in (200, 400, 413)
    if status == 200:
        parsed = orjson.loads(data)
        envs = server.sink.envelopes()
        if ROUTES[path] != "batch":
            assert [e["body"] for e in envs] == [{**parsed, "type": ROUTES[path]}]


def _single_call_oracle(payload: Any, call_type: str) -> int:
    if not isinstance(payload, dict):
        return 400
    if "type" in payload and payload["type"] not in (None, call_type):
        return 400
    stored = {k: v for k, v in payload.items() if k != "writeKey"} | {"type": call_type}
    return 413 if len(orjson.dumps(stored)) > LIMIT else 200


@FUZZ
@given(payload=json_values | call_objects, path=st.sampled_from(SINGLE_ROUTES))
@example(payload={"EMAIL": []}, path="/v1/track")  # once failed: the default plan redacts it
def test_random_json_single_calls_follow_the_oracle(
    server: CollectorThread, payload: Any, path: str
) -> None:
    server = _fresh(server)
    status, _, body = server.post(path, orjson.dumps(payload))
    _check_answer(server, status, body)
    assert status == _single_call_oracle(payload, ROUTES[path]), body
    if status == 200:
        [env] = server.sink.envelopes()
        expected = {k: v for k, v in payload.items() if k != "writeKey"}
        assert env["body"] == {**expected, "type": ROUTES[path]}
        assert env["source"] == "web"


batch_items = call_objects.map(lambda d: d) | st.builds(
    lambda t, rest: {**rest, "type": t},
    st.sampled_from([*CALL_TYPES, "Track", "batch"]),
    call_objects,
)


@settings(FUZZ, max_examples=100)
@given(items=st.lists(batch_items | json_values, max_size=6), gzip_it=st.booleans())
def test_random_batches_follow_the_oracle(
    server: CollectorThread, items: list[Any], gzip_it: bool
) -> None:
    server = _fresh(server)
    data = orjson.dumps({"batch": items})
    headers = {"Content-Encoding": "gzip"} if gzip_it else {}
    status, _, body = server.post(
        "/v1/batch", gzip.compress(data) if gzip_it else data, headers=headers
    )
    _check_answer(server, status, body)
    valid = all(isinstance(i, dict) and i.get("type") in CALL_TYPES for i in items)
    assert status == (200 if valid else 400), body
    if status == 200:
        stored = [e["body"] for e in server.sink.envelopes()]
        assert stored == [{k: v for k, v in i.items() if k != "writeKey"} for i in items]


header_text = st.text(
    st.characters(min_codepoint=0, max_codepoint=255, exclude_characters="\r\n"), max_size=60
)


@FUZZ
@given(
    content_type=header_text,
    encoding=header_text,
    auth=header_text
    | st.binary(max_size=40).map(lambda b: "Basic " + base64.b64encode(b).decode()),
)
def test_random_headers_never_crash(
    server: CollectorThread, content_type: str, encoding: str, auth: str
) -> None:
    server = _fresh(server)
    headers = {"Content-Type": content_type, "Content-Encoding": encoding, "Authorization": auth}
    status, _, body = server.request("POST", "/v1/track", b'{"event": "E"}', headers)
    assert status < 500, body
    if isinstance(body, dict):
        _check_answer(server, status, body)
    else:  # aiohttp's own parser refused a header it cannot read
        assert status == 400, body
    assert status in (200, 400, 401, 415)


@FUZZ
@given(key=st.text(max_size=30))
def test_random_write_keys_are_401_unless_known(server: CollectorThread, key: str) -> None:
    server = _fresh(server)
    status, _, body = server.post(
        "/v1/track", {"event": "E"}, key=None, headers={"Authorization": basic(key)}
    )
    _check_answer(server, status, body)
    assert status == (200 if key.partition(":")[0] in server.write_keys else 401)
