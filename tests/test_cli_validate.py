"""`trackwatch validate` through the real CLI app (typer's CliRunner)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from streams.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
PLAN = str(ROOT / "examples" / "ecommerce.yaml")
CTX = {"library": {"name": "analytics.js"}}
GOOD = {
    "type": "track",
    "event": "Product Added",
    "anonymousId": "a1",
    "context": CTX,
    "properties": {"cart_id": "c", "product_id": "p_abcd", "price": 1, "quantity": 2},
}
BAD = {**GOOD, "properties": {**GOOD["properties"], "price": "1", "quantity": 0}}
runner = CliRunner()


def write(path: Path, lines: list[Any]) -> Path:
    text = b"\n".join(x if isinstance(x, bytes) else orjson.dumps(x) for x in lines) + b"\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text))
    else:
        path.write_bytes(text)
    return path


def run(*args: str) -> Any:
    return runner.invoke(app, ["validate", *args])


def as_json(result: Any) -> dict[str, Any]:
    return orjson.loads(result.stdout)


def test_all_valid_exits_zero(tmp_path: Path) -> None:
    events = write(tmp_path / "ok.jsonl", [GOOD, GOOD, b"", GOOD])
    result = run("--plan", PLAN, str(events))
    assert result.exit_code == 0, result.output
    assert "3 calls: 3 valid" in result.stderr


def test_violations_exit_one_with_a_row_per_event_and_code(tmp_path: Path) -> None:
    events = write(tmp_path / "bad.jsonl", [GOOD, BAD, BAD, b"{not json", {"batch": [BAD, GOOD]}])
    result = run("--plan", PLAN, str(events), "--format", "json", "--max-examples", "2")
    assert result.exit_code == 1
    report = as_json(result)
    assert report["calls"] == 5 and report["lines"] == 5
    assert report["outcomes"] == {"valid": 2, "flagged": 0, "quarantined": 3, "malformed": 1}
    rows = {(r["event"], r["code"]): r for r in report["rows"]}
    assert set(rows) == {
        ("Product Added", "wrong_type"),
        ("Product Added", "out_of_range"),
        ("(malformed)", "malformed_json"),
    }
    wrong = rows[("Product Added", "wrong_type")]
    assert (wrong["count"], wrong["first_line"]) == (3, 2)
    assert [e["line"] for e in wrong["examples"]] == [2, 3]  # --max-examples 2
    assert wrong["examples"][0]["path"] == "$.properties.price"
    assert wrong["examples"][0]["got"] == "string '1'"
    assert rows[("(malformed)", "malformed_json")]["first_line"] == 4


def test_table_output(tmp_path: Path) -> None:
    events = write(tmp_path / "bad.jsonl", [BAD])
    result = run("--plan", PLAN, str(events))
    assert result.exit_code == 1
    for text in ("Product Added", "wrong_type", "out_of_range", "string"):
        assert text in result.stdout


def test_envelopes_sources_and_gzip(tmp_path: Path) -> None:
    refund = {
        "type": "track",
        "event": "Order Refunded",
        "userId": "u",
        "context": CTX,
        "properties": {"order_id": "ord_A1B2C3", "amount": 1, "currency": "EUR"},
    }
    envelope = {"source": "server", "received_at": "2026-11-23T12:00:00.000Z", "body": refund}
    events = write(tmp_path / "e.jsonl.gz", [envelope, refund])
    result = run("--plan", PLAN, str(events), "--source", "web", "--format", "json")
    report = as_json(result)
    assert [(r["event"], r["code"], r["count"]) for r in report["rows"]] == [
        ("Order Refunded", "wrong_source", 1)  # the bare call came from --source web
    ]
    assert result.exit_code == 1


def test_batch_shares_context(tmp_path: Path) -> None:
    call = {k: v for k, v in GOOD.items() if k != "context"}
    events = write(tmp_path / "b.jsonl", [{"batch": [call, call], "context": CTX}])
    result = run("--plan", PLAN, str(events), "--format", "json")
    assert result.exit_code == 0, result.stdout
    assert as_json(result)["calls"] == 2


def test_hostile_lines(tmp_path: Path) -> None:
    lines = [
        b'{"type": "track", "event": "\\ud800", "userId": "u"}',  # lone surrogate escape
        b"\xff\xfe not utf-8",
        b"[" * 100_000,
        orjson.dumps({**GOOD, "event": "Nope\u200f\u202e\x00"}),
        orjson.dumps({**GOOD, "properties": {"x" * 1_000_000: "y" * 1_000_000}}),
        b"null",
        b"[1, 2]",
        orjson.dumps({"batch": "nope"}),
        orjson.dumps({"batch": [None, 1, []]}),
    ]
    events = write(tmp_path / "h.jsonl", lines)
    result = run("--plan", PLAN, str(events), "--format", "json")
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    report = as_json(result)
    assert report["lines"] == len(lines)
    assert sum(report["outcomes"].values()) >= len(lines)
    events_seen = {r["event"] for r in report["rows"]}
    assert "Nope\\u200f\\u202e\\x00" in events_seen  # escaped for printing
    table = run("--plan", PLAN, str(events))
    assert table.exit_code == 1 and "Traceback" not in table.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--plan", PLAN, "missing.jsonl"], "events file not found"),
        (["--plan", "missing.yaml", "{events}"], "plan file not found"),
        (["--plan", PLAN, "{events}", "--format", "xml"], "unknown --format"),
        (["--plan", PLAN, "{events}", "--max-examples", "-1"], "--max-examples"),
        (["--plan", "{badplan}", "{events}"], "problem"),
    ],
)
def test_usage_errors_exit_two_without_traceback(
    tmp_path: Path, args: list[str], message: str
) -> None:
    events = write(tmp_path / "ok.jsonl", [GOOD])
    badplan = tmp_path / "bad.yaml"
    badplan.write_text(
        "plan: x\nversion: 1\nevents:\n  A:\n    properties:\n      p: {type: strnig}\n"
    )
    args = [a.format(events=events, badplan=badplan) for a in args]
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_missing_plan_option_is_a_usage_error(tmp_path: Path) -> None:
    result = run(str(write(tmp_path / "ok.jsonl", [GOOD])))
    assert result.exit_code == 2


def test_long_file_with_progress(tmp_path: Path) -> None:
    events = write(tmp_path / "long.jsonl", [GOOD] * 6000)  # > 1 MB: the progress bar is on
    assert events.stat().st_size > 1 << 20
    result = run("--plan", PLAN, str(events), "--format", "json")
    assert result.exit_code == 0
    assert as_json(result)["outcomes"]["valid"] == 6000


def test_corrupt_gzip_is_a_clear_error(tmp_path: Path) -> None:
    whole = gzip.compress(orjson.dumps(GOOD) * 1000)
    events = tmp_path / "cut.jsonl.gz"
    events.write_bytes(whole[: len(whole) // 2])
    result = run("--plan", PLAN, str(events))
    assert result.exit_code == 2
    assert "cannot read" in result.stderr
    assert "Traceback" not in result.output
