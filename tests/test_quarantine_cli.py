"""`trackwatch quarantine replay` and `trackwatch plans publish|current` through the real CLI:
summaries, the published plan used by default, and one clear line (no traceback) per mistake."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from test_quarantine_support import V1, V2, plan, plan_text, produce, quarantine_messages, scenario
from typer.testing import CliRunner

from streams.broker import EmbeddedBroker, free_port
from streams.cli.app import app
from streams.plan_sync import ActivePlan
from streams.quarantine import SimulatedCrash, replay_quarantine
from streams.topics import QUARANTINE


def invoke(*args: str | Path):
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def fail_line(result) -> str:
    """The error line of a failed command (exit 2, `error:` on stderr)."""
    assert result.exit_code == 2, result.output
    assert "error:" in result.stderr
    return " ".join(result.stderr.split())


@pytest.fixture
def plan_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for name, text in {"v1": plan_text(V1), "v2": plan_text(V2, coupon=True)}.items():
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(text, encoding="utf-8")
    return files


def quarantine(bootstrap: str) -> None:
    envs = scenario()
    everything = envs["fixable"] + envs["broken"] + envs["unplanned"] + envs["valid"]
    produce(bootstrap, QUARANTINE, quarantine_messages(everything, plan(V1)))


@pytest.mark.integration
def test_replay_with_a_plan_file(fresh_broker: EmbeddedBroker, plan_files) -> None:
    quarantine(fresh_broker.bootstrap)
    b = fresh_broker.bootstrap
    dry = invoke("quarantine", "replay", "--since", "1h", "--plan", plan_files["v2"], "--broker", b,
                 "--dry-run", "--json")  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert orjson.loads(dry.stdout)["republished"] == 40

    table = invoke(
        "quarantine", "replay", "--since", "1h", "--plan", plan_files["v2"], "--broker", b
    )
    assert table.exit_code == 0, table.output
    assert "republished" in table.stdout and "40" in table.stdout
    assert "wrong_type" in table.stdout and "unplanned_event" in table.stdout

    again = invoke("quarantine", "replay", "--since", "2026-01-01T00:00:00Z", "--plan",
                   plan_files["v2"], "--broker", b, "--json")  # fmt: skip
    summary = orjson.loads(again.stdout)
    assert summary["republished"] == 0 and summary["already_replayed"] == 40
    assert summary["still_invalid"] == {"wrong_type": 10, "unplanned_event": 5}


@pytest.mark.integration
def test_replay_defaults_to_the_published_plan(fresh_broker: EmbeddedBroker, plan_files) -> None:
    b = fresh_broker.bootstrap
    quarantine(b)
    none = invoke("quarantine", "replay", "--since", "1h", "--broker", b)
    assert "none published" in fail_line(none)
    assert "no plan published" in fail_line(invoke("plans", "current", "--broker", b))

    published = invoke("plans", "publish", plan_files["v2"], "--broker", b)
    assert published.exit_code == 0 and V2 in published.stdout
    assert (
        "already the current plan"
        in invoke("plans", "publish", plan_files["v2"], "--broker", b).stdout
    )
    current = invoke("plans", "current", "--broker", b)
    assert current.exit_code == 0 and V2 in current.stdout

    replayed = invoke("quarantine", "replay", "--since", "1h", "--broker", b, "--event",
                      "Product Viewed,Other", "--json")  # fmt: skip
    summary = orjson.loads(replayed.stdout)
    assert summary["plan_version"] == V2 and summary["republished"] == 40


@pytest.mark.integration
def test_publishing_a_changed_plan_under_the_same_version_is_refused(
    fresh_broker: EmbeddedBroker, plan_files, tmp_path: Path
) -> None:
    b = fresh_broker.bootstrap
    assert invoke("plans", "publish", plan_files["v1"], "--broker", b).exit_code == 0
    changed = tmp_path / "changed.yaml"
    changed.write_text(plan_text(V1, coupon=True), encoding="utf-8")
    assert "bump `version:`" in fail_line(invoke("plans", "publish", changed, "--broker", b))


@pytest.mark.parametrize(
    ("since", "message"),
    [
        ("yesterday", "neither a duration"),
        ("5x", "neither a duration"),
        ("", "neither a duration"),
        ("2999-01-01T00:00:00Z", "in the future"),
        ("99999999d", "more than ten years"),
        ("\u202e2h", "neither a duration"),
    ],
)
def test_bad_since_is_a_clear_error(since: str, message: str, plan_files) -> None:
    result = invoke("quarantine", "replay", "--since", since, "--plan", plan_files["v2"])
    assert message in fail_line(result)


def test_missing_or_broken_plan_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert "cannot read plan" in fail_line(
        invoke("quarantine", "replay", "--since", "1h", "--plan", missing)
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text(plan_text(V1).replace("type: number", "type: numbr", 1), encoding="utf-8")
    line = fail_line(invoke("plans", "publish", broken))
    assert "broken.yaml:" in line and "numbr" in line


def test_unreachable_broker_is_a_clear_error(plan_files) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    for args in (
        ("quarantine", "replay", "--since", "1h", "--plan", plan_files["v2"]),
        ("quarantine", "replay", "--since", "1h"),
        ("plans", "publish", plan_files["v1"]),
        ("plans", "current"),
    ):
        assert f"cannot reach Kafka at {nowhere}" in fail_line(invoke(*args, "--broker", nowhere))


@pytest.mark.integration
def test_missing_topics_is_a_clear_error(tmp_path: Path, plan_files) -> None:
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as bare:
        result = invoke("quarantine", "replay", "--since", "1h", "--plan", plan_files["v2"],
                        "--broker", bare.bootstrap)  # fmt: skip
        assert "must exist" in fail_line(result)


@pytest.mark.integration
def test_after_a_crash_force_resumes(fresh_broker: EmbeddedBroker, plan_files) -> None:
    b = fresh_broker.bootstrap
    quarantine(b)
    with pytest.raises(SimulatedCrash):
        fixed = ActivePlan.of(plan(V2, coupon=True))
        asyncio.run(replay_quarantine(b, fixed, chunk=5, crash_after_chunks=1))
    args = ("quarantine", "replay", "--since", "1h", "--plan", plan_files["v2"], "--broker", b)
    assert "pass --force if it died" in fail_line(invoke(*args))
    resumed = invoke(*args, "--force", "--json")
    summary = orjson.loads(resumed.stdout)
    assert summary["recovered"] > 0
    assert summary["republished"] + summary["recovered"] == 40
