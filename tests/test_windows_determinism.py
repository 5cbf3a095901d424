"""Two replays of the same input give byte-identical outputs, whatever PYTHONHASHSEED (which
orders sets and dicts of strings differently in each process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from streams.cli import main; main()"]


def _run(args: list[str], seed: str) -> None:
    env = {**os.environ, "PYTHONHASHSEED": seed, "COLUMNS": "200", "TERM": "dumb"}
    proc = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr


def test_replays_under_different_hash_seeds_give_the_same_bytes(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl.gz"
    plan = str(ROOT / "examples" / "ecommerce.yaml")
    # a day and a quarter: the companion pairs are chosen at the first midnight and published
    # after it; the simulator sends some events late (revisions) and some invalid ones
    _run(["simulate", "--plan", plan, "--days", "1.25", "--users-per-day", "1500",
          "--seed", "3", "--out", str(events)], "0")  # fmt: skip
    outputs = {}
    for seed in ("1", "2"):
        out = tmp_path / seed
        out.mkdir()
        _run(["replay", "--plan", plan, "--events", str(events),
              "--alerts-out", str(out / "alerts.jsonl"),
              "--windows-out", str(out / "windows.jsonl"),
              "--quarantine-out", str(out / "quarantine.jsonl")], seed)  # fmt: skip
        outputs[seed] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    windows = [orjson.loads(line) for line in outputs["1"]["windows.jsonl"].splitlines()]
    kinds = {r["kind"] for r in windows}
    assert kinds == {"volume", "conversion", "activity"}
    assert any(r["revision"] for r in windows)
    assert any(r["series"].get("funnel") == "(companion)" for r in windows)
    assert outputs["1"]["quarantine.jsonl"]
    for name in ("windows.jsonl", "alerts.jsonl", "quarantine.jsonl"):
        assert outputs["1"][name] == outputs["2"][name], name
