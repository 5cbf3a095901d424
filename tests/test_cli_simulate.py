"""`trackwatch simulate`: files, sending, and clear errors for bad arguments."""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from typer.testing import CliRunner

from detectors.annotations import load_annotations
from streams.cli import app
from tests.conftest import EXAMPLE_PLAN

runner = CliRunner()
SMALL = ["--plan", str(EXAMPLE_PLAN), "--days", "0.05", "--users-per-day", "5000"]


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
        received.append({"auth": request.headers["Authorization"], **(await request.json())})
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
