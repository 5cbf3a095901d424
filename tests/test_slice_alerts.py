"""`detectors.slice_alerts`: the slice tests' verdicts turned into lifecycle steps and incidents.
Unit tests on the class itself, its tests (`SliceWatch`) replaced by verdicts handed over, with
series as the engine keeps them (`Series`); the engine's own tests cover the slice tests end to
end (tests/test_engine.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from detectors.attribution import SliceBaseline
from detectors.engine_config import EngineConfig
from detectors.engine_state import Incident, Series, Track
from detectors.incidents import Incidents
from detectors.records import WITHIN, Anomaly, WindowRecord
from detectors.rollup import series_key
from detectors.slice_alerts import SliceAlerts
from detectors.slices import WHOLE, Observation, SliceWatch, Verdict

T0 = 1_793_577_600.0  # 2026-11-02 00:00 UTC, a Monday
W = 60.0
IOS = {"source": "ios_app", "platform": "ios"}
PLACED = {"event": "Order Placed", **IOS}
STEPS = {"from_event": "Checkout Started", "to_event": "Order Placed"}


class Watch:
    """Stands in for `SliceWatch`: gives the verdicts it is handed, notes what it is told."""

    def __init__(self) -> None:
        self.verdicts: list[Verdict] = []
        self.adopted: list[str] = []
        self.discarded: list[str] = []
        self.may_accept: Any = None

    def window(self, ts: float, window: float, observations: list, may_accept: Any) -> list:
        self.may_accept = may_accept
        verdicts, self.verdicts = self.verdicts, []
        return verdicts

    def adopt(self, tkey: str) -> None:
        self.adopted.append(tkey)

    def discard(self, tkey: str) -> None:
        self.discarded.append(tkey)

    def shortfall_by_value(self, tkey: str) -> dict[str, float]:
        return {"3.10.0": 12.0}


class Desk:
    """A `SliceAlerts` over series and incidents of its own, as the engine would hand them over."""

    def __init__(self) -> None:
        self.series: dict[str, Series] = {}
        self.config = EngineConfig()
        self.incidents = Incidents(self.config, self.series.get, lambda: W)
        self.superseded = False
        self.broken: list[tuple[str | None, str | None]] = []
        self.alerts = self.fresh()
        self.watch = Watch()
        self.alerts.watch = self.watch  # type: ignore[assignment]
        self.out: list[Anomaly] = []

    def fresh(self) -> SliceAlerts:
        """A `SliceAlerts` over this desk's series and incidents, with its own real tests."""
        return SliceAlerts(
            self.config,
            self.series.get,
            self.incidents,
            lambda rec: float(rec.count),
            lambda series, since: self.superseded,
            self._broken,
        )

    def _broken(self, step: str | None, source: str | None) -> bool:
        """Order Placed is broken on every source; each question is noted."""
        self.broken.append((step, source))
        return step == "Order Placed"

    def add(self, metric: str, labels: dict[str, str]) -> Series:
        """A series the engine models."""
        key = series_key(metric, labels)
        s = Series(
            key=key, metric=metric, series=dict(labels), model=None,
            baseline=SliceBaseline(), first_seen=T0, last_active=T0,
        )  # fmt: skip
        self.series[key] = s
        return s

    def window(self, i: int, *verdicts: Verdict) -> list[Anomaly]:
        """Window `i` (minutes after T0) with these verdicts and one record of the iOS app's
        users (its platform); the alerts it changed."""
        record = WindowRecord(dict(IOS, app_version="3.10.0"), T0 + i * W, T0 + (i + 1) * W,
                              count=40, distinct_users=40, kind="activity")  # fmt: skip
        self.watch.verdicts = list(verdicts)
        before = len(self.out)
        self.alerts.window(T0 + i * W, W, [record], [], self.out)
        return self.out[before:]


def verdict(family: str, subject: str, value: str = "3.10.0", **kw: Any) -> Verdict:
    """A verdict of one slice test on the iOS app, hot since window 10 unless told otherwise."""
    fields = dict(hot=True, calm=False, onset=T0 + 10 * W, observed=0.0, expected=30.0,
                  trials=0.0, minutes=20.0, rate=0.2)  # fmt: skip
    fields.update(kw)
    key = f"{family}|{subject}|ios_app|{value}"
    return Verdict(key, family, subject, "ios_app", value, **fields)  # type: ignore[arg-type]


def test_a_hot_verdict_fires_at_once_from_its_onset_and_resolves_once_calm() -> None:
    """A version that stopped sending an event: its track on the event's volume on that source
    fires in the window of the verdict, dated from the test's onset, told by the test's
    evidence; windows without a verdict calm it, and once past reopening it is forgotten."""
    desk = Desk()
    parent = desk.add("volume", PLACED)
    (alert,) = desk.window(30, verdict("gone", "Order Placed"))
    name = "seq:gone:Order Placed:ios_app:3.10.0"
    assert (alert.kind, alert.state) == ("disappeared", "firing")
    assert alert.series == {**PLACED, "app_version": "3.10.0"}  # the platform from the records
    assert alert.started_at == "2026-11-02T00:10:00Z"  # the onset, not the window of the verdict
    assert desk.alerts.platforms == {"ios_app": "ios"}
    assert desk.alerts.open == {(parent.key, name)}
    track = parent.tracks[name]
    assert track.lifecycle.state == "firing" and track.fired_at == T0 + 31 * W
    assert track.told == [0.0, 30.0, 0.0, 20.0] and track.cause == "gone"
    assert track.windows == 20 and track.peak == 1.0
    assert desk.incidents.of((parent.key, name)) is not None
    calm = [a for i in range(31, 40) for a in desk.window(i)]
    assert [a.state for a in calm] == ["resolved"]
    assert calm[0].id == alert.id and calm[0].ended_at == "2026-11-02T00:31:00Z"
    for i in range(40, 75):
        assert not desk.window(i)
    assert desk.alerts.open == set() and name not in parent.tracks


def test_a_verdict_that_is_not_hot_makes_no_track() -> None:
    desk = Desk()
    parent = desk.add("volume", PLACED)
    assert not desk.window(30, verdict("gone", "Order Placed", hot=False))
    assert not desk.window(31, verdict("gone", "Order Placed", hot=False, calm=True))
    assert parent.tracks == {} and desk.alerts.open == set()


def test_a_verdict_on_a_series_the_engine_does_not_model_is_dropped() -> None:
    desk = Desk()
    assert not desk.window(30, verdict("gone", "Order Placed"))
    assert desk.alerts.open == set()


@pytest.mark.parametrize("family", ["conv_down", "conv_less"])  # halved, a quarter lower
def test_a_whole_source_conversion_falling_is_its_step_pairs_and_names_the_releases(
    family: str,
) -> None:
    """A funnel step's early conversion on the whole source: a track of the step pair's early
    conversion on that source (no version), attributed to the releases the versions' tests
    find short."""
    desk = Desk()
    early = {**STEPS, WITHIN: "10", **IOS}
    parent = desk.add("conversion", early)
    subject = "Checkout Started→Order Placed@10"
    v = verdict(family, subject, WHOLE, observed=5.0, expected=15.0, trials=50.0)
    (alert,) = desk.window(30, v)
    assert (alert.kind, alert.series) == ("conversion_down", early)
    track = parent.tracks[f"seq:{family}:{subject}:ios_app:{WHOLE}"]
    assert track.told == [5.0, 15.0, 50.0, 20.0] and track.cause == "conversion"
    assert track.parts == {"app_version": {"3.10.0": [0.0, 12.0]}}
    assert track.last == [0.1, 0.2, 0.0, 0.0]


@pytest.mark.parametrize("family", ["conv_down", "conv_less"])
def test_a_conversion_change_its_series_accepted_already_is_adopted_not_told(family: str) -> None:
    desk = Desk()
    parent = desk.add("conversion", {**STEPS, **IOS})
    parent.tracks["down"] = Track(muted=True)
    v = verdict(family, "Checkout Started→Order Placed", WHOLE, trials=50.0)
    assert not desk.window(30, v)
    assert desk.watch.adopted == [v.key] and list(parent.tracks) == ["down"]


def test_an_event_gone_from_a_release_its_users_left_is_adopted_not_told() -> None:
    desk = Desk()
    parent = desk.add("volume", PLACED)
    desk.superseded = True  # its users moved to a newer release that sends it
    v = verdict("gone", "Order Placed")
    assert not desk.window(30, v)
    assert desk.watch.adopted == [v.key] and parent.tracks == {}


def test_a_pair_whose_first_step_is_flooded_is_discarded() -> None:
    """Users who do not go on from a page in an open spike on that source are the flood's
    (bots): the pair's test is discarded, the spike told it already."""
    desk = Desk()
    parent = desk.add("volume", PLACED)
    spike = Incident("x", "spike", "volume:up", ("k", "up"), {"event": "Checkout Started"},
                     T0, [("k", "up")], 1)  # fmt: skip
    desk.incidents.open["x"] = spike
    v = verdict("pair_gone", "Checkout Started→Order Placed")
    assert not desk.window(30, v)
    assert desk.watch.discarded == [v.key] and parent.tracks == {}
    del desk.incidents.open["x"]
    (alert,) = desk.window(31, v)  # no flood: the next step stopped arriving
    assert alert.kind == "disappeared" and alert.series == {**PLACED, "app_version": "3.10.0"}
    assert parent.tracks[f"seq:pair_gone:{v.subject}:ios_app:3.10.0"].cause == (
        "pair:Checkout Started"
    )


def test_a_next_step_that_stopped_is_dated_no_earlier_than_it_last_came() -> None:
    """A pair's evidence is dated by its first step (the screen): its onset may come before the
    next step last arrived (the screen's users of 00:10 would have sent it by 00:14). "Has
    stopped arriving since" is then the start of the source's empty run of the next step; a
    version's slice keeps its onset (the source's other versions may have sent it since)."""
    subject = "Checkout Started→Order Placed"
    for value, empty_since, started in (
        (WHOLE, 14, "00:14"),  # Order Placed last came from the iOS app in window 13
        ("3.10.0", 14, "00:10"),
        (WHOLE, 5, "00:10"),  # empty since before the onset: the onset stands
    ):
        desk = Desk()
        desk.add("volume", PLACED).zero_since = T0 + empty_since * W
        (alert,) = desk.window(30, verdict("pair_gone", subject, value=value))
        assert alert.kind == "disappeared" and alert.started_at == f"2026-11-02T{started}:00Z"


def test_a_funnel_step_whose_last_step_is_broken_is_never_accepted() -> None:
    desk = Desk()
    desk.window(30)
    may_accept = desk.watch.may_accept
    funnel = Observation("funnel", "Checkout Started→Order Placed@10", "ios_app", WHOLE, 1, 9)
    other = Observation("funnel", "Checkout Started→Payment Info", "ios_app", WHOLE, 1, 9)
    assert not may_accept(funnel) and may_accept(other)
    assert may_accept(Observation("bad", "Order Placed", "ios_app", "3.10.0", 1, 9))
    assert desk.broken == [("Order Placed", "ios_app"), ("Payment Info", "ios_app")]


def test_the_state_is_the_engines_four_keys_and_loads_back() -> None:
    desk = Desk()
    desk.add("volume", PLACED)
    desk.window(30, verdict("gone", "Order Placed"))
    desk.alerts.watch = SliceWatch(desk.config.slices)  # the real tests again, to be saved
    state = json.loads(json.dumps(desk.alerts.to_state()))
    assert list(state) == ["slices", "feed", "platforms", "seq_open"]
    assert state["platforms"] == {"ios_app": "ios"}
    name = "seq:gone:Order Placed:ios_app:3.10.0"
    assert state["seq_open"] == [[series_key("volume", PLACED), name]]
    assert state["feed"]["windows"] == 1
    again = desk.fresh()
    again.load_state(state)
    assert again.platforms == desk.alerts.platforms and again.open == desk.alerts.open
    assert again.to_state() == state
    afresh = desk.fresh()
    afresh.load_state({})  # a state saved before the slice tests
    assert afresh.open == set() and afresh.platforms == {} and afresh.watch.slices == {}


def test_a_track_without_a_verdict_whose_series_is_gone_is_let_go() -> None:
    desk = Desk()
    parent = desk.add("volume", PLACED)
    desk.window(30, verdict("gone", "Order Placed"))
    del desk.series[parent.key]  # forgotten by the engine
    assert not desk.window(31)
    assert desk.alerts.open == set()
