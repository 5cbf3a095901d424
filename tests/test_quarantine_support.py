"""Helpers of the quarantine-replay and plan-sync tests (no tests here).

Quarantine records are made by the worker's own code (`streams.pipeline.BatchProcessor`) from
envelopes validated with a plan that lacks the property `coupon`, and written to the broker the
way the worker writes them: one JSON array of records per message, on the events.raw partition.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.envelope import encode_batch, partition_for, partition_key
from streams.pipeline import BatchProcessor
from tracking_plan.loader import parse_plan
from tracking_plan.model import Plan
from tracking_plan.normalise import format_timestamp

ROOT = Path(__file__).resolve().parent.parent
PLAN_TEXT = (ROOT / "examples" / "ecommerce.yaml").read_text(encoding="utf-8")
V1 = "2026.11.1"
V2 = "2026.11.2"
T0 = 1_790_000_040.0
PARTITIONS = 4  # create_topics' default


def plan_text(version: str = V1, coupon: bool = False) -> str:
    """The example plan at `version`; `coupon=True` plans `coupon` on Product Viewed."""
    text = PLAN_TEXT.replace(f'version: "{V1}"', f'version: "{version}"', 1)
    assert f'version: "{version}"' in text
    if coupon:
        anchor = '      product_id: {type: string, required: true, pattern: "^p_[0-9a-z]{4,12}$"}\n'
        assert anchor in text
        text = text.replace(anchor, anchor + "      coupon: {type: string}\n", 1)
    return text


def plan(version: str = V1, coupon: bool = False) -> Plan:
    return parse_plan(plan_text(version, coupon))


def viewed(mid: str, user: str, ts: float, **props: Any) -> dict[str, Any]:
    """An ios `Product Viewed` envelope (ios is in block mode: violations quarantine)."""
    properties = {"product_id": "p_ab12", "price": 9.5, **props}
    body = {
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": user,
        "messageId": mid,
        "timestamp": format_timestamp(ts),
        "properties": properties,
        "context": {"library": {"name": "analytics-ios"}, "app": {"version": "1.2"}},
    }
    return {"source": "ios", "received_at": format_timestamp(ts + 0.5), "body": body}


def scenario(fixable: int = 40, broken: int = 10, unplanned: int = 5, tag: str = "a") -> dict:
    """Envelopes: `fixable` carry the unplanned `coupon` (valid once the plan has it), `broken`
    also send a string price (wrong_type either way), `unplanned` are an unplanned event, and as
    many valid ones as fixable (never quarantined)."""
    envs: dict[str, list[dict[str, Any]]] = {"fixable": [], "broken": [], "unplanned": []}
    valid = []
    for i in range(fixable):
        envs["fixable"].append(viewed(f"fix-{tag}-{i}", f"u{i}", T0 + i, coupon="SALE10"))
        valid.append(viewed(f"ok-{tag}-{i}", f"u{i}", T0 + i))
    for i in range(broken):
        envs["broken"].append(viewed(f"bad-{tag}-{i}", f"b{i}", T0 + i, coupon="X", price="cheap"))
    for i in range(unplanned):
        env = viewed(f"unp-{tag}-{i}", f"n{i}", T0 + i)
        env["body"]["event"] = "Banner Clicked"
        envs["unplanned"].append(env)
    envs["valid"] = valid
    return envs


def quarantine_messages(
    envelopes: list[dict[str, Any]], with_plan: Plan, partitions: int = PARTITIONS
) -> list[tuple[int, bytes]]:
    """(partition, value) of the events.quarantine messages the worker writes for `envelopes`."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for env in envelopes:
        groups.setdefault(partition_for(partition_key(env), partitions), []).append(env)
    out = []
    for p, group in sorted(groups.items()):
        processed = BatchProcessor(with_plan).process(encode_batch(group))
        if processed.quarantine:
            out.append((p, orjson.dumps(processed.quarantine)))
    return out


def produce(
    bootstrap: str, topic: str, messages: list[tuple[int, bytes]], timestamp_ms: int | None = None
) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=8_000_000)
    for p, value in messages:
        producer.send(topic, value=value, partition=p, timestamp_ms=timestamp_ms)
    producer.flush()
    producer.close()


def read_all(bootstrap: str, topic: str) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """(partition, offset, key, value) of every message of `topic` up to its current end."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_bytes=16_000_000
    )
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"{topic} did not deliver up to {ends}"
            for tp, records in consumer.poll(timeout_ms=500).items():
                out.extend((tp.partition, r.offset, r.key, r.value) for r in records)
        return out
    finally:
        consumer.close()


def replayed_events(bootstrap: str) -> list[tuple[int, dict[str, Any]]]:
    """(partition, message) of every events.valid message written by a replay."""
    out = []
    for p, _, _, value in read_all(bootstrap, "events.valid"):
        msg = orjson.loads(value)
        if "replay" in msg:
            out.append((p, msg))
    return out


def replayed_ids(bootstrap: str) -> list[str]:
    """messageIds of the events republished to events.valid (with repeats, if any)."""
    return [
        item["event"]["messageId"]
        for _, msg in replayed_events(bootstrap)
        for item in msg["events"]
    ]
