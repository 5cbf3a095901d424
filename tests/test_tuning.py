"""Detector tuning files: the example lists every setting at its default, settings reach the
engine through the CLI, and bad files get one clear line naming the file, line and fix."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from detectors.engine_config import EngineConfig
from detectors.lifecycle import LifecycleConfig
from detectors.tuning import NESTED, NOT_TUNABLE, TuningError, load_tuning, parse_tuning
from streams.cli.app import app
from tests.streaming_support import make_envelopes

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "detectors.yaml"
PLAN = Path(__file__).resolve().parents[1] / "examples" / "ecommerce.yaml"


def test_the_example_sets_every_setting_to_its_default() -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert set(data) - set(NESTED) == {f.name for f in fields(EngineConfig)} - NOT_TUNABLE
    for block, cls in NESTED.items():
        assert set(data[block]) == {f.name for f in fields(cls)}
    assert load_tuning(EXAMPLE) == EngineConfig()


def test_slice_tests_are_tuned_in_their_own_block() -> None:
    config = parse_tuning("slice_tests: false\nslices:\n  alpha_per_day: 0.00005\n")
    assert config.slice_tests is False and config.slices.alpha_per_day == 0.00005
    with pytest.raises(TuningError, match=r"<tuning>:1: 'alpha_per_day'|belongs under 'slices:'"):
        parse_tuning("alpha_per_day: 0.001\n")
    with pytest.raises(TuningError, match="must be in"):
        parse_tuning("slices:\n  alpha_per_day: 2\n")
    with pytest.raises(TuningError, match="expected true or false"):
        parse_tuning("slice_tests: 1\n")


def test_the_silence_test_has_its_own_false_alarm_rate() -> None:
    config = parse_tuning("silence_alpha_per_day: 0.00005\nslices:\n  alpha_per_day: 0.001\n")
    assert config.silence_alpha_per_day == 0.00005 and config.slices.alpha_per_day == 0.001
    assert EngineConfig().silence_alpha_per_day < EngineConfig().slices.alpha_per_day
    for bad in ("0", "1.5", "-0.1"):
        with pytest.raises(TuningError, match="must be"):
            parse_tuning(f"silence_alpha_per_day: {bad}\n")


def test_settings_change_only_what_they_name() -> None:
    config = parse_tuning(
        "min_excess_units: 8\nslice_dims: [app_version, os]\nmax_series: 500.0\n"
        "lifecycle:\n  fire_windows: 5\n  fire_score: 0.9\n"
    )
    assert config.min_excess_units == 8.0 and config.slice_dims == ("app_version", "os")
    assert config.max_series == 500 and isinstance(config.max_series, int)
    assert config.lifecycle == LifecycleConfig(fire_windows=5, fire_score=0.9)
    assert config.min_change == EngineConfig().min_change
    assert parse_tuning("") == parse_tuning("# nothing\n") == EngineConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("min_exces_units: 8", "d.yaml:1: unknown setting 'min_exces_units'; did you mean"),
        ("min_change: 0.3\nfire_score: 0.9", "d.yaml:2: unknown setting 'fire_score'; it belongs"),
        ("lifecycle:\n  min_change: 1", "d.yaml:2: unknown setting 'lifecycle.min_change'; it"),
        ("lifecycle:\n  fire_windos: 2", "did you mean 'fire_windows'"),
        ("fire_sc\u043ere: 1", "unknown setting 'fire_sc\u043ere'"),  # a Cyrillic o
        ("1: 2", "unknown setting '1'"),
        ("levels: []", "'levels' cannot be tuned here"),
        ("lifecycle: 3", "d.yaml:1: lifecycle: expected a mapping"),
        ("lifecycle:\n  fire_score: 0.1", "need 0 < resolve_score <= fire_score <= 1"),
        ("lifecycle:\n  fire_windows: 0", "window counts must be >= 1"),
        ("min_excess_units: -1", "min_excess_units: must not be negative"),
        ("min_excess_units: .nan", "expected a finite number"),
        ("merge_minutes: .inf", "expected a finite number"),
        ("min_change: five", "min_change: expected a number, got 'five'"),
        ("disappear_windows: true", "expected a number, got True"),
        ("disappear_windows: 2.5", "expected a whole number"),
        ("new_event_min_count: 0", "must be at least 1"),
        ("baseline_alpha: 1.5", "must be in (0, 1]"),
        ("slice_dims: [app_version, 3]", "expected a list of dimension names"),
        ("- min_change: 1", "expected a mapping of settings"),
        ("min_change: [", "d.yaml:1: not valid YAML"),
        ("a: &x [1]\nb: *y", "not valid YAML"),
        ("min_change: 1\nmin_change: 2\n\tbad", "not valid YAML"),
    ],
)
def test_bad_settings_are_refused_with_where_and_what(text: str, message: str) -> None:
    with pytest.raises(TuningError) as caught:
        parse_tuning(text, "d.yaml")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TuningError, match="file not found"):
        load_tuning(tmp_path / "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00min_change: 1")
    with pytest.raises(TuningError, match="cannot read the file"):
        load_tuning(binary)
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(TuningError, match="larger than 64 KiB"):
        load_tuning(huge)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_a_config_or_a_tuning_error(text: str) -> None:
    try:
        config = parse_tuning(text)
    except TuningError:
        return
    assert isinstance(config, EngineConfig)


def test_replay_runs_the_engine_with_the_tuning_file(tmp_path: Path) -> None:
    """The same traffic alerts with the defaults and not when new events need 100,000 events."""
    lines = [orjson.dumps(e) for e in make_envelopes(1500, seed=8, seconds=1200)]
    events = tmp_path / "e.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    strict = tmp_path / "strict.yaml"
    strict.write_text("new_event_min_count: 100000\n", encoding="utf-8")
    kinds = []
    for extra in ([], ["--detectors", str(EXAMPLE)], ["--detectors", str(strict)]):
        out = tmp_path / "alerts.jsonl"
        result = CliRunner().invoke(
            app,
            ["replay", "--plan", str(PLAN), "--events", str(events),
             "--alerts-out", str(out), *extra],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        kinds.append({orjson.loads(line)["kind"] for line in out.read_bytes().splitlines()})
    assert kinds[0] == kinds[1] and "new_event" in kinds[0]
    assert "new_event" not in kinds[2]


@pytest.mark.parametrize("command", ["replay", "worker", "backtest"])
def test_a_bad_tuning_file_stops_each_command_with_one_line(tmp_path: Path, command) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("lifecycle:\n  fire_windos: 2\n", encoding="utf-8")
    events = tmp_path / "e.jsonl"
    events.write_bytes(orjson.dumps(make_envelopes(1)[0]) + b"\n")
    args = {
        "replay": [
            "--plan",
            str(PLAN),
            "--events",
            str(events),
            "--alerts-out",
            str(tmp_path / "a"),
        ],
        "worker": ["--metrics-port", "0", "--plan", str(PLAN)],
        "backtest": ["--days", "1", "--out-dir", str(tmp_path / "out")],
    }[command]
    result = CliRunner().invoke(app, [command, *args, "--detectors", str(bad)])
    assert result.exit_code == 2, result.output
    assert f"--detectors {bad}:2: unknown setting 'lifecycle.fire_windos'" in result.output
    assert "Traceback" not in result.output
