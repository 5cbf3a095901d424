"""Companion pairs learnt from the traffic (`streams.companions`, through the window aggregator)."""

from __future__ import annotations

import json
import random

from detectors.records import COMPANION
from streams.companions import MIN_CONVERSIONS, MIN_ENTRIES, Companions
from streams.windows import WindowAggregator
from tracking_plan.model import Funnel, Plan, SourceSpec

DAY = 86_400
MIDNIGHT = 1_790_035_200  # 00:00 UTC
SOURCES = {"web": SourceSpec("web", platform="web"), "ios": SourceSpec("ios", platform="ios")}
PLAN = Plan(
    name="t",
    version="1",
    sources=SOURCES,
    funnels=(Funnel("buy", ("Product Viewed", "Order Completed"), window_minutes=60),),
)


def aggregator(**kw: object) -> WindowAggregator:
    return WindowAggregator(plan=PLAN, funnels=PLAN.funnels, **kw)  # type: ignore[arg-type]


def traffic(
    seed: int, start: float, hours: float, sessions_per_hour: int, signup_share: float = 0.6
) -> list[tuple[float, str, str, str, str]]:
    """(time, event, user, source, app version) sorted by time: each session opens Home; some
    open the sign-up screen and then always sign up within minutes (half of them through the
    server, which knows only the userId the screen came with: user "anonymousId|userId");
    every session may also send noise events at random times, unrelated to each other; some
    view a product and order it (a funnel pair: never a companion)."""
    rng = random.Random(seed)
    out = []
    for n in range(int(hours * sessions_per_hour)):
        t = start + rng.uniform(0, hours * 3600)
        user, source = f"u{seed}-{n}", rng.choice(["web", "ios"])
        version = rng.choice(["1.0", "1.1"])
        out.append((t, "Home", user, source, version))
        if rng.random() < signup_share:
            screen = t + rng.uniform(5, 60)
            signed = screen + rng.uniform(20, 240)
            if rng.random() < 0.5:
                out.append((screen, "screen:Sign Up", f"{user}|U{n}", source, version))
                out.append((signed, "Signed Up", f"|U{n}", "server", "unknown"))
            else:
                out.append((screen, "screen:Sign Up", user, source, version))
                out.append((signed, "Signed Up", user, source, version))
        for noise in ("Noise A", "Noise B"):
            if rng.random() < 0.15:
                out.append((t + rng.uniform(0, 3 * 3600), noise, user, source, version))
        if rng.random() < 0.5:
            out.append((t + 30, "Product Viewed", user, source, version))
            out.append((t + 90, "Order Completed", user, source, version))
    return sorted(out)


def run(
    events, a: WindowAggregator | None = None, every: int = 50, flush: bool = True
) -> tuple[WindowAggregator, list]:
    """Count `events` (advancing every `every` events), then close every window if `flush`."""
    a = a or aggregator()
    records = []
    for i, (t, name, user, source, version) in enumerate(events):
        body: dict = {"type": "track", "event": name, "context": {"app": {"version": version}}}
        anonymous, _, user_id = user.partition("|")
        if anonymous:
            body["anonymousId"] = anonymous
        if user_id:
            body["userId"] = user_id
        a.add(body, source, (), event_key=name, received_at=t, ts=t)
        if i % every == 0:
            records += a.advance()
    return a, records + (a.flush_all() if flush else a.advance())


def companion_records(records):
    return [r for r in records if r.kind == "conversion" and r.series["funnel"] == COMPANION]


def test_a_screen_always_followed_by_the_event_is_chosen_and_noise_is_not():
    # from 10:00 on day 0 (14 hours to learn) to 06:00 on day 2
    events = traffic(1, MIDNIGHT - 14 * 3600, 44, 120)
    a, records = run(events)
    chosen = a.companions.chosen
    # per source: each source's sign-up screen before the sign-up (half sent by the server)
    assert chosen[("Signed Up", "web")] == chosen[("Signed Up", "ios")] == "screen:Sign Up"
    targets = {b for b, _ in chosen}
    assert not {"Noise A", "Noise B"} & {*targets, *chosen.values()}
    assert "Product Viewed" not in {chosen.get(("Order Completed", s)) for s in SOURCES}
    assert "identify" not in targets
    comp = companion_records(records)
    assert comp and min(r.window_start for r in comp) >= MIDNIGHT  # chosen at the midnight
    signup = [r for r in comp if r.series["to_event"] == "Signed Up"]
    assert {r.series["app_version"] for r in signup} == {"1.0", "1.1"}
    assert {r.series["source"] for r in signup} == {"web", "ios"}
    num, den = sum(r.numerator for r in signup), sum(r.denominator for r in signup)
    assert num == den > 500  # every sign-up screen is followed within minutes, server or not
    first = signup[0]
    assert first.series.keys() == {
        "funnel", "from_event", "to_event", "source", "platform", "app_version"
    }  # fmt: skip
    assert first.window_end - first.window_start == 60
    assert "within_minutes" not in first.series  # no early records for companions


def test_selection_is_stable_across_refreshes_and_deterministic():
    events = traffic(2, MIDNIGHT - 14 * 3600, 14 + 24 + 3, 120)
    first_day = [e for e in events if e[0] < MIDNIGHT + DAY]
    a, _ = run(first_day, flush=False)
    before = dict(a.companions.chosen)
    rest = [e for e in events if e[0] >= MIDNIGHT + DAY]
    a, _ = run(rest, a)
    assert before and a.companions.chosen == before  # refreshed at the second midnight
    assert a.companions.day == (MIDNIGHT + DAY) // DAY
    # the same input gives the same records, whatever the grouping of advance() calls
    _, one = run(events, every=1)
    _, other = run(events, every=500)
    canon = sorted(json.dumps(r.to_dict(), sort_keys=True) for r in companion_records(one))
    assert canon == sorted(
        json.dumps(r.to_dict(), sort_keys=True) for r in companion_records(other)
    )


def test_not_chosen_before_enough_support():
    # 30 sessions a day: about 18 sign-up screens a day, below the support thresholds
    a, records = run(traffic(3, MIDNIGHT - 14 * 3600, 40, 1.25))
    assert a.companions.entries or a.companions.day is not None  # it did learn...
    assert a.companions.chosen == {}  # ...but chose nothing
    assert companion_records(records) == []
    # a first day shorter than 12 hours goes on learning: nothing chosen at its midnight
    a, records = run(traffic(4, MIDNIGHT - 6 * 3600, 8, 300))
    assert a.companions.chosen == {} and companion_records(records) == []
    entries = a.companions.entries
    assert sum(n for (name, _), n in entries.items() if name == "screen:Sign Up") > MIN_ENTRIES


def test_companions_can_be_switched_off():
    a, records = run(traffic(1, MIDNIGHT - 14 * 3600, 16, 120), aggregator(companion_minutes=0))
    assert a.companions is None and companion_records(records) == []


# --------------------------------------------------------------- the learner alone


def _day(c: Companions, day: int, shares: dict[str, float], users: int = 200) -> list:
    """One day of entries into A1, A2 (per `shares`: the share followed by B within 5 min)
    and a distractor C that B never follows; then judge it and open the next day."""
    rng = random.Random(day)
    base = MIDNIGHT + day * DAY
    for n in range(users):
        t = base + 3600 + n * 240.0
        uid = f"a:{day}-{n}"
        for a_name, share in shares.items():
            c.add((uid + a_name,), a_name, t, int(t // 60 * 60), ("web", "web", "1"))
            if rng.random() < share:
                c.add((uid + a_name,), "B", t + 300, int((t + 300) // 60 * 60), ("web", "web", "1"))
        c.add((uid + "C",), "C", t, int(t // 60 * 60), ("web", "web", "1"))
    records = c.close(base + DAY)
    c.add(("a:x",), "C", base + DAY + 1, base + DAY, ("web", "web", "1"))
    return records + c.close(base + DAY + 3 * 3600)  # judges the new day's first window


def test_a_chosen_pair_is_kept_while_it_qualifies_then_replaced():
    c = Companions(minutes=10)
    _day(c, 0, {"A1": 0.7, "A2": 0.4})
    assert c.chosen == {("B", "web"): "A1"}
    _day(c, 1, {"A1": 0.4, "A2": 0.9})  # A2 is now better, but A1 still qualifies
    assert c.chosen == {("B", "web"): "A1"}
    _day(c, 2, {"A1": 0.05, "A2": 0.9})  # over the last 3 days A1 still qualifies (38 %)
    assert c.chosen == {("B", "web"): "A1"}
    _day(c, 3, {"A1": 0.05, "A2": 0.9})  # days 1-3: 17 %, no longer
    assert c.chosen == {("B", "web"): "A2"}
    for day in (4, 5, 6):
        _day(c, day, {"A1": 0.05, "A2": 0.05})
    assert c.chosen == {}


def test_support_thresholds_are_those_stated():
    c = Companions(minutes=10)
    _day(c, 0, {"A1": 1.0}, users=MIN_ENTRIES - 1)  # every entry converts, too few entries
    assert c.chosen == {}
    c = Companions(minutes=10)
    _day(c, 0, {"A1": 1.0}, users=max(MIN_ENTRIES, MIN_CONVERSIONS))
    assert c.chosen == {("B", "web"): "A1"}


def test_memory_is_pruned_behind_the_watermark():
    c = Companions(minutes=10)
    for n in range(500):
        t = MIDNIGHT + n * 60.0
        c.add((f"a:{n}",), "A", t, int(t // 60 * 60), ("web", "web", "1"))
        c.add((f"a:{n}", f"u:{n}"), "B", t + 30, int(t // 60 * 60), ("web", "web", "1"))
        c.close(t - 120)
        if n % 10 == 0:
            c.prune(t - 120, 120)
    state = c.to_state()
    # users seen within H + 2 windows + 2 x lateness of the closed edge (+ 10 windows between
    # two prunings): one a minute here, so at most (600 + 120 + 240 + 600) / 60 = 26 of the 500;
    # aliases within 2 H + a window (+ 10): (1200 + 60 + 600) / 60 + 2 = 33
    assert len(state["users"]) <= 26 and len(state["aliases"]) <= 33
    assert len(state["pending"]) <= 14


def test_each_source_gets_its_own_companion_and_small_traffic_adds_up_over_days():
    """The web's sign-up page and the app's sign-up screen are different events before the same
    Signed Up: each source gets its own pair. 25 sign-ups a day per source are too few for one
    day, enough over the last days."""
    c = Companions(minutes=10)
    for day in range(3):
        base = MIDNIGHT + day * DAY
        for n in range(25):
            t = base + 3600 + n * 600.0
            for source, screen in (("web", "page:Create Account"), ("ios", "screen:Create")):
                uid = f"{source}:{day}-{n}"
                cohort = (source, source, "1")
                c.add((uid,), screen, t, int(t // 60 * 60), cohort)
                c.add((uid,), "Signed Up", t + 120, int((t + 120) // 60 * 60), cohort)
        c.add(("a:x",), "C", base + DAY + 1, base + DAY, ("web", "web", "1"))
        c.close(base + DAY + 3 * 3600)
        if day == 0:
            assert c.chosen == {}  # 25 entries: below MIN_ENTRIES on one day
    assert c.chosen == {
        ("Signed Up", "ios"): "screen:Create",
        ("Signed Up", "web"): "page:Create Account",
    }
    state = json.loads(json.dumps(c.to_state()))
    again = Companions(minutes=10)
    again.load_state(state)
    assert again.chosen == c.chosen and again.to_state() == state
