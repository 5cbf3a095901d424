"""Faults a worker process of tests/test_e2e_alerts.py can be put into while it runs, each
switched on by a file in a folder the test owns (so the test decides when):

- ``stall``: the process agent stops before its next message and never goes on (a stuck agent);
  the worker stays up and keeps serving /metrics.
- ``retention``: the next events.raw message of each partition never reaches the agent, and the
  broker answers that everything before the agent's next offset was deleted, as retention does
  to a backlog older than `retention.ms` (the embedded broker cannot delete records itself).

Installed before the worker starts: ``python -c "import tests.worker_faults as f;
f.install(FOLDER); from streams.cli import main; main()" worker ...``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from faust.transport.consumer import Consumer

from streams import worker
from streams.gaps import RangeReader
from streams.topics import RAW

log = logging.getLogger("tests.worker_faults")
DELETED_UP_TO = 2**62  # the log start the broker reports under `retention`


def install(folder: str) -> None:
    switches = Path(folder)
    process_one = worker.Pipeline._process_one

    async def stalling(self: Any, *args: Any, **kwargs: Any) -> Any:
        if (switches / "stall").exists():
            log.warning("fault: the process agent stalls")
            await asyncio.Event().wait()  # never set
        return await process_one(self, *args, **kwargs)

    worker.Pipeline._process_one = stalling  # type: ignore[method-assign]

    init = Consumer.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        deliver = self.callback
        dropped: set[Any] = set()

        async def callback(message: Any) -> Any:
            if (
                message.topic == RAW
                and message.tp not in dropped
                and (switches / "retention").exists()
            ):
                dropped.add(message.tp)
                log.warning("fault: %s/%d offset %d never delivered",
                            message.topic, message.partition, message.offset)  # fmt: skip
                return None
            return await deliver(message)

        self.callback = callback

    Consumer.__init__ = __init__  # type: ignore[method-assign]
    log_start = RangeReader.log_start

    async def after_retention(self: Any, topic: str, partition: int) -> int:
        if topic == RAW and (switches / "retention").exists():
            return DELETED_UP_TO
        return await log_start(self, topic, partition)

    RangeReader.log_start = after_retention  # type: ignore[method-assign]
