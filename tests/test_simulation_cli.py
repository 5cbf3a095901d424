"""`trackwatch backtest --profile` and `trackwatch simulate --profile`, with bad arguments too."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from bench import score_replay
from detectors.backtest import Label
from simulation.profiles import PROFILES
from streams.cli.app import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_a_profile_backtest_runs_on_the_profiles_own_plan_and_reports(tmp_path: Path):
    # a few hours (the engine is still learning): the whole chain runs on the shop's plan
    result = invoke("backtest", "--profile", "small-1k", "--days", "0.4", "--users-per-day",
                    "200", "--seed", "3", "--out-dir", tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "seed-3/summary.json").read_text())
    assert summary["profile"] == "small-1k" and summary["users_per_day"] == 200
    assert summary["days"] == 0.4 and summary["incidents"] == 0 and summary["events"] > 100
    assert summary["by_class"] == {}
    assert "false alerts" in result.output
    assert (tmp_path / "seed-3/alerts.jsonl").exists()


def test_a_profile_backtest_scores_the_profiles_labels_by_class():
    from detectors.backtest import AlertSpan, score
    from simulation.profiles import scenario

    labels = [Label.from_dict(x) for x in scenario(PROFILES["shop-5k"]).labels()]
    lost = next(lb for lb in labels if lb.incident_class == "events_lost")
    span = AlertSpan("a", "drop", {"source": "ios_app"}, [], lost.start + 60, lost.start + 240)
    result = score(labels, [span], days=10).summary()
    assert result["by_class"]["events_lost"] == {
        "found": 1, "total": 1, "latency": {lost.name: 4.0}
    }  # fmt: skip
    assert result["by_class"]["bot_flood"]["found"] == 0
    assert "campaign" not in result["by_class"]  # expects no alert


def test_profile_list_names_every_profile():
    result = invoke("backtest", "--profile", "list")
    assert result.exit_code == 0
    for name in ["ecommerce", *PROFILES]:
        assert name in result.output
    assert all(name in invoke("backtest", "--help").output for name in PROFILES)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "shop-6k"], "unknown profile 'shop-6k'"),
        (["--profile", "ünïcode\u200f"], "unknown profile"),
        (["--profile", "shop-5k", "--plan", "examples/ecommerce.yaml"], "apply to the ecommerce"),
        (["--profile", "shop-5k", "--incidents", "x.yaml"], "apply to the ecommerce"),
        (["--profile", "shop-5k", "--days", "400"], "--days must be between"),
    ],
)
def test_bad_backtest_profile_arguments_stop_with_one_line(args, message, tmp_path: Path):
    result = invoke("backtest", *args, "--out-dir", tmp_path)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2  # one line (a long one may wrap once)


def test_simulate_writes_a_profiles_traffic_labels_and_annotations(tmp_path: Path, capsys):
    out = tmp_path / "events.jsonl.gz"
    result = invoke("simulate", "--profile", "shop-5k", "--days", "0.6", "--users-per-day",
                    "300", "--seed", "4", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "labels.json").read_text())
    assert document["profile"] == "shop-5k" and document["seed"] == 4
    assert [Label.from_dict(x) for x in document["incidents"]] == []  # none within 0.6 days
    assert yaml.safe_load((tmp_path / "annotations.yaml").read_text()) == []
    alerts = tmp_path / "alerts.jsonl"
    annotations = tmp_path / "annotations.yaml"
    replayed = invoke("replay", "--plan", ROOT / "examples/shop.yaml", "--events", out,
                      "--annotations", annotations, "--alerts-out", alerts)  # fmt: skip
    assert replayed.exit_code == 0, replayed.output
    assert score_replay.main([str(tmp_path / "labels.json"), str(alerts)]) == 0
    assert "recall 0/0" in capsys.readouterr().out
    again = tmp_path / "again.jsonl.gz"
    invoke("simulate", "--profile", "shop-5k", "--days", "0.6", "--users-per-day", "300",
           "--seed", "4", "--out", again, "--labels-out", tmp_path / "l2.json",
           "--annotations-out", tmp_path / "a2.yaml")  # fmt: skip
    assert again.read_bytes() == out.read_bytes()  # same seed, same bytes


def test_simulate_writes_campaigns_as_annotations(tmp_path: Path):
    out = tmp_path / "events.jsonl"
    result = invoke("simulate", "--profile", "small-1k", "--users-per-day", "50",
                    "--max-events", "10", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    entries = yaml.safe_load((tmp_path / "annotations.yaml").read_text())
    assert [e["name"] for e in entries] == ["Easter sale newsletter"]
    labels = orjson.loads((tmp_path / "labels.json").read_bytes())["incidents"]
    assert len(labels) == len(PROFILES["small-1k"].incidents)
    assert len(out.read_text().splitlines()) == 10


def test_scoring_a_replay_with_bad_files_stops_with_one_line(tmp_path: Path, capsys):
    (tmp_path / "labels.json").write_text('{"incidents": [{"kind": "drop"}]}')
    (tmp_path / "alerts.jsonl").write_text("")
    for argv in (["/no/labels.json", "/no/alerts.jsonl"],
                 [str(tmp_path / "labels.json"), str(tmp_path / "alerts.jsonl")]):  # fmt: skip
        with pytest.raises(SystemExit) as stop:
            score_replay.main(argv)
        assert stop.value.code == 2 and "cannot score" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "shop-5k"], "give --out"),
        (["--profile", "nope", "--out", "{tmp}/e.jsonl"], "unknown profile 'nope'"),
        (["--profile", "shop-5k", "--to", "http://127.0.0.1:9", "--out", "{tmp}/e"], "not both"),
        (["--profile", "shop-5k", "--plan", "{tmp}/p.yaml", "--out", "{tmp}/e"], "--plan cannot"),
        (["--profile", "shop-5k", "--days", "-1", "--out", "{tmp}/e"], "--days must be"),
        (["--profile", "shop-5k", "--users-per-day", "1", "--out", "{tmp}/e"], "--users-per-day"),
        (["--profile", "shop-5k", "--out", "/dev/null/sub/e.jsonl"], "cannot create the folder"),
    ],
)
def test_bad_simulate_profile_arguments_stop_with_one_line(args, message, tmp_path: Path):
    result = invoke("simulate", *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
