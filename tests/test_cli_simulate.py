"""`trackwatch simulate`: files, sending, and clear errors for bad arguments."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from typer.testing import CliRunner

from detectors.annotations import load_annotations
from streams.cli.app import app
from tests.conftest import EXAMPLE_PLAN

runner = CliRunner()
SMALL = ["--plan", str(EXAMPLE_PLAN), "--days", "0.05", "--users-per-day", "5000"]
# live traffic on the real clock: enough users for events every second, even at night
BUSY = ["--plan", str(EXAMPLE_PLAN), "--days", "0.05", "--users-per-day", "300000"]


def invoke(*args: str) -> Any:
    return runner.invoke(app, ["simulate", *args])


@pytest.fixture
def schedule(tmp_path: Path) -> Path:
    path = tmp_path / "incidents.yaml"
    path.write_text(
        "incidents:\n"
        "  - name: Bot on product pages ☃\n    kind: spike\n    at: day 0 00:20\n"
        "    duration: 30m\n    event: Product Viewed\n    source: web\n    factor: 3\n"
        "  - name: Evening newsletter\n    kind: campaign\n    at: day 0 00:30\n"
        "    duration: 20m\n    sources: [web]\n"
        "  - name: Far away\n    kind: drop\n    at: day 30 10:00\n    duration: 1h\n"
        "    source: ios\n",
        encoding="utf-8",
    )
    return path


def test_writes_events_labels_and_annotations(tmp_path: Path, schedule: Path) -> None:
    events, labels, notes = tmp_path / "ev.jsonl.gz", tmp_path / "l.json", tmp_path / "a.yaml"
    result = invoke(
        *SMALL, "--out", str(events), "--incidents", str(schedule), "--labels-out", str(labels),
        "--annotations-out", str(notes),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 of 3 scheduled incidents start after" in result.output
    with gzip.open(events, "rb") as handle:
        lines = [orjson.loads(line) for line in handle]
    assert len(lines) > 500
    assert all(set(line) == {"source", "received_at", "body"} for line in lines)
    assert lines[0]["received_at"].startswith("2026-11-02T00:")
    truth = orjson.loads(labels.read_bytes())
    assert truth["start"] == "2026-11-02T00:00:00Z" and truth["seed"] == 7
    assert [i["kind"] for i in truth["incidents"]] == ["spike", "campaign"]
    assert truth["incidents"][0]["series"] == {
        "event": "Product Viewed",
        "source": "web",
        "platform": "web",
    }
    assert truth["incidents"][0]["name"] == "Bot on product pages ☃"
    [annotation] = load_annotations(notes)
    assert annotation.name == "Evening newsletter" and "web" in annotation.sources


def test_same_seed_same_file_and_max_events(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    for path in (first, second):
        result = invoke(*SMALL, "--no-incidents", "--out", str(path), "--max-events", "300")
        assert result.exit_code == 0, result.output
    assert first.read_bytes() == second.read_bytes()
    assert len(gzip.decompress(first.read_bytes()).splitlines()) == 300


@pytest.fixture
def collector() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A collector stand-in on 127.0.0.1 in a thread of its own."""
    received: list[dict[str, Any]] = []
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        received.append({"auth": request.headers["Authorization"], "_arrived": time.time(), **body})
        return web.json_response({"success": True})

    async def start() -> None:
        application = web.Application()
        application.router.add_post("/v1/batch", handle)
        state["runner"] = runner_ = web.AppRunner(application)
        await runner_.setup()
        site = web.TCPSite(runner_, "127.0.0.1", 0)
        await site.start()
        state["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()))
    thread.start()
    ready.wait(10)
    yield f"http://127.0.0.1:{state['port']}", received
    asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_sends_to_the_collector(
    collector: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    url, received = collector
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n  k_web: web\n  k_ios: ios\n  k_and: android\n  k_srv: server\n")
    result = invoke(
        *SMALL, "--to", url, "--speed", "0", "--max-events", "250", "--write-keys", str(keys),
        "--no-incidents",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "250 accepted, 0 rejected" in result.output
    assert sum(len(r["batch"]) for r in received) == 250


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "http://127.0.0.1:1", "--out", "x.jsonl"], "either --to URL"),
        (["--days", "0"], "--days must be between 0 and 366"),
        (["--days", "nan"], "--days must be between 0 and 366"),
        (["--users-per-day", "0"], "--users-per-day must be between"),
        (["--speed", "-2"], "--speed must be 0 or a positive number"),
        (["--duration", "0"], "--duration must be a positive number"),
        (["--max-events", "-1"], "--max-events must be positive"),
        (["--to", "ftp://127.0.0.1"], "must look like http://127.0.0.1:8080"),
        (["--out", "x.jsonl", "--start", "next tuesday"], "--start 'next tuesday' is not"),
        (["--out", "x.jsonl", "--start", "2026-11-02\u202e"], "is not an ISO-8601 time"),
        (["--out", "x.jsonl", "--start", "1066-10-14"], "between the years 2000 and 2100"),
        (["--out", "x.jsonl", "--plan", "no/such/plän.yaml"], "plän.yaml"),
        (["--out", "x.jsonl", "--incidents", "no/such/incidents.yaml"], "cannot read"),
        (["--out", "no/such/dir/x.jsonl"], "cannot write"),
        (["--to", "http://127.0.0.1:1", "--write-keys", "no/k.yaml"], "write-key file not found"),
        (["--history", "2h", "--speed", "60"], "--history needs the real clock (--speed 1)"),
        (["--history", "2h", "--start", "2026-11-02"], "give either --history or --start"),
        (["--history", "two hours"], "--history: duration 'two hours' is not like"),
        (["--history", "90d"], "at most 60 days"),
        (["--out", "x.jsonl", "--history", "2h"], "--history is for sending to a collector"),
        (["--history", "2h", "--history-broker", "kafka"], "must be HOST:PORT"),
        (["--history-broker", "127.0.0.1:1", "--speed", "60"], "on the real clock"),
    ],
)  # fmt: skip
def test_bad_arguments_give_one_clear_error(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if "--plan" not in args:
        args = [*args, "--plan", str(EXAMPLE_PLAN)]
    if "--incidents" not in args:
        args = [*args, "--no-incidents"]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.jsonl").exists()


def test_bad_plan_and_schedule_name_file_and_problem(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("plan: x\nversion: 1\nevents: [oops\n", encoding="utf-8")
    result = invoke("--out", str(tmp_path / "e.jsonl"), "--plan", str(plan), "--no-incidents")
    assert (
        result.exit_code == 2 and "plan.yaml" in result.output and "Traceback" not in result.output
    )
    schedule = tmp_path / "inc.yaml"
    schedule.write_text("incidents:\n  - kind: spike\n    at: day 1 10:00\n    duration: 1h\n")
    result = invoke(*SMALL, "--out", str(tmp_path / "e.jsonl"), "--incidents", str(schedule))
    assert result.exit_code == 2
    assert "inc.yaml: incident 1: spike needs event, source" in " ".join(result.output.split())


def test_default_schedule_missing_runs_without_incidents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no examples/incidents.yaml here
    result = invoke(*SMALL, "--out", "e.jsonl", "--max-events", "10")
    assert result.exit_code == 0, result.output
    assert "simulating without incidents" in result.output
    assert len((tmp_path / "e.jsonl").read_bytes().splitlines()) == 10


def _keys_file(tmp_path: Path) -> Path:
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n  k_web: web\n  k_ios: ios\n  k_and: android\n  k_srv: server\n")
    return keys


def _timestamps(received: list[dict[str, Any]]) -> list[float]:
    from tracking_plan.normalise import parse_timestamp

    return [parse_timestamp(e["timestamp"]) for r in received for e in r["batch"]]


def test_sending_runs_on_the_real_clock(
    collector: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """The default a user gets: the past of --history at once, then live events stamped now,
    none in the future, so events sent by hand at the same time are never ahead of them."""
    url, received = collector
    began = time.time()
    result = invoke(
        *BUSY, "--to", url, "--history", "10m", "--duration", "4", "--no-incidents",
        "--write-keys", str(_keys_file(tmp_path)),
    )  # fmt: skip
    ended = time.time()
    assert result.exit_code == 0, result.output
    assert "on the real clock" in result.output
    stamps = sorted(_timestamps(received))
    assert stamps and stamps[-1] <= ended + 1.0  # nothing from the future
    # the history: the last 10 minutes (a few app events are stamped earlier: sent late, as
    # apps that were offline do)
    assert stamps[len(stamps) // 20] >= began - 600 - 60
    assert stamps[0] <= began - 300
    live = [t for t in stamps if t >= began]
    assert live, "no live event in 4 s of traffic"
    # live events went out when their time came (the sender stamps nothing itself)
    assert all(arrived >= t - 1.0 for t, arrived in _arrivals(received) if t >= began)


def _arrivals(received: list[dict[str, Any]]) -> list[tuple[float, float]]:
    from tracking_plan.normalise import parse_timestamp

    return [(parse_timestamp(e["timestamp"]), r["_arrived"]) for r in received for e in r["batch"]]


@pytest.mark.integration
def test_history_goes_straight_into_kafka_before_live_traffic(
    collector: tuple[str, list[dict[str, Any]]], fresh_broker: Any, tmp_path: Path
) -> None:
    from kafka import KafkaConsumer, TopicPartition

    from streams.envelope import decode_batch
    from streams.topics import RAW

    url, received = collector
    ready = tmp_path / "ready.json"
    result = invoke(
        *BUSY, "--to", url, "--history", "30m", "--history-broker", fresh_broker.bootstrap,
        "--ready-file", str(ready), "--duration", "3", "--no-incidents",
        "--write-keys", str(_keys_file(tmp_path)),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert ready.exists() and "live_from" in orjson.loads(ready.read_bytes())
    consumer = KafkaConsumer(
        bootstrap_servers=fresh_broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    consumer.assign([TopicPartition(RAW, p) for p in consumer.partitions_for_topic(RAW)])
    history = [env for msg in consumer for env in decode_batch(msg.value)]
    consumer.close()
    assert len(history) > 100
    from streams.envelope import received_at_epoch

    past = [received_at_epoch(env["received_at"]) for env in history]
    assert received, "no live traffic"
    # all of the history was in Kafka (acknowledged) before the first live request was sent
    assert max(past) <= min(r["_arrived"] for r in received)
    assert f"{len(history):,} events written into events.raw" in " ".join(result.output.split())
