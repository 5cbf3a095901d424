"""The independent traffic generator (`simulation`): determinism, order, the wire format, plan
validity, offline batches, release adoption, rhythm."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from datetime import date

import numpy as np
import orjson
import pytest

from simulation.apps import OVER_DAYS, OVER_HOURS, Release, version_at
from simulation.generator import generate
from simulation.profiles import PROFILES, local_time, scenario
from simulation.randomness import key, unit
from simulation.rhythm import DESKTOP_WEEKDAY, DayClock, Rhythm, sample_hours
from streams.envelope import check_envelope, received_at_epoch
from tracking_plan.loader import load_plan
from tracking_plan.normalise import parse_timestamp
from tracking_plan.validator import compile_plan

SHOP = PROFILES["shop-5k"]
PLAN = load_plan(SHOP.plan_path())
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def small(profile=SHOP, days=0.55, users=600, incidents=False):
    return scenario(profile, days=days, users_per_day=users, incidents=incidents)


def lines(run, seed=3) -> list[bytes]:
    return [orjson.dumps(e) for e in generate(run, seed)]


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_traffic():
    run = small()
    first = lines(run)
    assert len(first) > 1000
    assert first == lines(run)
    assert first != lines(run, seed=4)


def test_envelopes_come_in_received_at_order_within_the_run():
    run = small(PROFILES["mobile-offline-5k"], days=0.6)
    stamps = [orjson.loads(line)["received_at"] for line in lines(run)]
    epochs = [received_at_epoch(s) for s in stamps]
    assert epochs == sorted(epochs)
    assert run.start <= epochs[0] and epochs[-1] < run.end


def test_every_envelope_has_the_collectors_shape_and_the_plans_sources():
    ids = Counter()
    for line in lines(small()):
        envelope = check_envelope(orjson.loads(line))
        body = envelope["body"]
        assert envelope["source"] in PLAN.sources
        assert STAMP.match(envelope["received_at"]) and STAMP.match(body["sentAt"])
        assert body["type"] in ("track", "page", "screen", "identify")
        assert body.get("anonymousId") or body.get("userId")
        assert body["context"]["library"]["name"]
        if envelope["source"] in ("ios_app", "android_app"):
            assert body["context"]["app"]["version"]
        ids[body["messageId"]] += 1
    assert max(ids.values()) == 1  # a messageId is never reused (dedupe would drop the copy)


def test_normal_traffic_keeps_to_its_own_plan():
    validator = compile_plan(PLAN)
    counts: Counter[str] = Counter()
    bad = 0
    total = 0
    for line in lines(small(days=0.5, users=1500)):
        envelope = orjson.loads(line)
        result = validator.validate(
            envelope["body"], envelope["source"], received_at_epoch(envelope["received_at"])
        )
        total += 1
        if result.violations:
            bad += 1
            counts.update(v.code for v in result.violations)
        assert result.planned
    assert bad / total < 0.002  # near zero: a few pasted search texts
    assert set(counts) <= {"too_long"}


def test_offline_app_sessions_arrive_hours_later_with_their_original_timestamps():
    run = small(PROFILES["mobile-offline-5k"], days=1.0, users=800)
    delays: dict[str, list[float]] = {"storefront": [], "ios_app": [], "android_app": []}
    for line in lines(run):
        envelope = orjson.loads(line)
        if envelope["source"] not in delays:
            continue
        body = envelope["body"]
        # the SDK's own clock: sentAt - timestamp is how long the event waited on the phone
        waited = parse_timestamp(body["sentAt"]) - parse_timestamp(body["timestamp"])
        delays[envelope["source"]].append(waited)
    assert max(delays["storefront"]) < 60
    for source in ("ios_app", "android_app"):
        late = np.asarray(delays[source]) > 15 * 60
        # 15 % of the sessions are offline; their events are queued 15 min to 30 h
        assert 0.05 < late.mean() < 0.3
        assert np.median(np.asarray(delays[source])[late]) > 3600


def test_releases_spread_at_their_profiles_pace():
    def adoption(pace, hours: float) -> float:
        releases = [
            Release("ios", "1.0.0", -90 * 86400.0, pace),
            Release("ios", "1.1.0", 0.0, pace),
        ]
        on_new = [
            version_at(releases, device, 5, -60 * 86400.0, hours * 3600.0).version == "1.1.0"
            for device in range(4000)
        ]
        return float(np.mean(on_new))

    assert adoption(OVER_HOURS, 0.5) > 0.2 and adoption(OVER_HOURS, 4) > 0.99  # at next open
    assert adoption(OVER_DAYS, 4) < 0.12  # manual updates only, at first
    assert 0.2 < adoption(OVER_DAYS, 48) < 0.6
    assert adoption(OVER_DAYS, 24 * 7) > 0.8
    assert adoption(OVER_DAYS, 24 * 60) < 1.0  # some never update


def test_app_versions_in_the_traffic_follow_the_profiles_releases():
    fast = PROFILES["fast-releases-5k"]
    release_at = local_time(fast, "day 3 08:00")
    run = scenario(fast, days=3.6, users_per_day=1500, incidents=False)
    opened = []
    for line in lines(run):
        envelope = orjson.loads(line)
        body = envelope["body"]
        if envelope["source"] == "ios_app" and body.get("event") == "Application Opened":
            ts = parse_timestamp(body["timestamp"])
            if ts > release_at + 3 * 3600:  # offered to everyone after 3 hours
                opened.append(body["context"]["app"]["version"])
    assert opened and Counter(opened)["12.3.0"] / len(opened) > 0.9


def test_updates_are_announced_by_the_sdk_on_the_first_open_after_them():
    fast = PROFILES["fast-releases-5k"]
    run = scenario(fast, days=3.5, users_per_day=1500, incidents=False)
    updates = [
        orjson.loads(line)["body"]["properties"]
        for line in lines(run)
        if b'"Application Updated"' in line
    ]
    assert updates
    assert {u["version"] for u in updates} >= {"12.3.0"}
    assert all(u["previous_version"] != u["version"] for u in updates)


def test_keys_and_units_are_deterministic_and_spread():
    assert key(1, "a", 2) == key(1, "a", 2) != key(1, "a", 3)
    draws = np.array([unit(9, n) for n in range(20000)])
    assert draws.min() >= 0 and draws.max() < 1
    assert abs(draws.mean() - 0.5) < 0.01


def test_sessions_follow_the_hour_of_day_curve():
    rng = np.random.default_rng(1)
    hours = sample_hours(DESKTOP_WEEKDAY, 100_000, rng)
    assert hours.min() >= 0 and hours.max() < 24
    counts = np.bincount(hours.astype(int), minlength=24) / len(hours)
    shares = np.asarray(DESKTOP_WEEKDAY) / sum(DESKTOP_WEEKDAY)
    assert np.abs(counts - shares).max() < 0.01
    assert counts[3] < counts[11] / 10


def test_a_local_day_follows_daylight_saving_time():
    rhythm = Rhythm("America/New_York", (1, 1, 1, 1, 1, 1, 1))
    fall_back = DayClock(date(2026, 11, 1), 0, rhythm.zone())
    assert fall_back.end - fall_back.start == 25 * 3600
    assert fall_back.hour_starts[12] - fall_back.hour_starts[0] == 13 * 3600


def test_weekends_of_the_office_profile_are_quiet():
    office = PROFILES["office-weekly-2k"]
    run = scenario(replace(office, users_per_day=400), days=7, incidents=False)
    per_day = Counter()
    for envelope in generate(run, 1):
        day = int((received_at_epoch(envelope["received_at"]) - run.start) // 86400)
        per_day[day] += 1
    weekday = np.mean([per_day[d] for d in range(5)])
    weekend = np.mean([per_day[5], per_day[6]])
    assert weekend < 0.5 * weekday


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_starts_with_traffic_on_every_platform(name):
    run = scenario(PROFILES[name], days=0.5, users_per_day=500, incidents=False)
    sources = Counter(e["source"] for e in generate(run, 2))
    assert {"storefront", "ios_app", "android_app"} <= set(sources)
