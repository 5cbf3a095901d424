"""Helpers shared by the worker, restart, replay tests and the pipeline benchmark: synthetic
envelopes for the example plan, producing batches to events.raw, reading topics back."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.envelope import encode_batch, partition_for, partition_key
from streams.topics import RAW
from tracking_plan.normalise import format_timestamp

T0 = 1_790_000_040.0  # a minute boundary (2026-09-21)
STEPS = ["Product Viewed", "Product Added", "Checkout Started", "Order Completed"]


def body_for(name: str, user: str, ts: float, mid: str, source: str) -> dict[str, Any]:
    props: dict[str, Any] = {}
    if name == "Product Viewed":
        props = {"product_id": "p_ab12", "price": 9.5}
    elif name == "Product Added":
        props = {"cart_id": "c1", "product_id": "p_ab12", "price": 9.5, "quantity": 1}
    elif name == "Checkout Started":
        props = {"cart_id": "c1", "value": 9.5, "currency": "EUR"}
    elif name == "Order Completed":
        props = {
            "order_id": "ord_" + hashlib.sha1(mid.encode()).hexdigest()[:16],  # one per call
            "total": 9.5,
            "currency": "EUR",
            "products": [{"product_id": "p_ab12", "price": 9.5, "quantity": 1}],
        }
    return {
        "type": "track",
        "event": name,
        "anonymousId": user,
        "messageId": mid,
        "timestamp": format_timestamp(ts),
        "properties": props,
        "context": {"library": {"name": "analytics.js"}, "app": {"version": "1.2"}},
    }


def make_envelopes(
    n: int,
    seed: int = 1,
    users: int = 50,
    seconds: float = 600.0,
    bad_every: int = 7,
    dup_every: int = 11,
) -> list[dict[str, Any]]:
    """`n` envelopes in event-time order over `seconds`: mostly valid funnel steps, every
    `bad_every`-th one invalid (missing price), every `dup_every`-th one a resend of the previous
    one (same messageId), a few unplanned events."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        ts = T0 + seconds * i / n
        received = format_timestamp(ts + 0.5)
        if dup_every and i % dup_every == dup_every - 1 and out:
            out.append(orjson.loads(orjson.dumps(out[-1])))
            continue
        user = f"anon-{rng.randrange(users)}"
        name = rng.choice(STEPS[:2] * 3 + STEPS)
        if i % 29 == 5:
            name = "Banner Clicked"  # unplanned
        body = body_for(name, user, ts, f"m-{seed}-{i}", "web")
        if bad_every and i % bad_every == 3:
            body["properties"].pop("price", None)
            body["properties"].pop("total", None)
        out.append({"source": "web", "received_at": received, "body": body})
    return out


def produce(
    bootstrap: str, envelopes: list[dict[str, Any]], partitions: int, batch: int = 100
) -> int:
    """Send envelopes as micro-batches, grouped by partition key like the collector; messages."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4_000_000)
    groups: dict[int, list[dict[str, Any]]] = {}
    sent = 0

    def send(p: int) -> None:
        nonlocal sent
        producer.send(RAW, value=encode_batch(groups.pop(p)), key=b"p%d" % p, partition=p)
        sent += 1

    for env in envelopes:
        p = partition_for(partition_key(env), partitions)
        groups.setdefault(p, []).append(env)
        if len(groups[p]) >= batch:
            send(p)
    for p in list(groups):
        send(p)
    producer.flush()
    producer.close()
    return sent


def read_topic(
    bootstrap: str, topic: str, idle: float = 3.0, until: Any = None, timeout: float = 90.0
) -> list[Any]:
    """Every message value of `topic` (decoded JSON), waiting until `until(values)` is true (or
    until nothing arrived for `idle` seconds when `until` is None)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=500,
    )
    parts = consumer.partitions_for_topic(topic) or set()
    consumer.assign([TopicPartition(topic, p) for p in parts])
    values: list[Any] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            got = False
            for msg in consumer:
                values.append(orjson.loads(msg.value))
                got = True
            if got:
                last = time.monotonic()
            if until is not None and until(values):
                return values
            if until is None and time.monotonic() - last > idle and values:
                return values
    finally:
        consumer.close()
    return values


def iter_records(flushes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for flush in flushes:
        yield from flush["records"]
