"""Kafka topics of trackwatch: names, partitions and configs, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

RAW = "events.raw"
VALID = "events.valid"
QUARANTINE = "events.quarantine"
WINDOWS = "metrics.windows"
ANOMALIES = "anomalies"

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def default_topics(partitions: int = 4) -> list[TopicSpec]:
    """The topics the service needs. Events are kept for replay, quarantine the longest."""
    return [
        TopicSpec(RAW, partitions, {"retention.ms": str(7 * DAY_MS)}),
        TopicSpec(VALID, partitions, {"retention.ms": str(7 * DAY_MS)}),
        TopicSpec(QUARANTINE, partitions, {"retention.ms": str(30 * DAY_MS)}),
        TopicSpec(WINDOWS, partitions, {"retention.ms": str(30 * DAY_MS)}),
        TopicSpec(ANOMALIES, 1, {"retention.ms": str(90 * DAY_MS)}),
    ]
