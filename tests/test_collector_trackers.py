"""Collector behaviour real trackers depend on (issue 17): Segment-compatible error bodies,
personal data masked before anything is handed to Kafka, batch-level sentAt, a /healthz that
says when Kafka does not acknowledge, and metrics that count an unreadable record once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from test_collector import CollectorThread, FakeSink

from streams.collector.producer import BatchingProducer
from streams.pipeline import BatchProcessor
from streams.settings import Settings
from tests.conftest import EXAMPLE_PLAN
from tracking_plan.loader import load_plan
from tracking_plan.pii import is_pii_token


@pytest.fixture
def collector() -> Iterator[CollectorThread]:
    async def sink() -> FakeSink:
        return FakeSink()

    thread = CollectorThread(Settings(pii_key="k"), sink).start()
    try:
        yield thread
    finally:
        thread.stop()


def test_error_bodies_carry_message_code_field_and_error(collector: CollectorThread) -> None:
    status, _, body = collector.post("/v1/batch", {"batch": [{"type": "merge"}]})
    assert status == 400
    assert body["message"] == body["error"] and "batch[0].type" in body["message"]
    assert (body["success"], body["code"], body["field"]) == (False, "bad_shape", "batch[0].type")
    status, _, body = collector.post("/v1/track", {"event": "E"}, key="nope")
    assert (status, body["code"], body["message"]) == (401, "unauthorized", "unknown write key")


def test_personal_values_never_reach_the_sink(collector: CollectorThread) -> None:
    call = {
        "type": "identify",
        "userId": "u1",
        "traits": {"email": "ada@example.com", "plan": "pro"},
        "context": {"traits": {"phone": "+44 20 7946 0958"}, "library": {"name": "x"}},
        "properties": {"nested": [{"Pass_Word": "hunter2"}]},
    }
    status, _, _ = collector.post("/v1/batch", {"batch": [call], "sentAt": "2026-01-01T00:00:00Z"})
    assert status == 200
    stored = b"".join(data for _, data in collector.sink.items)
    for secret in (b"ada@example.com", b"+44 20 7946 0958", b"hunter2"):
        assert secret not in stored
    body = collector.sink.envelopes()[0]["body"]
    assert body["traits"] == {"email": "<redacted>", "plan": "pro"}
    assert body["properties"]["nested"][0]["Pass_Word"] == "<redacted>"
    assert body["sentAt"] == "2026-01-01T00:00:00Z"  # the batch's stamp applies to its calls


def test_pii_true_properties_become_keyed_hashes(tmp_path: Any) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        'plan: P\nversion: "1"\ntraits:\n  properties:\n    email: {type: string, pii: true}\n',
        encoding="utf-8",
    )

    async def sink() -> FakeSink:
        return FakeSink()

    thread = CollectorThread(Settings(plan=plan, pii_key="secret"), sink).start()
    try:
        for _ in range(2):
            call = {"type": "identify", "userId": "u", "traits": {"email": "ada@example.com"}}
            assert thread.post("/v1/identify", call)[0] == 200
    finally:
        thread.stop()
    tokens = [env["body"]["traits"]["email"] for env in thread.sink.envelopes()]
    assert tokens[0] == tokens[1] and is_pii_token(tokens[0]) and tokens[0].startswith("hmac:")


def test_a_collector_without_its_plan_refuses_to_start(tmp_path: Any) -> None:
    from streams.collector.http import create_collector
    from streams.settings import SettingsError

    with pytest.raises(SettingsError, match="PII rules"):
        create_collector(Settings(plan=tmp_path / "missing.yaml"), FakeSink(), {"k": "web"})


def test_settings_never_print_the_pii_key() -> None:
    settings = Settings.from_env({"TRACKWATCH_PII_KEY": "s3cret-key"})
    assert settings.pii_key == "s3cret-key" and "s3cret-key" not in repr(settings)


# ------------------------------------------------------------------------------- /healthz


class _NeverAcks:
    """An aiokafka producer stand-in whose sends are never acknowledged (a unit test of the
    health rules; the real broker stopping is tests/test_collector_integration.py)."""

    def __init__(self) -> None:
        self.client = self

    async def send(self, *args: Any, **kwargs: Any) -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()

    async def fetch_all_metadata(self) -> None:
        raise ConnectionError("no broker")

    async def stop(self) -> None:
        return None


def test_health_turns_degraded_when_kafka_does_not_acknowledge() -> None:
    async def scenario() -> list[dict[str, Any]]:
        producer = BatchingProducer(_NeverAcks(), "events.raw", 2, timeout=0.2, flush_interval=0)
        states = [await producer.health()]
        with pytest.raises(Exception, match="did not acknowledge"):
            await producer.submit([("k", b"{}")])
        states.append(await producer.health())
        await asyncio.sleep(0.25)
        producer._refused = None  # only the unacknowledged batch is left to tell
        states.append(await producer.health())
        producer._in_flight.clear()
        producer._acked_at -= producer.PROBE_AFTER + 1  # idle: the brokers are asked
        states.append(await producer.health())
        return states

    fresh, refused, waiting, probed = asyncio.run(scenario())
    assert fresh["ok"] and fresh["reason"] is None
    assert not refused["ok"] and "acknowledge" in refused["reason"]
    assert not waiting["ok"] and "has not acknowledged a batch" in waiting["reason"]
    assert waiting["unacknowledged_batches"] == 1
    assert not probed["ok"] and "does not answer" in probed["reason"]


def test_health_turns_degraded_when_requests_are_refused() -> None:
    async def scenario() -> dict[str, Any]:
        producer = BatchingProducer(_NeverAcks(), "events.raw", 2, max_pending_bytes=1)
        with pytest.raises(Exception, match="overloaded"):
            await producer.submit([("k", b"{}")])
        return await producer.health()

    state = asyncio.run(scenario())
    assert not state["ok"] and state["reason"].startswith("events are refused: overloaded")


def test_healthz_answers_503_with_a_json_reason(collector: CollectorThread) -> None:
    collector.sink.last_error = "KafkaTimeoutError: no ack"
    status, headers, body = collector.request("GET", "/healthz")
    assert status == 503 and body["status"] == "degraded" and "no ack" in body["reason"]
    assert headers["Retry-After"] == "2"
    collector.sink.last_error = None
    assert collector.request("GET", "/healthz")[0] == 200


# ------------------------------------------------------------------------------- metrics


def test_only_unreadable_records_are_counted_apart() -> None:
    """A call the validator quarantines as bad_envelope was tallied under its source: only the
    envelopes or messages that could not be read at all have no tally (issue 17, point 1)."""
    processor = BatchProcessor(load_plan(EXAMPLE_PLAN))
    envelopes = [
        {"source": "web", "received_at": "2026-01-01T00:00:00.000Z", "body": b}
        for b in ({"type": "merge", "userId": "u"}, {"type": "group", "userId": "u"})
    ] + [{"source": "web"}]
    out = processor.process(orjson.dumps(envelopes))
    # merge: bad_envelope, quarantined; group without groupId: flagged (web is in flag mode)
    assert len(out.quarantine) == 2 and len(out.valid) == 1 and len(out.tallies) == 2
    assert {t[0] for t in out.tallies} == {"web"}
    assert dict(out.unread) == {"bad_envelope": 1}
    assert dict(processor.process(b"not json").unread) == {"malformed_json": 1}


def test_worker_metrics_count_a_quarantined_group_call_once() -> None:
    from prometheus_client import REGISTRY

    from streams.worker import _export_validate_metrics

    processor = BatchProcessor(load_plan(EXAMPLE_PLAN))
    body = {"type": "merge", "userId": "u"}
    env = {"source": "web", "received_at": "2026-01-01T00:00:00.000Z", "body": body}

    def unknown() -> float:
        labels = {"source": "(unknown)", "event": "(unplanned)"}
        return REGISTRY.get_sample_value("trackwatch_events_received_total", labels) or 0.0

    before = unknown()
    _export_validate_metrics(processor.process(orjson.dumps([env])))
    assert unknown() == before
