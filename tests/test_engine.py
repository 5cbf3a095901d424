"""The detection engine end to end on synthetic window records.

Most tests use a small, transparent model (`FakeCount`, `FakeRate`) so that they test the engine's
own logic (rollup, zero-filling, lifecycles, grouping into one alert, kinds, attribution,
annotations, new events, state) and stay fast. `test_real_models_*` run the production models.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import numpy as np
import pytest

from detectors.annotations import Annotation
from detectors.base import Assessment
from detectors.engine import DetectionEngine
from detectors.engine_config import EngineConfig
from detectors.lifecycle import LifecycleConfig
from detectors.records import WITHIN, WindowRecord, epoch_seconds
from detectors.rollup import DEFAULT_LEVELS, Level
from detectors.slices import SliceConfig
from tracking_plan.model import EventSpec, Plan

KINDS_ALL = {"spike", "drop", "disappeared", "new_event", "conversion_up", "conversion_down",
             "violation_surge"}  # fmt: skip

T0 = 1_793_577_600.0  # 2026-11-02 00:00 UTC, a Monday
W = 60.0


class _Fake:
    """Shared by the fakes: evidence on the last window and on the sum of the last 5."""

    learning_windows = 60

    def __init__(self) -> None:
        self.n, self.buf = 0, []

    def _judge(self, observed, expected, var):
        self.buf = [*self.buf, (observed, expected, var)][-5:]
        z1 = (observed - expected) / math.sqrt(var + 1)
        so, se, sv = (sum(x[i] for x in self.buf) for i in range(3))
        z = max((z1, (so - se) / math.sqrt(sv + 1)), key=abs)
        score = min(1.0, z * z / 50)  # |z| = 5 -> 0.5
        direction = (1 if z > 0 else -1) if abs(z) >= 3 else 0
        return score, direction, self.n < self.learning_windows


class FakeCount(_Fake):
    """EW mean count, Poisson variance."""

    def __init__(self, window_seconds: float = 60.0) -> None:
        super().__init__()
        self.mean = 0.0

    def assess(self, ts, observed, weight=1.0):
        exp = self.mean
        score, direction, learning = self._judge(observed, exp, exp)
        return Assessment(observed, exp, *self.learnable(exp), score, direction, learning)

    def learnable(self, expected, weight=1.0):
        sd = 3 * math.sqrt(expected + 1)
        return max(0.0, expected - sd), expected + sd

    def learn(self, ts, observed, weight=1.0):
        self.n += 1
        self.mean += max(0.02, 1 / self.n) * (observed - self.mean)

    def to_state(self):
        return {"mean": self.mean, "n": self.n, "buf": self.buf}

    @classmethod
    def from_state(cls, s):
        m = cls()
        m.mean, m.n, m.buf = s["mean"], s["n"], [tuple(x) for x in s["buf"]]
        return m


class FakeRate(_Fake):
    """EW rate; `observed` is the numerator and `weight` the denominator, binomial variance."""

    def __init__(self, window_seconds: float = 60.0) -> None:
        super().__init__()
        self.num, self.den = 0.0, 0.0

    def assess(self, ts, observed, weight=1.0):
        p = (self.num + 1) / (self.den + 2)
        score, direction, learning = self._judge(observed, weight * p, weight * p * (1 - p))
        rate = observed / weight if weight else p
        return Assessment(rate, p, 0.0, 1.0, score, direction, learning)

    def learnable(self, expected, weight=1.0):
        sd = 3 * math.sqrt(weight * expected * (1 - expected) + 1)
        return max(0.0, weight * expected - sd), min(weight, weight * expected + sd)

    def learn(self, ts, observed, weight=1.0):
        self.n += 1
        self.num = 0.98 * self.num + observed
        self.den = 0.98 * self.den + weight

    def to_state(self):
        return {"num": self.num, "den": self.den, "n": self.n, "buf": self.buf}

    @classmethod
    def from_state(cls, s):
        m = cls()
        m.num, m.den, m.n, m.buf = s["num"], s["den"], s["n"], [tuple(x) for x in s["buf"]]
        return m


FAKES = {"volume": FakeCount, "violation": FakeRate, "conversion": FakeRate}
CFG = EngineConfig(
    model_classes=FAKES,
    lifecycle=LifecycleConfig(fire_score=0.5),  # the fakes' scale: |z| = 5 -> 0.5
    new_event_after_minutes=60,
    slices=SliceConfig(min_history_hours=1.0),
    accept_after_minutes=10_000,
)
EVENTS = {"screen:Home": 60.0, "Product Viewed": 40.0, "Order Completed": 6.0}
SOURCES = {"web": 0.6, "ios": 0.3, "android": 0.1}
VERSIONS = {"web": {"unknown": 1.0}, "ios": {"5.7.0": 0.6, "5.7.1": 0.4},
            "android": {"7.4.0": 0.7, "7.4.1": 0.3}}  # fmt: skip


def synth(windows: int, seed: int = 1, effects=(), events=EVENTS, conversion=True):
    """Per window: the fine records (event × source × platform × app_version), Poisson counts.

    `effects` are functions (w, event, source, version) -> (count multiplier, violation rate)
    or None to keep the normal values.
    """
    rng = np.random.default_rng(seed)
    out = []
    for w in range(windows):
        ts = T0 + w * W
        recs = []
        for event, rate in events.items():
            for source, share in SOURCES.items():
                for version, vshare in VERSIONS[source].items():
                    mult, viol = 1.0, 0.01
                    for effect in effects:
                        changed = effect(w, event, source, version)
                        if changed is not None:
                            mult, viol = changed
                    count = int(rng.poisson(rate * share * vshare * mult))
                    if count == 0:
                        continue
                    bad = int(rng.binomial(count, viol))
                    recs.append(
                        WindowRecord(
                            series={"event": event, "source": source, "platform": source,
                                    "app_version": version},
                            window_start=ts, window_end=ts + W, count=count,
                            distinct_users=count, violations=bad,
                            violation_codes={"missing_required": bad} if bad else {},
                        )
                    )  # fmt: skip
        if conversion:
            for source, share in SOURCES.items():
                users = int(rng.poisson(60 * share))
                p = 0.3
                for effect in effects:
                    changed = effect(w, "conversion", source, None)
                    if changed is not None:
                        p = changed[0] * 0.3
                recs.append(
                    WindowRecord(
                        series={"funnel": "purchase", "from_event": "Checkout Started",
                                "to_event": "Order Completed", "source": source,
                                "platform": source},
                        window_start=ts, window_end=ts + W, kind="conversion",
                        numerator=int(rng.binomial(users, min(p, 1.0))), denominator=users,
                    )
                )  # fmt: skip
        out.append(recs)
    return out


def run(windows, engine=None, config=CFG, annotations=(), plan=None):
    engine = engine or DetectionEngine(plan=plan, config=config, annotations=annotations)
    alerts = []
    for recs in windows:
        alerts += engine.process(recs)
    return engine, alerts


def unplanned_record(w: int, count: int) -> WindowRecord:
    """Window `w` of "Wishlist Added", an event the plan does not know, from iOS 5.7.2."""
    series = {"event": "Wishlist Added", "source": "ios", "platform": "ios", "app_version": "5.7.2"}
    return WindowRecord(series=series, window_start=T0 + w * W, window_end=T0 + (w + 1) * W,
                        count=count, distinct_users=count, planned=False)  # fmt: skip


def firings(alerts):
    return [a for a in alerts if a.state == "firing"]


def in_window(start, end, **match):
    def effect(w, event, source, version):
        if not start <= w < end:
            return None
        for key, value in match.items():
            if {"event": event, "source": source, "version": version}[key] != value:
                return None
        return True

    return effect


def effect(start, end, mult=1.0, viol=0.01, **match):
    cond = in_window(start, end, **match)
    return lambda w, e, s, v: (mult, viol) if cond(w, e, s, v) else None


# ---------------------------------------------------------------------------------- no alerts


def test_normal_traffic_gives_no_alert():
    _, alerts = run(synth(600, seed=3))
    assert alerts == []


# ---------------------------------------------------------------------------------- kinds


def test_spike_is_one_alert_with_explanation_and_attribution():
    data = synth(400, effects=[effect(200, 240, mult=4.0, event="Order Completed", source="ios")])
    engine, alerts = run(data)
    fired = firings(alerts)
    assert len(fired) == 1, [a.series for a in fired]
    alert = fired[0]
    assert alert.kind == "spike"
    assert alert.series["event"] == "Order Completed"
    assert alert.series.get("source", "ios") == "ios"
    assert 200 * W <= _ts(alert.started_at) <= 206 * W + T0
    assert "Order Completed" in alert.explanation and "higher than expected" in alert.explanation
    if "source" not in alert.series:
        assert (alert.attribution[0].dimension, alert.attribution[0].value) in {
            ("source", "ios"), ("platform", "ios")}  # fmt: skip
    resolved = [a for a in alerts if a.state == "resolved"]
    assert [a.id for a in resolved] == [alert.id]
    assert _ts(resolved[0].ended_at) >= T0 + 240 * W
    assert engine.active() == []


def test_drop_of_a_whole_source_is_one_alert_when_sources_are_modelled():
    data = synth(400, effects=[effect(200, 260, mult=0.3, source="ios")])
    levels = (Level("volume", ("source", "platform")), *DEFAULT_LEVELS)
    _, alerts = run(data, config=replace(CFG, levels=levels))
    fired = firings(alerts)
    assert len({a.id for a in fired}) == 1, [(a.kind, a.series) for a in fired]
    # the synthetic conversion falls with the traffic and may be seen first: the same alert,
    # told as the drop once the drop fires (kinds only move up)
    assert {a.kind for a in fired} <= {"conversion_down", "drop"} and fired[-1].kind == "drop"
    assert fired[-1].series.get("source") == "ios" or fired[-1].attribution[0].value == "ios"


def test_disappeared_event_on_one_source():
    data = synth(400, effects=[effect(200, 400, mult=0.0, event="Product Viewed", source="ios")])
    engine, alerts = run(data)
    kinds = {(a.kind, a.id) for a in firings(alerts)}
    assert len({i for _, i in kinds}) == 1
    final = firings(alerts)[-1]
    assert final.kind == "disappeared"
    assert final.series == {"event": "Product Viewed", "source": "ios", "platform": "ios"}
    assert "stopped arriving" in final.explanation
    assert [a.kind for a in engine.active()] == ["disappeared"]


def test_a_total_dragged_down_by_an_open_slice_incident_joins_it_however_late():
    """iOS stops sending Product Viewed; the event's total (iOS is 30 % of it) fires later, past
    the merge time: still the iOS incident, not a second alert."""
    data = synth(400, effects=[effect(200, 400, mult=0.0, event="Product Viewed", source="ios")])
    _, alerts = run(data, config=replace(CFG, merge_minutes=0.5))
    fired = firings(alerts)
    assert {a.series.get("source") for a in fired} == {"ios"}, [(a.series, a.id) for a in fired]
    assert len({a.id for a in fired}) == 1


def test_an_event_back_on_its_source_after_hours_is_no_spike_of_its_total():
    """A web deploy drops Product Viewed for longer than a shift takes to be accepted; its total
    (web is 60 % of it) drops with it. That gap is not the new normal: when the events come
    back, neither the web series nor the total alerts a spike."""
    data = synth(700, effects=[effect(200, 450, mult=0.0, event="Product Viewed", source="web")])
    _, alerts = run(data, config=replace(CFG, accept_after_minutes=60))
    fired = firings(alerts)
    assert {a.kind for a in fired} == {"disappeared"}, [(a.kind, a.series) for a in fired]
    assert len({a.id for a in fired}) == 1


TWO = {"screen:Home": 60.0, "Product Viewed": 40.0}


@pytest.mark.parametrize(("together", "alerts_expected"), [(5.0, 1), (0.0, 2)])
def test_events_of_one_source_spiking_together_are_one_alert(together, alerts_expected):
    """A burst of iOS traffic: Product Viewed and screen:Home jump in the same minute. One
    incident (the events are listed as its members), unless the grouping is switched off."""
    burst = [
        effect(300, 330, mult=4.0, event="Product Viewed", source="ios"),
        effect(300, 330, mult=4.0, event="screen:Home", source="ios"),
    ]
    # every event of the source rises alike: that is its traffic (`test_a_rise_every_event_of_a_
    # source_shares_is_its_traffic`); here, what is grouped is the question, so it is judged
    # without the other events' traffic
    cfg = replace(CFG, together_minutes=together, levels=DEFAULT_LEVELS[1:2],
                  context_min_events=math.inf)  # fmt: skip
    _, alerts = run(synth(400, effects=burst, events=TWO, conversion=False), config=cfg)
    fired = firings(alerts)
    assert {a.series["event"] for a in fired} <= set(TWO)
    assert len({a.id for a in fired}) == alerts_expected, [(a.series, a.id) for a in fired]


@pytest.mark.parametrize("share", [3.0, 1.0])
def test_a_rise_every_event_of_a_source_shares_is_its_traffic(share):
    """iOS's Product Viewed triples for half an hour. When the source's other events triple too
    (a morning that comes earlier than the model knows, more users), no event stands out: no
    spike. When they do not (a bot, a leaked code, an event fired twice), it is one."""
    rise = [
        effect(300, 330, mult=3.0, event="Product Viewed", source="ios"),
        effect(300, 330, mult=share, event="screen:Home", source="ios"),
        effect(300, 330, mult=share, event="Order Completed", source="ios"),
    ]
    _, alerts = run(synth(400, effects=rise, conversion=False))
    spikes = [a for a in firings(alerts) if a.series.get("event") == "Product Viewed"]
    assert bool(spikes) == (share == 1.0), [(a.series, a.explanation) for a in firings(alerts)]


def test_resolved_sentence_tells_the_deviating_minutes_not_the_calm_ones_after():
    """A 3-minute burst: the alert resolves after calmer windows, whose counts must not water
    the sentence down (it read "2.2x ... (283 vs about 128 in 11 min)" for an alert from 05:00
    to 05:07: more minutes than the alert lasted)."""
    burst = [effect(300, 303, mult=5.0, event="Product Viewed", source="ios")]
    cfg = replace(CFG, levels=DEFAULT_LEVELS[1:2])
    _, alerts = run(synth(420, effects=burst, events=TWO, conversion=False), config=cfg)
    (resolved,) = [a for a in alerts if a.state == "resolved"]
    lasted = (epoch_seconds(resolved.ended_at) - epoch_seconds(resolved.started_at)) / 60
    observed, expected, minutes = re.search(
        r"\((\d+) vs about (\d+) in (\d+) min\)", resolved.explanation
    ).groups()
    assert 3 <= int(minutes) <= lasted, resolved.explanation
    assert int(observed) / int(expected) > 2.5, resolved.explanation


def test_events_of_different_sources_are_not_grouped():
    burst = [
        effect(300, 330, mult=4.0, event="Product Viewed", source="ios"),
        effect(300, 330, mult=4.0, event="screen:Home", source="web"),
    ]
    cfg = replace(CFG, levels=DEFAULT_LEVELS[1:2])
    _, alerts = run(synth(400, effects=burst, events=TWO, conversion=False), config=cfg)
    assert len({a.id for a in firings(alerts)}) == 2


def test_release_that_stops_sending_an_event_is_found_per_version():
    data = synth(
        500,
        effects=[effect(300, 500, mult=0.0, event="Product Viewed", source="ios", version="5.7.1")],
    )
    _, alerts = run(data)
    fired = firings(alerts)
    assert fired, "no alert"
    assert fired[-1].kind == "disappeared"
    want = {"event": "Product Viewed", "source": "ios", "platform": "ios", "app_version": "5.7.1"}
    assert fired[-1].series == want
    assert _ts(fired[-1].updated_at) - (T0 + 300 * W) <= 15 * W


FOUR = {"screen:Home": 60.0, "Product Viewed": 40.0, "Product List Viewed": 40.0,
        "Products Searched": 30.0}  # fmt: skip


def sparse_release(monkeypatch, share, start, windows, stop=None):
    """Traffic in which iOS 5.7.2 reaches `share` of the iOS users from window `start` (until
    `stop`: rolled back) and never sends Product Viewed."""
    ios = {"5.7.0": round(1.0 - share - 0.4, 4), "5.7.1": 0.4, "5.7.2": share}
    monkeypatch.setitem(globals(), "VERSIONS", {**VERSIONS, "ios": ios})

    def release(w, event, source, version):
        if version != "5.7.2":
            return None
        live = start <= w < (windows if stop is None else stop)
        return (1.0 if live and event != "Product Viewed" else 0.0), 0.01

    return synth(windows, effects=[release], events=FOUR, conversion=False)


def test_release_rolling_out_sparsely_is_found_though_absent_from_most_windows(monkeypatch):
    """iOS 5.7.2 reaches 3 % of iOS users and never sends Product Viewed: it is absent from many
    windows (its evidence must be kept across them) and must not lower the event's learnt share
    of the traffic while its evidence gathers."""
    _, alerts = run(sparse_release(monkeypatch, 0.03, start=300, windows=600))
    want = {"event": "Product Viewed", "source": "ios", "platform": "ios", "app_version": "5.7.2"}
    found = [a for a in firings(alerts) if a.series == want]
    assert found, [(a.kind, a.series) for a in firings(alerts)]
    assert found[0].kind == "disappeared"
    assert [a for a in firings(alerts) if a.series.get("app_version") != "5.7.2"] == []


def test_alert_of_a_sparse_release_holds_through_minutes_it_sends_nothing(monkeypatch):
    """iOS 5.7.2 at 2 % of iOS users is absent from about a third of the windows, sometimes
    several in a row: its alert must stay open through them (one firing, no resolve/reopen
    churn) while the release keeps not sending the event."""
    _, alerts = run(sparse_release(monkeypatch, 0.02, start=200, windows=700))
    mine = [a for a in alerts if a.series.get("app_version") == "5.7.2"]
    assert mine and mine[0].state == "firing", [(a.kind, a.series) for a in alerts]
    assert {a.id for a in mine} == {mine[0].id}
    assert [a.state for a in mine if a.state != "firing"] == []


def test_alert_of_a_release_that_vanishes_resolves_once_it_is_forgotten(monkeypatch):
    """The release is rolled back at window 450 (no traffic from it at all): nothing says it
    sends the event again, so its alert stays open through the silence, but not forever: it
    resolves once the release has been unseen for `forget_hours`."""
    config = replace(CFG, slices=replace(CFG.slices, forget_hours=2.0))
    data = sparse_release(monkeypatch, 0.1, start=200, windows=700, stop=450)
    _, alerts = run(data, config=config)
    mine = [a for a in alerts if a.series.get("app_version") == "5.7.2"]
    assert [a.state for a in mine][:1] == ["firing"] and mine[-1].state == "resolved"
    resolved = epoch_seconds(mine[-1].updated_at)
    hold = 120 + CFG.lifecycle.resolve_windows + config.slice_batch_windows
    assert T0 + (450 + 110) * W <= resolved <= T0 + (450 + hold + 2) * W


def test_an_older_release_that_stops_an_event_a_newer_one_sends_is_not_a_loss(monkeypatch):
    """From window 200 iOS 5.7.2 rolls out (30 % of iOS users) and sends every event; from 300
    the older 5.7.0 sends no Product Viewed (as installs and updates always come from the newest
    release): its users moved on, a released build's code does not change. No alert on 5.7.0;
    the same silence with no newer release is one (test above)."""
    ios = {"5.7.0": 0.3, "5.7.1": 0.4, "5.7.2": 0.3}
    monkeypatch.setitem(globals(), "VERSIONS", {**VERSIONS, "ios": ios})

    def rollout(w, event, source, version):
        if version == "5.7.2":
            return (1.0 if w >= 200 else 0.0), 0.01
        if version == "5.7.0" and event == "Product Viewed" and w >= 300:
            return 0.0, 0.01
        return None

    _, alerts = run(synth(600, effects=[rollout], events=FOUR, conversion=False))
    old = [a for a in firings(alerts) if a.series.get("app_version") == "5.7.0"]
    assert old == [], [(a.kind, a.series, a.explanation) for a in old]


def test_traffic_lost_on_every_source_is_one_drop_not_one_disappearance_per_event():
    """95 % of every source's events lost for 20 minutes: the events' totals fall silent
    together; that is the traffic lost, one `drop` alert about no one event."""

    def lost(w, event, source, version):
        return (0.05, 0.01) if 300 <= w < 320 else None

    _, alerts = run(synth(400, effects=[lost], events=FOUR, conversion=False))
    fired = firings(alerts)
    assert fired, "no alert"
    ids = {a.id for a in fired}
    assert len(ids) == 1, [(a.kind, a.series, a.explanation) for a in fired]
    last = [a for a in alerts if a.id in ids][-1]
    assert last.kind == "drop" and "event" not in last.series, (last.series, last.explanation)


def active_users(
    windows: int, lost: tuple[int, int], seed: int = 2, users: float = 14.0,
    sources: tuple[tuple[str, float], ...] = (("web", 0.6), ("ios", 0.4)), keep: float = 0.05,
):  # fmt: skip
    """Per window: activity records of `sources` (name, share), about `users` a minute in all,
    all but `keep` of them lost in the windows `lost` (start, end)."""
    rng = np.random.default_rng(seed)
    out = []
    for w in range(windows):
        kept = keep if lost[0] <= w < lost[1] else 1.0
        recs = []
        for source, share in sources:
            n = int(rng.poisson(users * share * kept))
            recs.append(
                WindowRecord(
                    series={"source": source, "platform": source, "app_version": "1.0"},
                    window_start=T0 + w * W, window_end=T0 + (w + 1) * W, kind="activity",
                    count=n, distinct_users=n,
                )
            )  # fmt: skip
        out.append(recs)
    return out


ACTIVITY = replace(CFG, model_classes={**FAKES, "activity": FakeCount})


@pytest.mark.parametrize("silence", [True, False])
def test_users_all_but_gone_are_an_outage_told_within_two_minutes(silence):
    """14 users a minute, then 5 % of them: each minute alone is no proof (a few users is a
    usual minute at this traffic); the evidence since the onset is, in two minutes. Without the
    sequential test (its alternative set to "nothing changed") the same outage is told later."""
    cfg = ACTIVITY if silence else replace(ACTIVITY, silence_rho=1.0)
    _, alerts = run(active_users(400, (300, 320)), config=cfg)
    fired = firings(alerts)
    assert fired, "no alert"
    first = fired[0]
    assert first.kind == "drop" and "event" not in first.series
    told_at = _ts(first.updated_at) - T0
    if silence:
        assert told_at <= 302 * W, told_at / W
        assert 299 * W <= _ts(first.started_at) - T0 <= 300 * W
    else:
        assert told_at > 302 * W, told_at / W


def test_an_outage_is_its_own_alert_not_an_old_one_about_one_event():
    """Product Viewed stopped on iOS hours ago (an open alert); then iOS's users fall silent: a
    new alert about the traffic, not a line added to the old one."""
    gone = effect(100, 400, mult=0.0, event="Product Viewed", source="ios")
    volumes = synth(400, effects=[gone], conversion=False)
    ios = active_users(400, (300, 320), sources=(("ios", 1.0),))
    data = [v + a for v, a in zip(volumes, ios, strict=True)]
    _, alerts = run(data, config=ACTIVITY)
    fired = firings(alerts)
    old = {a.id for a in fired if a.series.get("event") == "Product Viewed"}
    outage = [a for a in fired if "event" not in a.series and a.id not in old]
    assert old and outage, [(a.kind, a.series, a.id) for a in fired]
    assert all("event" in a.series for a in alerts if a.id in old)
    assert not [a for a in alerts if a.id in old and _ts(a.updated_at) - T0 >= 300 * W], (
        "the outage was told as part of the old alert"
    )
    assert 300 * W <= _ts(outage[0].updated_at) - T0 <= 303 * W


def visits(
    windows: int, lost: tuple[int, int], seed: int, rate: float = 6.0, stay: float = 0.8,
    bots: tuple[int, int, int] = (0, 0, 0),
):  # fmt: skip
    """Per window: one source's activity records from visits arriving `rate` a minute, each
    going on to the next minute with probability `stay` (about five minutes long), with the
    aggregator's counts: users, and of the users of the window before, those active again. In
    the windows `lost` (start, end) 95 % of every user's events are lost. A visit counts in each
    of its minutes, so the minutes' totals are far from independent. `bots` (start, end, n):
    n fresh ids a minute in those windows, none seen again."""
    rng = np.random.default_rng(seed)
    out, running, seen_before = [], 0, 0
    for w in range(windows):
        kept = 0.05 if lost[0] <= w < lost[1] else 1.0
        going_on = int(rng.binomial(running, stay))
        arrived = int(rng.poisson(rate))
        running = going_on + arrived
        seen = int(rng.binomial(running, kept))
        again = int(rng.hypergeometric(seen, running - seen, going_on)) if running else 0
        again = min(again, seen_before)
        seen += bots[2] if bots[0] <= w < bots[1] else 0
        rec = WindowRecord(
            series={"source": "web", "platform": "web", "app_version": "1.0"},
            window_start=T0 + w * W, window_end=T0 + (w + 1) * W, kind="activity",
            count=seen, distinct_users=seen, numerator=again, denominator=seen_before,
        )  # fmt: skip
        out.append([rec])
        seen_before = seen
    return out


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
@pytest.mark.parametrize(("rate", "minutes"), [(6.0, 1), (2.0, 2)])
def test_visits_that_stop_arriving_and_going_on_are_an_outage_within_a_minute_or_two(
    seed, rate, minutes
):
    """About 30 users a minute in visits of five minutes, then 95 % of everything lost: the
    users going on and the visits arriving both fall, and each part is nearly independent from
    one minute to the next (the totals are not). The arrivals of one minute are no proof
    against a usual known from a few minutes of traffic, but the users who did not go on are
    (a share learnt over hours): told in the first minute; at a third of the traffic, in two.
    (Judged on the arrivals alone, the same outages took 2 and 3-6 minutes.)"""
    _, alerts = run(visits(1500, (1200, 1220), seed=seed, rate=rate), config=ACTIVITY)
    fired = firings(alerts)
    assert fired, "no alert"
    assert fired[0].kind == "drop" and "event" not in fired[0].series
    assert 1200 * W <= _ts(fired[0].updated_at) - T0 <= (1200 + minutes) * W
    assert 1199 * W <= _ts(fired[0].started_at) - T0 <= 1200 * W


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_the_end_of_a_bot_flood_is_no_outage(seed):
    """Half an hour of 60 fresh ids a minute (a scraper without cookies) on 30 users a minute:
    when it stops, the users of the minute before are mostly ids that were never going on.
    Judged as usual users, none of whom went on, they looked like a source fallen silent."""
    data = visits(1500, (0, 0), seed=seed, bots=(1200, 1230, 60))
    _, alerts = run(data, config=ACTIVITY)
    drops = [a for a in firings(alerts) if a.kind == "drop"]
    assert drops == [], [(a.series, a.explanation) for a in drops]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_visits_of_several_minutes_make_no_outage(seed):
    """Days of the same visits without loss, at a tenth of the traffic too: no alert (the
    minutes' totals, correlated by visits, are never taken as independent evidence)."""
    for rate in (6.0, 0.6):
        _, alerts = run(visits(4000, (0, 0), seed=seed, rate=rate), config=ACTIVITY)
        assert firings(alerts) == [], [(a.series, a.explanation) for a in firings(alerts)]


class SteadyCount(FakeCount):
    """A count model that has learnt its series' rate and keeps it (the silence is not learnt)."""

    def learn(self, ts, observed, weight=1.0):
        if self.n < 1500:
            super().learn(ts, observed, weight)
        else:
            self.n += 1


def test_a_sparse_source_silent_all_night_is_no_outage():
    """A server source with a user every eight minutes or so goes six hours without one: its
    usual is known from a handful of users, so the silence is not proof of an outage."""
    night = active_users(2400, (2000, 2360), seed=4, users=0.12, sources=(("backend", 1.0),),
                         keep=0.0)  # fmt: skip
    steady = replace(ACTIVITY, model_classes={**FAKES, "activity": SteadyCount})
    _, alerts = run(night, config=steady)
    assert firings(alerts) == [], [(a.series, a.explanation) for a in firings(alerts)]


def test_a_normal_run_of_few_users_is_no_outage():
    """Two users a minute, with the minutes without anyone that such traffic has: no alert."""
    _, alerts = run(active_users(3000, (0, 0), seed=5, users=2.0), config=ACTIVITY)
    assert firings(alerts) == []


def test_a_conversion_fallen_with_its_missing_step_is_not_accepted_and_its_return_is_no_rise():
    """iOS stops sending Order Completed for five hours (a broken release), so its checkout
    conversion falls to nothing. However long it lasts, that fall is the breakage's, not the
    new normal: when the event comes back, the conversion's return is no rise."""
    broken = [
        effect(200, 500, mult=0.0, event="Order Completed", source="ios"),
        effect(200, 500, mult=0.0, event="conversion", source="ios"),
    ]
    busy = {**EVENTS, "Order Completed": 40.0}  # enough orders for their loss to be told
    data = synth(800, effects=broken, events=busy)
    _, alerts = run(data, config=replace(CFG, accept_after_minutes=60))
    rises = [a for a in firings(alerts) if a.kind == "conversion_up"]
    assert not rises, [(a.series, a.explanation) for a in rises]
    assert any(a.kind == "disappeared" for a in firings(alerts))


def test_conversion_drop_on_one_source():
    def conv(w, e, s, v):
        return (0.3, 0.0) if e == "conversion" and s == "web" and 300 <= w < 400 else None

    _, alerts = run(synth(450, effects=[conv]))
    fired = firings(alerts)
    assert len(fired) == 1, [(a.kind, a.series) for a in fired]
    assert fired[0].kind == "conversion_down"
    assert fired[0].series["from_event"] == "Checkout Started"
    assert fired[0].series.get("source", "web") == "web"
    assert "fell to" in fired[0].explanation


def with_early_conversions(data, lead: int = 50):
    """Add, per window, the early record (within 10 minutes) of each conversion record: 90 %
    of its converted users, published `lead` windows before the whole funnel window's record
    of the same cohort (the synthetic full records stand for cohorts `lead` windows older)."""
    rng = np.random.default_rng(5)
    out = [list(recs) for recs in data]
    for w, recs in enumerate(data):
        if w < lead:
            continue
        for rec in recs:
            if rec.kind != "conversion":
                continue
            early = WindowRecord(
                series={**rec.series, WITHIN: "10"},
                window_start=T0 + (w - lead) * W, window_end=T0 + (w - lead + 1) * W,
                kind="conversion", numerator=int(rng.binomial(rec.numerator, 0.9)),
                denominator=rec.denominator,
            )  # fmt: skip
            out[w - lead].append(early)
    return out


def test_early_conversion_is_its_own_series_and_alerts_first():
    def conv(w, e, s, v):
        return (0.3, 0.0) if e == "conversion" and s == "web" and 300 <= w < 400 else None

    engine, alerts = run(with_early_conversions(synth(450, effects=[conv])))
    keys = [k for k in engine.series if k.startswith("conversion")]
    assert sum(WITHIN in k for k in keys) == sum(WITHIN not in k for k in keys) > 0
    labels = [tuple(sorted(g[0].items())) for g in engine.gauges()]
    assert len(labels) == len(set(labels))  # the early series has a gauge of its own
    fired = firings(alerts)
    assert [a.kind for a in fired] == ["conversion_down"], [(a.kind, a.series) for a in fired]
    # the early records of the cohorts from window 300 come 50 windows before the full ones
    assert fired[0].series.get(WITHIN) == "10"
    assert "within 10 minutes" in fired[0].explanation
    assert epoch_seconds(fired[0].started_at) < T0 + 300 * W


@pytest.mark.parametrize("last_step_spikes", [True, False])
def test_conversion_rise_names_a_rise_of_its_last_step_as_likely_double_counting(
    last_step_spikes,
):
    """Too good to be true: web's conversion doubles. When Order Completed itself jumped on
    web too, the sentence says tracking may be counting it twice; otherwise it does not."""
    effects = [effect(300, 400, mult=2.0, event="conversion", source="web")]
    if last_step_spikes:
        effects.append(effect(295, 400, mult=3.0, event="Order Completed", source="web"))
    _, alerts = run(synth(450, effects=effects))
    if not last_step_spikes:
        (rise,) = {a.id: a for a in firings(alerts) if a.kind == "conversion_up"}.values()
        assert "counting it twice" not in rise.explanation, rise.explanation
        return
    # one alert: the last step's spike, the conversion it inflates joined to it and named
    fired = [a for a in firings(alerts) if a.kind in ("spike", "conversion_up")]
    rises = {a.id for a in fired if "Order Completed" in a.explanation}
    assert len(rises) == 1, [(a.kind, a.series, a.explanation) for a in fired]
    last = [a for a in fired if a.id in rises][-1]
    assert last.kind == "spike" and "counting it twice" in last.explanation, last.explanation


def test_violation_surge_attributed_to_the_release():
    data = synth(450, effects=[effect(300, 450, viol=0.5, event="Product Viewed", version="5.7.1")])
    _, alerts = run(data)
    fired = firings(alerts)
    assert {(a.kind, a.id) for a in fired} == {("violation_surge", fired[0].id)}  # may reopen
    top = {(a.dimension, a.value) for a in fired[0].attribution}
    assert fired[0].series.get("app_version") == "5.7.1" or ("app_version", "5.7.1") in top
    assert "break the tracking plan" in fired[0].explanation


def first_firing(alerts, kind):
    return next((a for a in alerts if a.state == "firing" and a.kind == kind), None)


def test_a_release_whose_events_all_break_the_plan_alerts_sooner_and_names_it():
    """A rename in 5.7.1 (40 % of iOS): its Product Viewed events all break the plan. The
    version's own evidence fires before the event's violation share does, as one alert."""
    data = synth(450, effects=[effect(300, 450, viol=1.0, event="Product Viewed", version="5.7.1")])
    _, alerts = run(data)
    _, without = run(data, config=replace(CFG, slice_tests=False))
    fired = [a for a in firings(alerts) if a.kind == "violation_surge"]
    assert len({a.id for a in fired}) == 1
    first, total_only = fired[0], first_firing(without, "violation_surge")
    assert first.series.get("app_version") == "5.7.1"
    assert "Product Viewed" in first.explanation and "app version 5.7.1" in first.explanation
    assert total_only is not None and first.updated_at < total_only.updated_at


def test_every_version_breaking_is_the_event_alert_not_one_per_version():
    data = synth(450, effects=[effect(300, 450, viol=1.0, event="Product Viewed")])
    _, alerts = run(data)
    fired = [a for a in firings(alerts) if a.kind == "violation_surge"]
    assert len({a.id for a in fired}) == 1, [(a.series, a.id) for a in fired]
    assert "app_version" not in fired[-1].series and "source" not in fired[-1].series


def test_an_unplanned_event_of_one_release_is_a_new_event_not_a_broken_release():
    data = synth(450)
    for w in range(450):  # from the start: its violation share is learnt too (all of it)
        rec = unplanned_record(w, 6)
        data[w].append(replace(rec, violations=6, violation_codes={"unplanned_event": 6}))
    _, alerts = run(data)
    kinds = {a.kind for a in firings(alerts)}
    assert "new_event" in kinds and "violation_surge" not in kinds


def test_a_broken_release_that_is_withdrawn_calms_and_is_forgotten():
    """Rolled back at window 360: silence does not calm it, but once the release is unseen for
    `forget_hours` its alert resolves and its evidence goes."""
    broken = effect(300, 360, viol=1.0, event="Product Viewed", version="5.7.1")
    gone = effect(360, 600, mult=0.0, version="5.7.1")
    config = replace(CFG, slices=replace(CFG.slices, forget_hours=2.0))
    engine, alerts = run(synth(600, effects=[broken, gone]), config=config)
    surges = [a for a in alerts if a.kind == "violation_surge"]
    assert surges and surges[-1].state == "resolved"
    assert epoch_seconds(surges[-1].updated_at) >= T0 + (360 + 110) * W  # not on silence
    assert not any(k.endswith("|5.7.1") for k in engine.slice_alerts.watch.slices)
    assert not any("5.7.1" in name for s in engine.series.values() for name in s.tracks)


def test_a_broken_release_resumes_from_a_snapshot_mid_rollout():
    data = synth(450, effects=[effect(300, 450, viol=1.0, event="Product Viewed", version="5.7.1")])
    engine, before = run(data[:303])
    state = json.loads(json.dumps(engine.to_state()))
    evidence = [t for sl in state["slices"]["slices"].values() for t in sl[5].values()]
    assert any(t[0][0] > 0 for t in evidence), "the scenario must gather evidence"
    resumed = DetectionEngine.from_state(state, config=CFG)
    _, after = run(data[303:], engine=resumed)
    _, straight = run(data)
    assert [a.to_dict() for a in before + after] == [a.to_dict() for a in straight]


def test_unplanned_event_is_announced_once():
    data = synth(300)

    def add_new(windows, start):
        for w, recs in enumerate(windows):
            if w >= start:
                recs.append(unplanned_record(w, count=5))
        return windows

    _, alerts = run(add_new(data, 100))
    fired = firings(alerts)
    assert [a.kind for a in fired] == ["new_event"]
    assert fired[0].series == {"event": "Wishlist Added"}
    assert {(a.dimension, a.value) for a in fired[0].attribution} >= {("app_version", "5.7.2")}
    assert "not in the tracking plan" in fired[0].explanation
    assert [a.state for a in alerts] == ["firing", "resolved"]  # resolved after the hold time


def test_sparse_unplanned_event_of_a_rolling_out_release_is_announced_soon():
    """A release that is rolling out sends its new event sparsely at first (here 2 events every
    third window): it keeps coming, so it is announced within half an hour of its first event,
    not once it is dense (10 events in 5 windows would never happen here)."""
    data = synth(300)
    for w, recs in enumerate(data):
        if w >= 100 and w % 3 == 1:
            recs.append(unplanned_record(w, count=2))
    _, alerts = run(data)
    fired = firings(alerts)
    assert [a.kind for a in fired] == ["new_event"]
    assert epoch_seconds(fired[0].started_at) == T0 + 100 * W
    assert epoch_seconds(fired[0].updated_at) <= T0 + 130 * W


@pytest.mark.parametrize(
    ("arrivals", "announced"),
    [
        ({100: 1, 104: 1, 108: 2, 115: 1}, True),  # 5 events in 4 windows: it keeps coming
        ({100: 1, 104: 1, 108: 1, 115: 1}, False),  # 4 events: not yet
        ({100: 3, 101: 4}, False),  # a burst in 2 windows (somebody testing), however large
        ({100: 2, 140: 2, 180: 2}, False),  # 3 windows, but never 5 events within half an hour
    ],
)
def test_unplanned_event_is_announced_once_it_keeps_coming(arrivals, announced):
    data = synth(300)
    for w, count in arrivals.items():
        data[w].append(unplanned_record(w, count=count))
    _, alerts = run(data)
    assert [a.kind for a in firings(alerts)] == (["new_event"] if announced else [])


def test_planned_event_counts_as_new_only_when_never_seen_after_warmup():
    plan = Plan(name="p", version="1", events={e: EventSpec(name=e) for e in [*EVENTS, "Late"]})
    late = {**EVENTS, "Late": 0.0}

    def appear(w, e, s, v):
        return (1.0, 0.01) if e != "Late" else ((1e10, 0.0) if w >= 200 else None)

    data = synth(260, events={**late, "Late": 1e-9}, effects=[appear], conversion=False)
    _, alerts = run(data, plan=plan)
    assert [(a.kind, a.series) for a in firings(alerts)] == [("new_event", {"event": "Late"})]
    assert "never seen before" in firings(alerts)[0].explanation


RARE_PLAN = Plan(name="p", version="1", events={e: EventSpec(name=e) for e in [*EVENTS, "Rare"]})


def rare_record(w: int, count: int) -> WindowRecord:
    return WindowRecord(
        series={"event": "Rare", "source": "web", "platform": "web", "app_version": "5.0"},
        window_start=T0 + w * W, window_end=T0 + (w + 1) * W, count=count, distinct_users=count,
    )  # fmt: skip


def test_a_planned_event_that_trickled_in_for_long_is_not_new_when_it_bursts():
    """Refunds: first seen after the warm-up, one now and then; a busy hour much later is not
    "a new event, never seen before"."""
    data = synth(400, conversion=False)
    for w in range(100, 300, 25):
        data[w].append(rare_record(w, 1))  # first seen at 100 (after 60 min of watching)
    for w in (350, 351, 353):
        data[w].append(rare_record(w, 3))
    _, alerts = run(data, plan=RARE_PLAN)
    assert [a for a in firings(alerts) if a.kind == "new_event"] == []


def test_a_planned_event_back_after_its_series_was_forgotten_is_not_new():
    """Seen at the start, silent long enough to be evicted, back in a burst (also across a
    snapshot): the engine still knows it has seen the event."""
    config = replace(CFG, evict_after_minutes=30)
    data = synth(400, conversion=False)
    data[5].append(rare_record(5, 2))
    for w in (300, 301, 303):
        data[w].append(rare_record(w, 4))
    engine = DetectionEngine(plan=RARE_PLAN, config=config)
    alerts = []
    for recs in data[:200]:
        alerts += engine.process(recs)
    assert "volume|event=Rare" not in engine.series  # forgotten
    state = json.loads(json.dumps(engine.to_state()))
    engine = DetectionEngine.from_state(state, plan=RARE_PLAN, config=config)
    for recs in data[200:]:
        alerts += engine.process(recs)
    assert [a for a in firings(alerts) if a.kind == "new_event"] == []


# ---------------------------------------------------------------------------------- annotations


def test_annotation_suppresses_and_is_not_learnt():
    boost = effect(200, 260, mult=3.0, source="web")
    ann = Annotation("newsletter", T0 + 200 * W, T0 + 260 * W, frozenset({"web"}), frozenset())
    _, alerts = run(synth(400, effects=[boost]), annotations=[ann])
    assert alerts == []  # no spike during, no drop after (the campaign was not learnt)
    _, alerts = run(synth(400, effects=[boost]))
    # unannounced, it is told by what it changes out of proportion: every web event rising
    # alike is the web's traffic (no event spikes), its conversion tripling is not
    kinds = {a.kind for a in firings(alerts)}
    assert "conversion_up" in kinds and "spike" not in kinds, kinds


class BiasedCount(FakeCount):
    """A count model biased high: it expects 10 a window where 6 come, which its hour's sums find
    significant (score 0.4: past resolving, short of firing), never enough to alert. Records what
    it is taught. What it may learn of a deviating window (`learnable`: 5 to 15) is narrower than
    its window's band (0 to 20), so the engine is seen to ask the model."""

    def __init__(self, window_seconds: float = 60.0) -> None:
        super().__init__(window_seconds)
        self.taught: list[float] = []

    def assess(self, ts, observed, weight=1.0):
        return Assessment(observed, 10.0, 0.0, 20.0, 0.4, -1, False, span_observed=360.0,
                          span_expected=600.0, span_windows=60)  # fmt: skip

    def learnable(self, expected, weight=1.0):
        return 5.0, 15.0

    def learn(self, ts, observed, weight=1.0):
        self.taught.append(observed)
        super().learn(ts, observed, weight)


@pytest.mark.parametrize("count, taught", [(6, 6.0), (2, 5.0), (30, 15.0)])
def test_a_deviation_that_is_no_trouble_is_learnt_at_the_band_edge_not_as_the_expectation(
    count, taught
):
    # learning its own expectation in every deviating window kept a model's bias for good (a
    # night falling faster than it knew was 20 % lower than expected every night, one false
    # drop after another); the band's edge still keeps an outage's zeros out of the normal
    config = replace(CFG, model_classes={**FAKES, "volume": BiasedCount})
    ann = Annotation("mailing", T0 + 20 * W, T0 + 30 * W, frozenset(), frozenset())
    records = [[WindowRecord(series={"event": "Product Viewed", "source": "web", "platform": "web",
                                     "app_version": "unknown"},
                             window_start=T0 + w * W, window_end=T0 + (w + 1) * W, count=count,
                             distinct_users=count)] for w in range(30)]  # fmt: skip
    engine, alerts = run(records, config=config, annotations=[ann])
    assert firings(alerts) == []
    for key in ("event=Product Viewed", "event=Product Viewed|platform=web|source=web"):
        learnt = engine.series[f"volume|{key}"].model.taught
        assert learnt[:20] == [taught] * 20
        assert learnt[20:] == [10.0] * 10  # annotated: learnt as expected, as before


class BiasedRate(FakeRate):
    """A rate model biased high: it expects 40 % where 30 % convert, which its span's sums find
    significant (score 0.4), never enough to alert. Records the numerators it is taught; it
    may learn a deviating window's numerator between 35 % and 45 % of its users."""

    def __init__(self, window_seconds: float = 60.0) -> None:
        super().__init__(window_seconds)
        self.taught: list[tuple[float, float]] = []

    def assess(self, ts, observed, weight=1.0):
        rate = observed / weight if weight else 0.4
        return Assessment(rate, 0.4, 0.0, 1.0, 0.4, -1, False)

    def learnable(self, expected, weight=1.0):
        return 0.35 * weight, 0.45 * weight

    def learn(self, ts, observed, weight=1.0):
        self.taught.append((observed, weight))
        super().learn(ts, observed, weight)


def test_a_rate_that_deviates_without_trouble_is_learnt_at_the_band_edge():
    # a conversion the model expects too high is learnt at its band's edge (35 % of the users),
    # not as the model's own 40 % (which kept its bias for good), nor as the 30 % observed
    config = replace(CFG, model_classes={**FAKES, "conversion": BiasedRate})
    ann = Annotation("mailing", T0 + 20 * W, T0 + 30 * W, frozenset(), frozenset())
    series = {"funnel": "purchase", "from_event": "Checkout Started",
              "to_event": "Order Completed", "source": "web", "platform": "web"}  # fmt: skip
    records = [[WindowRecord(series=series, window_start=T0 + w * W, window_end=T0 + (w + 1) * W,
                             kind="conversion", numerator=30, denominator=100)]
               for w in range(30)]  # fmt: skip
    engine, alerts = run(records, config=config, annotations=[ann])
    assert firings(alerts) == []
    taught = next(s.model.taught for s in engine.series.values() if s.metric == "conversion")
    assert taught[:20] == [(35.0, 100.0)] * 20
    assert taught[20:] == [(40.0, 100.0)] * 10  # annotated: learnt as expected, as before


# ---------------------------------------------------------------------------------- plumbing


def test_missing_windows_count_as_zero_and_late_windows_are_ignored():
    data = synth(300)
    engine = DetectionEngine(config=CFG)
    for recs in data[:200]:
        engine.process(recs)
    # 40 windows with no records at all: the engine fills them with zeros
    alerts = engine.process(data[240])
    assert any(a.kind == "disappeared" for a in alerts)
    assert engine.process(data[100]) == [] and engine.late_windows == 1


def test_until_closes_empty_windows():
    data = synth(200)
    engine, _ = run(data)
    alerts = engine.process([], until=T0 + 240 * W)
    assert engine.last_ts == T0 + 239 * W
    # every event silent on every source: the traffic lost (a drop about no one event)
    assert alerts and {a.kind for a in alerts} <= {"disappeared", "drop"}
    assert any(a.kind == "drop" and "event" not in a.series for a in alerts)


def test_gauges_cover_planned_series_with_contract_labels():
    engine, _ = run(synth(100))
    rows = list(engine.gauges())
    labels = {tuple(sorted(r[0])) for r in rows}
    assert labels == {("event", "kind", "platform", "source")}
    kinds = {r[0]["kind"] for r in rows}
    assert kinds == {"volume", "violation_rate", "conversion"}
    assert all(0.0 <= r[5] <= 1.0 and r[6] is False for r in rows)


def test_dead_series_are_evicted():
    config = replace(CFG, evict_after_minutes=30)
    data = synth(200, events={"Product Viewed": 40.0})
    extra = [[*recs] for recs in data]
    for w in range(20):
        extra[w].append(WindowRecord(series={"event": "Rare", "source": "web", "platform": "web",
                                             "app_version": "unknown"},
                                     window_start=T0 + w * W, window_end=T0 + (w + 1) * W,
                                     count=3))  # fmt: skip
    engine, _ = run(extra, config=config)
    assert not any("Rare" in key for key in engine.series)


def test_state_round_trip_gives_the_same_alerts():
    effects = [
        effect(200, 320, mult=0.0, event="Product Viewed", source="ios"),
        effect(250, 300, mult=4.0, event="Order Completed"),
    ]
    data = synth(420, effects=effects)
    _, alerts = run(data)
    first, head = run(data[:260])
    state = json.loads(json.dumps(first.to_state()))
    resumed = DetectionEngine.from_state(state, config=CFG)
    _, tail = run(data[260:], engine=resumed)
    assert [a.to_dict() for a in head + tail] == [a.to_dict() for a in alerts]
    assert alerts, "the scenario must produce alerts"


def test_states_saved_before_the_slice_tests_load_in_todays(monkeypatch):
    """A state saved with the former per-series slice runs ("slices", "shares", "broken") and
    no slice watch loads: the old runs are dropped, the watch starts afresh, the engine goes
    on."""
    data = sparse_release(monkeypatch, 0.1, start=100, windows=260)
    engine, head = run(data[:110])
    state = json.loads(json.dumps(engine.to_state()))
    for x in state["series"]:
        x.update(slices={"slice:app_version=5.7.0": [0, 0.0, T0]}, shares={}, broken={})
    for key in ("slices", "feed", "platforms", "seq_open"):
        del state[key]
    resumed = DetectionEngine.from_state(state, config=CFG)
    assert resumed.slice_alerts.watch.slices == {}
    _, tail = run(data[110:], engine=resumed)
    assert all(a.kind in KINDS_ALL for a in head + tail)


def test_from_state_rejects_garbage():
    with pytest.raises(ValueError):
        DetectionEngine.from_state({"version": 99}, config=CFG)
    with pytest.raises(ValueError):
        DetectionEngine.from_state([], config=CFG)  # type: ignore[arg-type]


def test_alert_dict_has_the_contract_fields():
    data = synth(400, effects=[effect(200, 240, mult=4.0, event="Order Completed")])
    _, alerts = run(data)
    line = json.loads(json.dumps(alerts[0].to_dict()))
    assert {"id", "kind", "series", "started_at", "ended_at", "observed", "expected", "lower",
            "upper", "score", "explanation", "attribution"} <= set(line)  # fmt: skip
    assert all(set(a) == {"dimension", "value", "share"} for a in line["attribution"])


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------------- evidence rules


def _series_records(counts, users=None, event="Solo", source="web"):
    out = []
    for w, count in enumerate(counts):
        recs = []
        if count > 0:
            recs.append(
                WindowRecord(
                    series={"event": event, "source": source, "platform": source,
                            "app_version": "unknown"},
                    window_start=T0 + w * W, window_end=T0 + (w + 1) * W, count=int(count),
                    distinct_users=int(users[w] if users is not None else count))
            )  # fmt: skip
        out.append(recs)
    return out


class Confident(FakeCount):
    """Believes counts are nearly constant: any excess looks significant to it."""

    def assess(self, ts, observed, weight=1.0):
        exp = self.mean
        score, direction, learning = self._judge(observed, exp, 0.1 * exp)
        return Assessment(observed, exp, exp * 0.9, exp * 1.1, score, direction, learning)


def test_significant_but_tiny_excess_is_not_an_alert():
    """Each user sends 10 events at once. One extra user for 3 minutes is significant to an
    overconfident model but not worth an alert (3 users' worth); 20 extra users are."""
    users = np.full(500, 3)

    def alerts_with(extra_users):
        u = users.copy()
        u[300:303] += extra_users
        config = replace(CFG, slice_dims=(), model_classes={**FAKES, "volume": Confident})
        return firings(run(_series_records(u * 10, u), config=config)[1])

    assert alerts_with(1) == []
    assert [a.kind for a in alerts_with(20)][:1] == ["spike"]


class SlowLearner(FakeCount):
    learning_windows = 400


def test_quiet_spells_seen_while_learning_are_not_disappearances():
    rng = np.random.default_rng(8)
    counts = rng.poisson(10.0, 900)
    for start in range(100, 400, 100):  # known quiet spells of 12 windows during warm-up
        counts[start : start + 12] = 0
    quiet = counts.copy()
    quiet[500:512] = 0  # as long as the usual quiet: fine
    config = replace(CFG, slice_dims=(), model_classes={**FAKES, "volume": SlowLearner})
    _, alerts = run(_series_records(quiet), config=config)
    assert [a.kind for a in firings(alerts)] == []
    gone = counts.copy()
    gone[500:560] = 0  # much longer than ever: gone
    _, alerts = run(_series_records(gone), config=config)
    assert "disappeared" in {a.kind for a in firings(alerts)}


def sparse_funnel(empty_records: bool):
    """Alerts of the real engine on a web funnel of ~20 users an hour whose conversion doubles
    after two days. The workers send no record for a minute without users; with
    `empty_records` every such minute brings a record of 0 users instead (foreign records
    replayed)."""
    rng = np.random.default_rng(5)
    engine, alerts = DetectionEngine(plan=None), []
    series = {"funnel": "purchase", "from_event": "Checkout Started",
              "to_event": "Order Completed", "source": "web", "platform": "web"}  # fmt: skip
    for w in range(3 * 1440):
        users = int(rng.poisson(0.35))
        p = 0.35 if w < 2 * 1440 else 0.75
        ts = T0 + w * W
        rec = WindowRecord(series=series, window_start=ts, window_end=ts + W, kind="conversion",
                           numerator=int(rng.binomial(users, p)), denominator=users)  # fmt: skip
        alerts += engine.process([rec] if users or empty_records else [], until=ts + W)
    return alerts


def test_sparse_conversion_alert_tells_the_users_that_made_it_significant():
    """The real rate model finds the doubled sparse funnel after hours, on a long span. The
    sentence must tell that span ("48 of 60 users in 4 h"), not the few users of the minutes
    since the lifecycle went pending ("3 of 3 users")."""
    alerts = sparse_funnel(empty_records=False)
    fired = [a for a in firings(alerts) if a.kind == "conversion_up"]
    assert len({a.id for a in fired}) == 1, [(a.kind, a.state) for a in alerts]
    converted, users = map(int, re.search(r"(\d+) of (\d+) users", fired[0].explanation).groups())
    assert users >= 20 and converted - 0.35 * users >= 10, fired[0].explanation
    # the level shift is accepted after 4 h; the sentence spans hours, not the minutes that
    # happened to have users in them
    (resolved,) = [a for a in alerts if a.state == "resolved"]
    assert re.search(r"users in (\d h|\d\.\d h)", resolved.explanation), resolved.explanation


def test_minutes_without_users_are_no_evidence_for_a_rate():
    """A conversion record of 0 users says nothing about the rate: the same funnel gives the
    same alerts with or without such records (with them counted as calm minutes, the open
    alert resolved in the first minute without users and fired again, over and over)."""
    without = [(a.id, a.state, a.started_at) for a in sparse_funnel(empty_records=False)]
    assert without
    assert [(a.id, a.state, a.started_at) for a in sparse_funnel(empty_records=True)] == without


def add_volume(data, windows, event: str, source: str, version: str, count: int, users: int):
    """Add to each of `windows` one more volume record of `event` (on `source`, its own
    platform, app `version`): `count` events from `users` users."""
    for w in windows:
        series = {"event": event, "source": source, "platform": source, "app_version": version}
        data[w] = data[w] + [
            WindowRecord(series=series, window_start=T0 + w * W, window_end=T0 + (w + 1) * W,
                         count=count, distinct_users=users)
        ]  # fmt: skip


@pytest.mark.parametrize("users, told", [(1, False), (4, True)])
def test_a_rise_is_told_only_when_its_users_are_beyond_chance(users, told):
    """Search Submitted on the web, about 0.6 a minute, gets 6 more a minute for three minutes:
    from one busy visitor (three user-minutes where about two were usual: chance) it is no
    alert, however many events; from four users a minute it is. (`min_excess_units` lowered so
    that only the users' own significance decides.)"""
    events = {"screen:Home": 60.0, "Search Submitted": 1.0}
    data = synth(700, events=events, conversion=False)
    add_volume(data, range(650, 653), "Search Submitted", "web", "unknown", 6, users)
    _, alerts = run(data, config=replace(CFG, min_excess_units=1.0))
    spikes = [a for a in firings(alerts) if a.kind == "spike"]
    assert bool(spikes) == told, [(a.series, a.explanation) for a in spikes]


@pytest.mark.parametrize(
    "event, version, per_user, told",
    [
        ("Application Updated", "5.8.0", 1, False),
        ("Application Updated", "5.7.0", 1, True),
        ("Application Updated", "5.8.0", 3, True),
        ("Promo Code Redeemed", "5.8.0", 1, True),
    ],
)
def test_a_release_arriving_is_no_update_spike_but_other_rises_from_it_are(
    event, version, per_user, told
):
    """A forced update: three iOS users a minute update to 5.8.0 (first seen now) for half an
    hour, each sending Application Updated once: the release arriving, no alert. The same rise
    from 5.7.0, known for days, is told; so is 5.8.0 sending it three times per user, and a
    rise of another event from the new release (a leaked code used by its users)."""
    events = {"screen:Home": 60.0, event: 0.5}
    data = synth(900, events=events, conversion=False)
    for w in range(800, 830):
        data[w] = data[w] + [
            WindowRecord(
                series={"event": event, "source": "ios", "platform": "ios",
                        "app_version": version},
                window_start=T0 + w * W, window_end=T0 + (w + 1) * W, count=3 * per_user,
                distinct_users=3, arrivals=3,
            )
        ]  # fmt: skip
    _, alerts = run(data)
    spikes = [a for a in firings(alerts) if a.kind in ("spike", "new_event")]
    assert bool(spikes) == told, [(a.series, a.explanation) for a in spikes]
