"""Shared fixtures. Integration tests get a real embedded Kafka-protocol broker over TCP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker, create_topics

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PLAN = ROOT / "examples" / "ecommerce.yaml"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One embedded broker for the session, with the trackwatch topics created."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as b:
        create_topics(b.bootstrap)
        yield b


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of its own, for tests that stop/restart it or need empty topics."""
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as b:
        create_topics(b.bootstrap)
        yield b
