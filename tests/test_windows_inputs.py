"""The new aggregator settings at the entry points (replay CLI), and hostile input to the
activity, revision and companion state."""

from __future__ import annotations

import json
import math
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from streams.cli.app import app
from streams.windows import Tally, WindowAggregator, path_labels, tally_paths
from tests.streaming_support import T0, body_for
from tests.worker_process import PLAN
from tracking_plan.model import Funnel, Plan, SourceSpec
from tracking_plan.normalise import format_timestamp

runner = CliRunner()


def _envelope(name: str, user: str, ts: float, received: float, mid: str) -> bytes:
    body = body_for(name, user, ts, mid, "web")
    return orjson.dumps({"source": "web", "received_at": format_timestamp(received), "body": body})


def _events(tmp_path: Path) -> Path:
    """Ten minutes of traffic, then an event flushed 30 minutes late and one 7 hours late."""
    lines = [_envelope("Product Viewed", f"u{i % 7}", T0 + i, T0 + i, f"m{i}") for i in range(600)]
    lines += [_envelope("Product Viewed", "late", T0 + 5, T0 + 1800, "late-1")]
    lines += [_envelope("Product Viewed", f"u{i}", T0 + 1800 + i, T0 + 1800 + i, f"n{i}")
              for i in range(5)]  # fmt: skip
    lines += [_envelope("Product Viewed", f"u{i}", T0 + 7 * 3600 + i, T0 + 7 * 3600 + i, f"o{i}")
              for i in range(5)]  # fmt: skip
    lines += [_envelope("Product Viewed", "later", T0 + 10, T0 + 7 * 3600 + 10, "late-2")]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _replay(tmp_path: Path, *options: str):
    args = ["replay", "--plan", str(PLAN), "--events", str(_events(tmp_path)),
            "--alerts-out", str(tmp_path / "alerts.jsonl"),
            "--windows-out", str(tmp_path / "windows.jsonl"), *options]  # fmt: skip
    return runner.invoke(app, args)


def test_replay_reports_revised_and_too_late_events(tmp_path: Path) -> None:
    result = _replay(tmp_path)  # by default, a week: both late events count where they belong
    assert result.exit_code == 0, result.output
    assert "2 late (2 revised, 0 too late)" in result.output
    result = _replay(tmp_path, "--late-horizon-minutes", "360")
    assert result.exit_code == 0, result.output
    assert "2 late (1 revised, 1 too late)" in result.output
    windows = [json.loads(line) for line in (tmp_path / "windows.jsonl").read_text().splitlines()]
    (revision,) = [w for w in windows if w["revision"]]
    assert revision["window_start"] == T0 // 60 * 60 and revision["count"] == 1
    result = _replay(tmp_path, "--late-horizon-minutes", "0")
    assert result.exit_code == 0, result.output
    assert "2 late (0 revised, 2 too late)" in result.output
    result = _replay(tmp_path, "--late-horizon-minutes", "480", "--companion-minutes", "0")
    assert "2 late (2 revised, 0 too late)" in result.output


@pytest.mark.parametrize(
    "options",
    [
        ["--late-horizon-minutes", "-1"],
        ["--late-horizon-minutes", "6h"],
        ["--late-horizon-minutes", str(10**30)],
        ["--companion-minutes", "-5"],
        ["--companion-minutes", "ten\u202e"],
        ["--companion-minutes", "100000"],
    ],
)
def test_bad_settings_are_refused_without_a_traceback(tmp_path: Path, options) -> None:
    result = _replay(tmp_path, *options)
    assert result.exit_code == 2
    assert "Traceback" not in result.output and options[0] in result.output


def test_the_aggregator_refuses_negative_settings() -> None:
    with pytest.raises(ValueError, match="companion_minutes"):
        WindowAggregator(companion_minutes=-1)
    with pytest.raises(ValueError, match="late_horizon_seconds"):
        WindowAggregator(late_horizon_seconds=-1)


SOURCES = {"web": SourceSpec("web", platform="web")}
HOSTILE_PLAN = Plan(name="h", version="1", sources=SOURCES,
                    funnels=(Funnel("f", ("A", "B\u0000"), window_minutes=1),))  # fmt: skip
_TEXT = st.text(st.characters(codec="utf-8"), max_size=80)
_TIMES = st.one_of(
    st.floats(0, 3 * 86_400, allow_nan=False),
    st.sampled_from([-1e15, 1e15, 2**53, -(2**53)]),
)


@settings(max_examples=150, deadline=None)
@given(
    calls=st.lists(
        st.tuples(
            st.one_of(_TEXT, st.sampled_from(["A", "B\u0000", "identify", "(broken)"])),
            _TIMES,
            st.one_of(st.none(), _TEXT),
            st.one_of(st.none(), _TEXT),
            st.one_of(_TEXT, st.sampled_from(["1.0", "\u202e9"])),
            st.booleans(),
            st.booleans(),
        ),
        max_size=60,
    ),
    cut=st.integers(0, 60),
)
def test_hostile_tallies_keep_the_state_serialisable_and_resumable(calls, cut) -> None:
    """Unicode-odd names and ids, times far in the past or future: the aggregator (activity,
    revisions, companions included) neither fails nor loses its place across a snapshot."""
    paths = tally_paths(("source", "platform", "app_version"))

    def tally(call) -> Tally:
        key, t, anonymous, user, version, planned, quarantined = call
        labels = path_labels({"context": {"app": {"version": version}}}, paths)
        return Tally("web", key, planned, 1_790_000_040.0 + t, ("x",) if quarantined else (),
                     quarantined, anonymous, user, labels)  # fmt: skip

    def new() -> WindowAggregator:
        return WindowAggregator(plan=HOSTILE_PLAN, funnels=HOSTILE_PLAN.funnels,
                                companion_minutes=1, late_horizon_seconds=600)  # fmt: skip

    whole, first = new(), new()
    out_whole, out_split = [], []
    for i, call in enumerate(calls):
        whole.add_tallies([tally(call)], paths)
        if i < cut:
            first.add_tallies([tally(call)], paths)
        if i % 5 == 0:
            out_whole += whole.advance()
            if i < cut:
                out_split += first.advance()
    resumed = new()
    state = json.dumps(first.to_state(), allow_nan=False)  # what a snapshot writes
    resumed.load_state(json.loads(state))
    for i, call in enumerate(calls):
        if i >= cut:
            resumed.add_tallies([tally(call)], paths)
            if i % 5 == 0:
                out_split += resumed.advance()
    out_whole += whole.flush_all()
    out_split += resumed.flush_all()
    assert [orjson.dumps(r.to_dict()) for r in out_whole] == [
        orjson.dumps(r.to_dict()) for r in out_split
    ]
    assert all(math.isfinite(r.window_start) for r in out_whole)
    assert (resumed.late_events, resumed.revised_events, resumed.too_late_events) == (
        whole.late_events,
        whole.revised_events,
        whole.too_late_events,
    )


def test_the_worker_exports_late_revised_and_too_late_events_once() -> None:
    from prometheus_client import REGISTRY

    from streams.worker import _export_late

    def value(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"source": "kiosk\u202e"}) or 0.0

    names = ("trackwatch_late_events_total", "trackwatch_late_revised_events_total",
             "trackwatch_too_late_events_total")  # fmt: skip
    before = [value(n) for n in names]
    a = WindowAggregator(late_horizon_seconds=3600)
    state = {"late_seen": {}}
    paths = tally_paths(("source", "platform", "app_version"))
    labels = path_labels({}, paths)
    for t in (T0 + 9000, T0 + 8000, T0):  # on time, revised, too late
        a.add_tallies([Tally("kiosk\u202e", "View", True, t, (), False, "u", None, labels)], paths)
        _export_late(a, state)
        _export_late(a, state)  # nothing new: nothing added
    assert [value(n) - b for n, b in zip(names, before, strict=True)] == [2, 1, 1]
