"""The offline replay (`trackwatch replay`) and the shared batch processing, without Kafka."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from streams.cli.app import app
from streams.envelope import parse_received_at
from streams.pipeline import BatchProcessor, encode_outputs
from streams.replay import replay
from tests.streaming_support import make_envelopes
from tests.worker_process import PLAN
from tracking_plan.loader import load_plan

runner = CliRunner()


@pytest.fixture(scope="module")
def plan():
    return load_plan(PLAN)


def write_events(path: Path, lines: list[bytes]) -> Path:
    data = b"\n".join(lines) + b"\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_batch_processor_routes_every_envelope(plan) -> None:
    envs = make_envelopes(200, seed=4, seconds=60)
    proc = BatchProcessor(plan)
    out = proc.process(orjson.dumps([*envs, {"source": "web"}, 17]))
    unique = {e["body"]["messageId"] for e in envs}
    assert out.received == len(envs) + 2
    assert sum(out.duplicates.values()) == len(envs) - len(unique)
    assert len(out.valid) + len(out.quarantine) == len(unique) + 2
    assert len(out.tallies) == len(unique)  # unreadable envelopes have no series
    broken = [q for q in out.quarantine if q["violations"][0]["code"] == "bad_envelope"]
    assert [q["envelope"] for q in broken] == [{"source": "web"}, 17]
    assert broken[0]["violations"][0]["path"] == f"$[{len(envs)}]"


@pytest.mark.parametrize("version", ["2026.11.1", 'v"2\\ \u00e9\u2028'])
def test_the_valid_message_is_the_json_of_origin_version_and_events(plan, version) -> None:
    """`encode_outputs` writes the events once and wraps them: the very bytes of the dict."""
    envelopes = make_envelopes(60, seed=9, seconds=60)
    envelopes[5]["body"]["event"] = 3  # not a track call: quarantined
    out = BatchProcessor(plan).process(orjson.dumps(envelopes))
    valid, quarantine = encode_outputs(out, [3, 17], version)
    assert valid == orjson.dumps({"origin": [3, 17], "plan_version": version, "events": out.valid})
    assert quarantine == orjson.dumps(out.quarantine)
    assert out.valid and out.quarantine


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        (b"\xff\xfe not json", "malformed_json", "raw_base64"),
        (b'{"unterminated": ', "malformed_json", "raw"),
        (b'"just a string"', "bad_envelope", "raw"),
        (b"", "malformed_json", "raw"),
    ],
)
def test_unreadable_messages_are_quarantined_with_their_bytes(plan, raw, code, field) -> None:
    out = BatchProcessor(plan).process(raw)
    (record,) = out.quarantine
    assert record["violations"][0]["code"] == code
    assert record["envelope"] is None and field in record
    assert not out.valid and not out.tallies


def test_replay_cli_writes_quarantine_windows_and_alerts(tmp_path: Path) -> None:
    envs = make_envelopes(1500, seed=8, seconds=1200)
    lines = [orjson.dumps(e) for e in envs]
    lines.insert(10, b"{broken json")
    lines.insert(20, '{"source": "w\u00e9b\u202e", "body": 1}'.encode())
    lines.insert(30, b"   ")
    events = write_events(tmp_path / "events.jsonl.gz", lines)
    out = {name: tmp_path / f"{name}.jsonl" for name in ("alerts", "q", "w")}
    result = runner.invoke(
        app,
        [
            "replay",
            "--plan", str(PLAN),
            "--events", str(events),
            "--alerts-out", str(out["alerts"]),
            "--quarantine-out", str(out["q"]),
            "--windows-out", str(out["w"]),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    q = read_jsonl(out["q"])
    codes = [r["violations"][0]["code"] for r in q]
    assert codes.count("malformed_json") == 1 and codes.count("bad_envelope") == 1
    assert all(set(r) >= {"envelope", "violations", "plan_version"} for r in q)
    assert all(set(v) == {"code", "path", "expected", "got"} for r in q for v in r["violations"])
    windows = read_jsonl(out["w"])
    unique = {e["body"]["messageId"]: e for e in envs}
    counted = sum(w["count"] for w in windows if w["kind"] == "volume")
    quarantined_events = len(q) - 2
    assert counted == len(unique) - quarantined_events
    assert out["alerts"].exists()
    assert f"{len(lines) - 1:,} envelopes" in result.output


def test_replay_is_deterministic_and_independent_of_file_compression(tmp_path: Path) -> None:
    lines = [orjson.dumps(e) for e in make_envelopes(800, seed=9, seconds=900)]
    outputs = []
    for name in ("a.jsonl", "b.jsonl.gz"):
        events = write_events(tmp_path / name, lines)
        w = tmp_path / f"{name}.w"
        alerts = tmp_path / f"{name}.alerts"
        result = runner.invoke(
            app,
            ["replay", "--plan", str(PLAN), "--events", str(events), "--alerts-out", str(alerts),
             "--windows-out", str(w)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        outputs.append((w.read_bytes(), alerts.read_bytes()))
    assert outputs[0] == outputs[1] and outputs[0][0]


def test_replay_matches_the_library_call(plan, tmp_path: Path) -> None:
    lines = [orjson.dumps(e) for e in make_envelopes(500, seed=10, seconds=600)]
    records = []
    stats = replay(plan, lines, on_window=records.append)
    assert stats.windows == len(records) > 0
    assert stats.envelopes == 500 and stats.valid + stats.quarantined + stats.duplicates == 500


@pytest.mark.parametrize(
    ("flag", "within"),
    [([], "10"), (["--early-minutes", "5"], "5"), (["--early-minutes", "0"], None)],
)
def test_replay_cli_sets_the_early_conversion_horizon(tmp_path: Path, flag, within) -> None:
    """Each cohort's conversion within --early-minutes comes sooner, labelled so; 0 turns it
    off (half an hour of traffic: no whole funnel window of an hour has passed yet)."""
    lines = [orjson.dumps(e) for e in make_envelopes(3000, seed=8, seconds=1800)]
    events = write_events(tmp_path / "e.jsonl", lines)
    w = tmp_path / "w.jsonl"
    result = runner.invoke(
        app,
        ["replay", "--plan", str(PLAN), "--events", str(events),
         "--alerts-out", str(tmp_path / "a.jsonl"), "--windows-out", str(w), *flag],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    conversions = [r for r in read_jsonl(w) if r["kind"] == "conversion"]
    labels = {r["series"].get("within_minutes") for r in conversions}
    assert labels == ({within} if within else set())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--events", "missing.jsonl"], "no such file"),
        (["--plan", "nope.yaml"], "nope.yaml"),
        (["--dimensions", "source,pla tform"], "not a dimension"),
        (["--alerts-out", "no/such/dir/a.jsonl"], "does not exist"),
        (["--early-minutes", "-1"], "--early-minutes"),
        (["--early-minutes", "ten"], "--early-minutes"),
    ],
)
def test_replay_cli_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    events = write_events(tmp_path / "e.jsonl", [orjson.dumps(make_envelopes(1)[0])])
    base = {"--plan": str(PLAN), "--events": str(events), "--alerts-out": str(tmp_path / "a")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        keep = "/" in value or flag in ("--dimensions", "--early-minutes")
        base[flag] = value if keep else str(tmp_path / value)
    argv = ["replay", *[x for kv in base.items() for x in kv]]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "item",
    [
        {"source": "", "received_at": "2026-09-21T00:00:00Z", "body": {}},
        {"source": 3, "received_at": "2026-09-21T00:00:00Z", "body": {}},
        {"source": "web", "received_at": 1790000000, "body": {}},
        {"source": "web", "received_at": "2026-09-21T00:00:00Z", "body": []},
        {"source": "web", "body": {}},
        ["not", "an", "envelope"],
    ],
)
def test_bad_envelopes_fail_the_fast_shape_check_like_check_envelope(plan, item) -> None:
    from streams.envelope import BadBatch, check_envelope

    with pytest.raises(BadBatch) as exc:
        check_envelope(item, 0)
    out = BatchProcessor(plan).process(orjson.dumps([item]))
    assert [r["violations"][0]["code"] for r in out.quarantine] == ["bad_envelope"]
    assert out.quarantine[0]["violations"][0]["got"] == str(exc.value)[:80]
    assert not out.valid and not out.tallies


def test_received_at_is_parsed_per_distinct_stamp(plan) -> None:
    envs = make_envelopes(6, seed=5, seconds=60, bad_every=0, dup_every=0)
    shared = "2026-09-21T00:00:05.250Z"
    for env in envs[:3]:
        env["received_at"] = shared
    envs[4]["received_at"] = "2026-09-21T02:00:05+02:00"  # the same instant, written otherwise
    for env in envs:
        del env["body"]["timestamp"]  # the event time is then the reception time
    proc = BatchProcessor(plan)
    out = proc.process(orjson.dumps(envs))
    expected = [parse_received_at(e["received_at"]).timestamp() for e in envs]
    assert [t.ts for t in out.tallies] == expected
    assert out.max_received_at == max(expected)
    # a later batch with a stamp seen before still gets its own value, not the last one's
    again = proc.process(orjson.dumps([{**envs[0], "body": {**envs[0]["body"], "messageId": "n"}}]))
    assert again.max_received_at == parse_received_at(shared).timestamp()


def test_a_processor_validates_with_the_plan_swapped_into_it() -> None:
    from streams.plan_sync import ActivePlan, swap_into
    from tests.test_quarantine_support import T0, V1, V2, plan_text, viewed
    from tracking_plan.loader import parse_plan

    env = viewed("m-1", "u-1", T0, coupon="X")  # ios, block mode: unplanned property -> quarantine
    v1 = ActivePlan.of(parse_plan(plan_text(V1)))
    proc = BatchProcessor(v1.plan, validator=v1.validator)
    assert proc.validator is v1.validator  # given, not compiled again
    first = proc.process(orjson.dumps([env]))
    assert [r["plan_version"] for r in first.quarantine] == [V1] and not first.valid

    v2 = ActivePlan.of(parse_plan(plan_text(V2, coupon=True)))
    assert swap_into(proc, v2) and not swap_into(proc, v2)
    env["body"]["messageId"] = "m-2"
    second = proc.process(orjson.dumps([env]))
    assert not second.quarantine
    assert [e["event"]["properties"]["coupon"] for e in second.valid] == ["X"]
    assert proc.plan_version == V2


def test_replay_quarantines_an_envelope_too_deep_to_write_back(tmp_path) -> None:
    """orjson reads 1024 levels but writes only 254: such an envelope is kept as JSON text."""
    deep: object = "x"
    for _ in range(400):
        deep = {"k": deep}
    events = tmp_path / "ev.jsonl"
    body = {"type": "track", "event": "Cart Viewed", "anonymousId": "a", "properties": deep}
    envelope = {"source": "server", "received_at": "2026-11-02T10:00:00Z", "body": body}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(5000)
    try:
        events.write_text(json.dumps(envelope) + "\n", encoding="utf-8")
    finally:
        sys.setrecursionlimit(limit)
    q = tmp_path / "q.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "replay",
            "--plan",
            str(PLAN),
            "--events",
            str(events),
            "--alerts-out",
            str(tmp_path / "a.jsonl"),
            "--quarantine-out",
            str(q),
        ],
    )
    assert result.exit_code == 0, result.output
    [line] = q.read_text(encoding="utf-8").splitlines()
    record = json.loads(line)
    assert "bad_envelope" in {v["code"] for v in record["violations"]}
    assert '"k"' in record["envelope_json"]


@pytest.mark.parametrize("depth", range(244, 258))
@pytest.mark.parametrize("valid", [True, False])
def test_events_at_the_edge_of_the_writable_depth_are_forwarded_or_quarantined(depth, valid):
    """orjson writes at most 254 levels; an event a level or two below that fits alone but not
    inside its output list. It once raised there, on every restart (a poison message)."""
    deep: object = "x"
    for _ in range(depth):
        deep = {"k": deep}
    properties = {"cart_id": "c", "extra": deep} if valid else {"extra": deep}
    body = {"type": "track", "event": "Cart Viewed", "anonymousId": "a", "properties": properties}
    envelope = {"source": "web", "received_at": "2026-11-02T10:00:00Z", "body": body}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(5000)
    try:
        raw = json.dumps([envelope]).encode()
    finally:
        sys.setrecursionlimit(limit)
    proc = BatchProcessor(load_plan(PLAN))
    out = proc.process(raw)
    valid_value, quarantine_value = encode_outputs(out, [0, 1], proc.plan_version)
    forwarded = orjson.loads(valid_value)["events"] if valid_value else []
    quarantined = orjson.loads(quarantine_value) if quarantine_value else []
    assert len(forwarded) + len(quarantined) == 1  # nothing lost, nothing doubled
