"""Fault injection for worker subprocesses: the Faust consumer loses messages on the way.

faust-streaming may discard records it fetched while it finishes a rebalance (it clears the
agents' queues on `flow_control.resume()`, see streams/gaps.py): the agent never sees them and
nothing fetches them again. `install` reproduces that deterministically: after every change of
consumer generation (each rebalance, the first assignment included), the 3rd to 5th message the
consumer delivers for each partition of the given topics is silently dropped. The worker must
notice the gap in offsets and read the missing messages back from the broker.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from faust.transport.consumer import Consumer

log = logging.getLogger("tests.consumer_faults")
DROPPED = range(2, 5)  # indexes of the deliveries dropped per partition and generation


def install(topics: str) -> None:
    """Drop messages of the comma-separated `topics` (see the module docstring)."""
    names = {t.strip() for t in topics.split(",") if t.strip()}
    init = Consumer.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        deliver = self.callback
        seen: Counter[Any] = Counter()
        generation: list[int | None] = [None]

        async def callback(message: Any) -> Any:
            if message.topic in names:
                current = self.app.consumer_generation_id
                if current != generation[0]:
                    generation[0] = current
                    seen.clear()
                index = seen[message.tp]
                seen[message.tp] += 1
                if index in DROPPED:
                    log.warning(
                        "fault: dropped %s/%d offset %d (generation %s)",
                        message.topic, message.partition, message.offset, current,
                    )  # fmt: skip
                    return None
            return await deliver(message)

        self.callback = callback

    Consumer.__init__ = __init__  # type: ignore[method-assign]
