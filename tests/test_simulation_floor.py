"""The clairvoyant floor for the independent generator's profiles (bench/latency_profiles.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from bench import latency_bound as lb
from bench import latency_profiles as lp
from simulation.incidents import DoubleFiring, EventsLost, SparseEventStops
from simulation.profiles import PROFILES, Planned

SHOP = PROFILES["shop-5k"]
QUIET = Console(file=open("/dev/null", "w"))  # noqa: SIM115 - closed with the process


def floor(planned: Planned, users: int = 3000, days: float = 0.6, clean: int = 2):
    profile = replace(SHOP, incidents=(planned,))
    _, rows = lp.floor_rows(profile, [1], clean, days, users, QUIET)
    ((_, found),) = rows
    return found[0]


def test_most_events_lost_are_found_within_minutes():
    found = floor(Planned(EventsLost, "lost", "day 0 11:00", 1 / 3))
    assert found[lp.FIRING] is not None and found[lp.FIRING] <= 10
    assert found["by"] == "users"


def test_an_incident_that_changes_nothing_is_not_found():
    found = floor(Planned(EventsLost, "nothing lost", "day 0 11:00", 1 / 3, {"keep": 1.0}))
    assert found == {"score 0.5": None, "score 0.75": None}


def test_double_firing_is_found_on_its_events_or_repeated_order_ids():
    found = floor(Planned(DoubleFiring, "twice", "day 0 10:00", 3), users=3000, days=0.6)
    assert found[lp.FIRING] is not None and found["by"] in ("events", "repeated order ids")


def test_the_watcher_counts_users_once_and_repeated_keys():
    incident = DoubleFiring(name="twice", start=1000.0, end=4600.0)
    watcher = lp.Watcher(incident, lambda *a: None, clean=False)

    def order(order_id: str, user: str) -> dict:
        body = {"event": "Order Placed", "anonymousId": user,
                "properties": {"order_id": order_id}}  # fmt: skip
        return {"source": "storefront", "body": body}

    watcher.add(order("FJ-1", "a"), 900.0)  # before the start: remembered, not counted
    watcher.add(order("FJ-1", "a"), 1010.0)
    watcher.add(order("FJ-2", "b"), 1100.0)
    watcher.add(order("FJ-2", "b"), 1101.0)
    watcher.add({"source": "ios_app", "body": order("FJ-3", "c")["body"]}, 1200.0)
    evidence = watcher.evidence()
    assert evidence["events"].units[-1] == 3
    assert evidence["repeated order ids"].units[-1] == 2

    sparse = SparseEventStops(name="signups", start=0.0, end=3600.0, source="storefront")
    watcher = lp.Watcher(sparse, lambda *a: None, clean=False)
    screen = {"source": "storefront", "body": {"type": "page", "name": "Create Account",
                                               "anonymousId": "u1"}}  # fmt: skip
    signup = {"source": "storefront", "body": {"event": "Signed Up", "anonymousId": "u1",
                                               "userId": "cus_1"}}  # fmt: skip
    watcher.add(screen, 10.0)
    watcher.add(signup, 70.0)
    watcher.add({**signup, "body": {**signup["body"], "anonymousId": "u2"}}, 80.0)
    evidence = watcher.evidence()
    assert evidence["users"].units[-1] == 1  # the same customer twice
    cohort = evidence["Create Account then the event"]
    assert list(cohort.starts) == [10.0] and list(cohort.done) == [70.0]


@pytest.mark.parametrize(
    "argv",
    [
        ["--profile", "shop-6k"],
        ["--profile", "shop-5k", "--plan", "examples/shop.yaml"],
        ["--profile", "shop-5k", "--days", "0"],
        ["--profile", "shop-5k", "--backtest", "/no/such/dir"],
    ],
)
def test_bad_profile_arguments_stop_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        lb.main(argv)
    assert stop.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_the_engines_latencies_go_beside_the_floors(tmp_path: Path):
    lost = Planned(EventsLost, "lost", "day 0 11:00", 1 / 3)
    profile = replace(SHOP, incidents=(lost,))
    run, rows = lp.floor_rows(profile, [1], 2, 0.6, 3000, QUIET)
    (tmp_path / "seed-1").mkdir()
    summary = {"latency_minutes": {}, "missed": ["lost"]}
    (tmp_path / "seed-1" / "summary.json").write_text(json.dumps(summary))
    console = Console(record=True, width=200, file=open("/dev/null", "w"))  # noqa: SIM115
    lp.show(console, run, rows, [1], lb.engine_latencies(tmp_path, [1]))
    text = console.export_text()
    assert "events_lost" in text and "engine / floor" in text
    # a miss counts as the incident's duration (20 minutes)
    assert "│ 20 " in text or " 20 " in text
