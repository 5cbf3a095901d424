"""The embedded broker starts, serves the Kafka protocol on loopback and stops cleanly."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from streams import topics
from streams.broker import BrokerError, EmbeddedBroker, create_topics


@pytest.mark.integration
def test_topics_created_with_partitions(broker: EmbeddedBroker) -> None:
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        described = {t["name"]: t for t in admin.describe_topics([topics.RAW, topics.ANOMALIES])}
    finally:
        admin.close()
    assert len(described[topics.RAW]["partitions"]) == 4
    assert len(described[topics.ANOMALIES]["partitions"]) == 1
    assert create_topics(broker.bootstrap) == []  # idempotent


@pytest.mark.integration
def test_produce_consume_roundtrip(fresh_broker: EmbeddedBroker) -> None:
    producer = KafkaProducer(bootstrap_servers=fresh_broker.bootstrap, acks="all")
    for i in range(20):
        producer.send(topics.VALID, key=b"k", value=f"m{i}".encode(), partition=1)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=fresh_broker.bootstrap, consumer_timeout_ms=3000)
    tp = TopicPartition(topics.VALID, 1)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = [m.value for m in consumer]
    consumer.close()
    assert got == [f"m{i}".encode() for i in range(20)]


@pytest.mark.integration
def test_stop_is_idempotent_and_frees_the_port(tmp_path) -> None:
    b = EmbeddedBroker(log_path=tmp_path / "b.log").start()
    assert b.running
    b.stop()
    b.stop()
    assert not b.running
    # the same port can be used again at once
    again = EmbeddedBroker(port=b.port, log_path=tmp_path / "c.log").start()
    again.stop()


def test_unreachable_port_gives_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "missing"))
    with pytest.raises(BrokerError, match="CALF_TANSU_BIN"):
        EmbeddedBroker(log_path=tmp_path / "b.log").start(timeout=2)
