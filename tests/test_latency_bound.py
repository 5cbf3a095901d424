"""The clairvoyant latency floor of bench/latency_bound.py: its tests and its evidence."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from bench import latency_bound as lb
from streams.simulator.incidents import make_incident
from streams.simulator.traffic import shipped_releases, simulate
from tracking_plan.loader import load_plan

ROOT = Path(__file__).resolve().parents[1]
PLAN = load_plan(ROOT / "examples" / "ecommerce.yaml")
AT = datetime(2026, 11, 10, 11, 0, tzinfo=UTC)  # a Tuesday late morning


def starting_at(kind: str, params: dict, minutes: float = 40):
    return make_incident(kind, AT, AT + timedelta(minutes=minutes), params, plan=PLAN)


def test_first_minute_counts_minutes_from_the_start():
    assert lb.first_minute([0.5, 0.01, 1e-4], 1e-3) == 3
    assert lb.first_minute([1e-4], 1e-3) == 1
    assert lb.first_minute([0.5, 0.2], 1e-3) is None


def test_poisson_binomial_tail_is_the_binomial_when_shares_are_equal():
    shares = np.full(30, 0.4)
    for hits in (0, 5, 12, 30):
        up = lb.poisson_binomial_tail(shares, hits, up=True)
        down = lb.poisson_binomial_tail(shares, hits, up=False)
        assert up == pytest.approx(stats.binom.sf(hits - 1, 30, 0.4))
        assert down == pytest.approx(stats.binom.cdf(hits, 30, 0.4))
        # the two tails share exactly the point `hits`
        assert up + down == pytest.approx(1.0 + stats.binom.pmf(hits, 30, 0.4))


def test_poisson_tails_point_the_way_of_the_incident():
    observed, expected = np.array([2, 30]), np.array([10.0, 10.0])
    up = lb.poisson_pvalues(observed, expected, up=True)
    down = lb.poisson_pvalues(observed, expected, up=False)
    assert up[1] < 1e-5 < up[0] and down[0] < 0.01 < down[1]


def test_conversion_curve_counts_only_users_observed_that_long():
    # two users: one converts after 30 s, one never; the second is seen only 60 s
    clean = lb.Evidence(np.zeros(2), np.array([0.0, 60.0]), np.array([30.0, math.inf]), 120.0)
    curve = lb.conversion_curve([clean], 120.0)
    assert curve[0] == pytest.approx(0.5 / 3)  # 0 of 2 yet, half a pseudo-count
    assert curve[3] == pytest.approx(1.5 / 3)  # 30 s: 1 of 2
    assert curve[12] == pytest.approx(1.5 / 2)  # 120 s: only the first user was seen that long


def test_scope_keeps_the_incidents_source_version_and_event():
    incident = starting_at(
        "disappeared", {"event": "Products Searched", "source": "android", "app_version": "7.4.1"}
    )
    inside = lb.scope_of(incident)

    def envelope(source: str, event: str, version: str) -> dict:
        body = {"type": "track", "event": event, "context": {"app": {"version": version}}}
        return {"source": source, "body": body}

    assert inside(envelope("android", "Products Searched", "7.4.1"))
    assert not inside(envelope("ios", "Products Searched", "7.4.1"))
    assert not inside(envelope("android", "Product Viewed", "7.4.1"))
    assert not inside(envelope("android", "Products Searched", "7.4.0"))


def floor(kind: str, params: dict, seeds=(1, 2), minutes=40, hours=1.0) -> list:
    """The floor's latencies for one incident starting at AT, from `hours` of traffic."""
    incident = starting_at(kind, params, minutes)
    where = lb.make_setting(PLAN, [incident], AT, hours / 24, 5000)
    clean = [lb.gather(seed, True, where)[0] for seed in (10_000, 10_001, 10_002)]
    return lb.latencies([lb.gather(s, False, where)[0] for s in seeds], clean, kind)


def test_an_outage_of_every_session_is_found_within_minutes():
    for found in floor("drop", {"source": "web", "keep": 0.0}):
        assert found["score 0.75"] is not None and found["score 0.75"] <= 10


def test_an_incident_that_changes_nothing_is_not_found():
    # keep every session: the data with the "incident" are normal traffic
    for found in floor("drop", {"source": "web", "keep": 1.0}):
        assert found == {"score 0.5": None, "score 0.75": None}


def test_a_conversion_broken_for_every_order_is_found_and_an_intact_one_is_not():
    funnel = {"source": "web", "from_event": "Checkout Started", "to_event": "Order Completed"}
    # about 25 web checkouts in two hours, 40 % of which normally convert
    broken = floor("conversion_down", {**funnel, "fail": 1.0}, seeds=(1,), minutes=120, hours=6)
    intact = floor("conversion_down", {**funnel, "fail": 0.0}, seeds=(1,), minutes=120, hours=6)
    assert broken[0]["score 0.5"] is not None
    assert intact[0] == {"score 0.5": None, "score 0.75": None}


def test_a_run_with_the_schedule_is_the_backtests_own_data():
    # the floor is compared incident by incident with `trackwatch backtest`: same seed, same
    # calls (the releases it passes are those the simulator derives itself)
    incident = starting_at(
        "new_event", {"event": "Wishlist Added", "source": "ios", "app_version": "5.7.2"}
    )
    where = lb.make_setting(PLAN, [incident], AT, 1 / 24, 5000)
    shipped = shipped_releases(PLAN, [incident])
    ours = simulate(PLAN, AT, 1 / 24, 5000, 3, [incident], releases=[*where["releases"], *shipped])
    backtests = simulate(PLAN, AT, 1 / 24, 5000, 3, [incident])
    assert list(ours) == list(backtests)


def test_the_backtests_latencies_are_read_with_its_misses(tmp_path):
    seed_dir = tmp_path / "seed-7"
    seed_dir.mkdir()
    summary = {"latency_minutes": {"a bot": 3.0}, "missed": ["a payment failure"]}
    (seed_dir / "summary.json").write_text(json.dumps(summary))
    assert lb.engine_latencies(tmp_path, [7]) == {7: {"a bot": 3.0, "a payment failure": None}}


@pytest.mark.parametrize(
    "argv",
    [
        ["--users-per-day", "0"],
        ["--clean-seeds", "-1"],
        ["--days", "nan"],
        ["--seed", "seven"],
        ["--plan", "README.md"],
        ["--schedule", "/no/such/schedule.yaml"],
        ["--backtest", "/no/such/dir"],
    ],
)
def test_bad_arguments_stop_with_one_line_and_exit_code_2(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        lb.main(argv)
    assert stop.value.code == 2
    assert "error:" in capsys.readouterr().err
