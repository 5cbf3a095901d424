"""Integration: plan hot reload in running workers, against the real embedded broker over TCP.

Two worker processes (one consumer group) start with plan v1 from their `--plan` file. Events
carrying a property v1 does not plan (`coupon`, ios is in block mode) are quarantined with
plan_version v1. `trackwatch plans publish` (the real CLI) then publishes v2, which plans it:
both workers report v2 on /metrics without a restart, and the same kind of events now arrive on
events.valid, marked with plan_version v2.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

import pytest
from test_quarantine_support import V1, V2, plan_text, viewed

from streams.broker import EmbeddedBroker, create_topics
from streams.topics import QUARANTINE, VALID
from tests.streaming_support import T0, produce, read_topic
from tests.worker_process import ROOT, start_worker, stop_worker

pytestmark = pytest.mark.integration
PARTITIONS = 4


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as b:
        create_topics(b.bootstrap, partitions=PARTITIONS)
        yield b


def plan_versions(proc: subprocess.Popen) -> set[str]:
    """The versions a worker reports in `trackwatch_plan_info` (empty while it is starting)."""
    try:
        with urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except (URLError, OSError):
        return set()
    prefix = 'trackwatch_plan_info{version="'
    return {
        line[len(prefix) :].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith(prefix) and line.rstrip().endswith(" 1.0")
    }


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def with_coupon(tag: str, n: int, at: float) -> list[dict]:
    """`n` ios Product Viewed envelopes with the property `coupon`, users spread over partitions."""
    return [viewed(f"{tag}-{i}", f"{tag}-user-{i}", at + i, coupon="SALE10") for i in range(n)]


def test_published_plan_reaches_every_worker_without_restart(kafka, tmp_path: Path) -> None:
    bootstrap = kafka.bootstrap
    app_id = f"tw-plans-{uuid.uuid4().hex[:6]}"
    workers = [
        start_worker(bootstrap, app_id, tmp_path / f"w{i}.log", tmp_path / f"d{i}")
        for i in range(2)
    ]

    def logs() -> str:
        return "\n".join((tmp_path / f"w{i}.log").read_text()[-2000:] for i in range(2))

    try:
        wait_for(lambda: all(plan_versions(w) == {V1} for w in workers), "both workers on v1")

        before = with_coupon("v1", 40, T0)
        produce(bootstrap, before, PARTITIONS, batch=10)
        quarantine = read_topic(
            bootstrap, QUARANTINE, until=lambda msgs: sum(map(len, msgs)) >= 40, timeout=90
        )
        records = [r for msg in quarantine for r in msg]
        assert len(records) == 40, logs()
        assert {r["plan_version"] for r in records} == {V1}
        for r in records:
            codes = {(v["code"], v["path"]) for v in r["violations"]}
            assert ("unplanned_property", "$.properties.coupon") in codes, r["violations"]

        v2 = tmp_path / "plan-v2.yaml"
        v2.write_text(plan_text(V2, coupon=True), encoding="utf-8")
        cli = [sys.executable, "-c", "from streams.cli import main; main()"]
        published = subprocess.run(
            [*cli, "plans", "publish", str(v2), "--broker", bootstrap],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert published.returncode == 0, published.stdout + published.stderr
        assert V2 in published.stdout

        # both workers switch, and report v2 only (the metric is one series: the plan in use)
        wait_for(lambda: all(plan_versions(w) == {V2} for w in workers), "both workers on v2")

        after = with_coupon("v2", 40, T0 + 60)
        produce(bootstrap, after, PARTITIONS, batch=10)
        ids = {e["body"]["messageId"] for e in after}

        def forwarded(msgs: list[dict]) -> list[tuple[str, str, object]]:
            return [
                (m["plan_version"], e["event"]["messageId"], e["event"]["properties"].get("coupon"))
                for m in msgs
                for e in m["events"]
                if e["event"].get("messageId") in ids
            ]

        valid = read_topic(bootstrap, VALID, until=lambda m: len(forwarded(m)) >= 40, timeout=90)
        got = forwarded(valid)
        assert sorted(mid for _, mid, _ in got) == sorted(ids), logs()
        assert {(version, coupon) for version, _, coupon in got} == {(V2, "SALE10")}
        # nothing of the second lot was quarantined
        quarantine = read_topic(bootstrap, QUARANTINE, idle=3, timeout=30)
        late = [r for msg in quarantine for r in msg if r["envelope"]["body"]["messageId"] in ids]
        assert late == []
        # and still both on v2 (neither fell back to its --plan file)
        assert all(plan_versions(w) == {V2} for w in workers)
    finally:
        codes = [stop_worker(w) for w in workers]
    assert codes == [0, 0], logs()
