"""Plan hot reload against the real embedded broker: watchers converge on the last valid plan,
an invalid plan never replaces a good one, publishing is idempotent and refuses a changed plan
under an old version."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from test_quarantine_support import V1, V2, plan, plan_text, viewed

from streams.broker import EmbeddedBroker
from streams.envelope import encode_batch
from streams.pipeline import BatchProcessor
from streams.plan_sync import (
    PLANS,
    ActivePlan,
    PlanSyncError,
    PlanWatcher,
    compile_record,
    encode_record,
    fetch_current,
    publish,
    swap_into,
)

V3 = "2026.11.3"


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll `condition` until true; fail naming `what` if it never becomes true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def publish_text(bootstrap: str, version: str, coupon: bool = False):
    text = plan_text(version, coupon)
    return await publish(bootstrap, plan(version, coupon), text)


async def send_raw(bootstrap: str, key: bytes, value: bytes | None) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        return (await producer.send_and_wait(PLANS, value=value, key=key, partition=0)).offset
    finally:
        await producer.stop()


def plan_info(version: str) -> float | None:
    return REGISTRY.get_sample_value("trackwatch_plan_info", {"version": version})


@pytest.mark.integration
def test_two_watchers_converge_and_keep_the_good_plan(fresh_broker: EmbeddedBroker) -> None:
    bootstrap = fresh_broker.bootstrap

    async def scenario() -> None:
        a = PlanWatcher(bootstrap, initial=plan(V1), poll_seconds=0.1)
        b = PlanWatcher(bootstrap, initial=plan(V1), poll_seconds=0.1)
        await a.start()
        await b.start()
        try:
            assert a.current_version == b.current_version == V1  # nothing published yet
            await publish_text(bootstrap, V2, coupon=True)
            await wait_for(lambda: a.current_version == b.current_version == V2, "v2 on both")
            assert plan_info(V2) == 1 and plan_info(V1) is None

            # an invalid plan (bad YAML, unknown type) is rejected, v2 stays
            bad = plan_text(V3).replace("type: number", "type: numbr", 1)
            offset = await send_raw(
                bootstrap,
                V3.encode(),
                orjson.dumps({"version": V3, "text": bad, "sha256": "x", "published_at": "now"}),
            )
            await send_raw(bootstrap, b"junk", b"\xff not json")
            await send_raw(bootstrap, b"tomb", None)
            await wait_for(lambda: len(a.rejected) == 3 and len(b.rejected) == 3, "rejections")
            assert a.current_version == b.current_version == V2
            assert a.rejected[0][0] == offset and "numbr" in a.rejected[0][1]
            assert "plans@" in a.rejected[0][1]  # names where the bad plan is

            # a watcher started now catches up with the last VALID plan
            late = PlanWatcher(bootstrap, initial=plan(V1))
            await late.start()
            assert late.current_version == V2 and len(late.rejected) == 3
            await late.stop()

            await publish_text(bootstrap, V3)
            await wait_for(lambda: a.current_version == b.current_version == V3, "v3 on both")
            assert a.current.offset == b.current.offset
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(scenario())


@pytest.mark.integration
def test_publish_is_idempotent_and_refuses_a_changed_plan_under_an_old_version(
    fresh_broker: EmbeddedBroker,
) -> None:
    bootstrap = fresh_broker.bootstrap

    async def scenario() -> None:
        assert await fetch_current(bootstrap) is None
        first = await publish_text(bootstrap, V1)
        assert first.offset >= 0 and first.previous is None
        again = await publish_text(bootstrap, V1)
        assert again.offset == -1  # already current: nothing sent
        with pytest.raises(PlanSyncError, match="bump `version:`"):
            await publish_text(bootstrap, V1, coupon=True)
        second = await publish_text(bootstrap, V2, coupon=True)
        assert second.previous == V1 and second.offset > first.offset
        current = await fetch_current(bootstrap)
        assert current is not None and current.version == V2
        # rolling back to the exact v1 text is allowed and becomes current
        back = await publish_text(bootstrap, V1)
        assert back.offset > second.offset
        assert (await fetch_current(bootstrap)).version == V1

    asyncio.run(scenario())


def test_hostile_records_are_rejected_with_a_reason() -> None:
    good_key, good = encode_record(plan(V2), plan_text(V2))
    assert compile_record(good, 7).version == V2 and good_key == V2.encode()
    cases = {
        None: "tombstone",
        b"": "tombstone",
        b"[1, 2]": "expected an object",
        b"{": "not JSON",
        b'{"version": "1"}': "lacks",
        orjson.dumps({"version": V3, "text": plan_text(V2)}): "says version",
        orjson.dumps({"version": V1, "text": "plan: [unclosed"}): "plans@3",
        orjson.dumps({"version": V1, "text": "x" * (6 * 1024 * 1024)}): "larger than",
    }
    for value, reason in cases.items():
        with pytest.raises(ValueError, match=reason.replace("[", r"\[")):
            compile_record(value, 3)


def test_swap_into_changes_what_a_processor_accepts() -> None:
    processor = BatchProcessor(plan(V1))
    envelope = viewed("m-swap", "u1", 1_790_000_040.0, coupon="SALE10")
    before = processor.process(encode_batch([envelope]))
    assert len(before.quarantine) == 1 and before.quarantine[0]["plan_version"] == V1

    fixed = ActivePlan.of(plan(V2, coupon=True))
    assert swap_into(processor, fixed) is True
    assert swap_into(processor, fixed) is False
    envelope["body"]["messageId"] = "m-swap-2"
    after = processor.process(encode_batch([envelope]))
    assert not after.quarantine and len(after.valid) == 1
    assert processor.plan_version == V2
