"""`detectors.incidents`: lifecycles that fire grouped into incidents, told as alerts. Unit tests
on the class itself, with series and tracks as the engine keeps them (`Series`, `Track`); the
engine's own tests cover the same rules end to end (tests/test_engine.py)."""

from __future__ import annotations

from detectors.attribution import SliceBaseline
from detectors.engine_config import EngineConfig
from detectors.engine_state import Series, Track
from detectors.incidents import Incidents, group_of
from detectors.lifecycle import Lifecycle, alert_id
from detectors.records import Anomaly
from detectors.rollup import series_key

T0 = 1_793_577_600.0  # 2026-11-02 00:00 UTC, a Monday
W = 60.0
TOTAL = {"event": "Order Completed"}
IOS = {"event": "Order Completed", "source": "ios_app", "platform": "ios"}
ANDROID = {"event": "Order Completed", "source": "android_app", "platform": "android"}


class Book:
    """An `Incidents` over series of its own, as the engine would hand them over."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.series: dict[str, Series] = {}
        self.incidents = Incidents(config or EngineConfig(), self.series.get, lambda: W)
        self.out: list[Anomaly] = []

    def firing(self, labels: dict[str, str], family: str, started: float) -> Series:
        """A volume series whose `family` lifecycle has fired, pending since `started`."""
        key = series_key("volume", labels)
        s = self.series.get(key) or Series(
            key=key, metric="volume", series=dict(labels), model=None,
            baseline=SliceBaseline(), first_seen=T0, last_active=T0,
        )  # fmt: skip
        self.series[key] = s
        observed, expected = (30.0, 10.0) if family == "up" else (2.0, 20.0)
        s.tracks[family] = Track(
            lifecycle=Lifecycle(state="firing", started=started, hits=3),
            obs=observed, exp=expected, windows=3, peak=1.0,
            last=[observed / 3, expected / 3, 1.0, 8.0],
            hot=[observed, expected, 0.0, started + 3 * W],
        )  # fmt: skip
        return s

    def fire(self, labels: dict[str, str], family: str, kind: str, started: float) -> Series:
        """That series fires at the third window of its lifecycle."""
        s = self.firing(labels, family, started)
        self.incidents.fire(started + 2 * W, W, s, family, kind, dict(labels), self.out)
        return s

    def calm(self, s: Series, family: str, ended: float) -> None:
        """That lifecycle resolved, calm since `ended`."""
        lifecycle = s.tracks[family].lifecycle
        lifecycle.state, lifecycle.ended = "resolved", ended
        self.incidents.resolve(ended + 4 * W, W, s, family, self.out)


def test_a_lifecycle_that_fires_opens_one_incident_and_tells_it_firing() -> None:
    book = Book()
    s = book.fire(TOTAL, "up", "spike", T0)
    (inc,) = book.incidents.open.values()
    assert inc.id == alert_id(s.key, "volume:up", T0)
    assert (inc.kind, inc.group, inc.series, inc.started) == ("spike", "volume:up", TOTAL, T0)
    assert inc.owner == (s.key, "up") and inc.members == [(s.key, "up")]
    assert book.incidents.of((s.key, "up")) is inc
    assert book.incidents.busy() == {s.key}
    (alert,) = book.out
    assert (alert.id, alert.kind, alert.state, alert.series) == (inc.id, "spike", "firing", TOTAL)
    assert alert.started_at == "2026-11-02T00:00:00Z" and alert.ended_at is None
    assert [a.id for a in book.incidents.active(T0 + 2 * W)] == [inc.id]


def test_a_slice_of_the_same_event_joins_the_open_incident() -> None:
    """The total and its iOS slice rising together are one alert, about the total: the
    slice adds a member and tells nothing new."""
    book = Book()
    total = book.fire(TOTAL, "up", "spike", T0)
    ios = book.fire(IOS, "up", "spike", T0 + 2 * W)
    (inc,) = book.incidents.open.values()
    assert inc.members == [(total.key, "up"), (ios.key, "up")]
    assert inc.owner == (total.key, "up") and inc.series == TOTAL
    assert len(book.out) == 1


def test_the_same_event_on_another_source_widens_the_incident_to_what_they_share() -> None:
    book = Book()
    book.fire(IOS, "down", "drop", T0)
    book.fire(ANDROID, "down", "drop", T0 + 2 * W)  # within `together_minutes`
    (inc,) = book.incidents.open.values()
    assert inc.series == TOTAL and len(inc.members) == 2
    assert [(a.state, a.series) for a in book.out] == [("firing", IOS), ("firing", TOTAL)]


def test_an_old_incident_does_not_swallow_a_new_one_of_another_source() -> None:
    config = EngineConfig()
    book = Book(config)
    book.fire(IOS, "down", "drop", T0)
    book.fire(ANDROID, "down", "drop", T0 + (config.together_minutes + 1) * 60.0)
    assert len(book.incidents.open) == 2


def test_a_stronger_kind_makes_the_incident_its_own() -> None:
    """A drop whose slice went silent becomes that slice's `disappeared` (kinds only move up)."""
    book = Book()
    total = book.fire(TOTAL, "down", "drop", T0)
    ios = book.firing(IOS, "down", T0 + W)
    ios.tracks["down"].silent_windows, ios.tracks["down"].silent_expected = 10, 40.0
    book.incidents.to_disappeared(T0 + 10 * W, W, ios, "down", dict(IOS), book.out)
    (inc,) = book.incidents.open.values()
    assert (inc.kind, inc.owner, inc.series) == ("disappeared", (ios.key, "down"), IOS)
    assert (total.key, "down") in inc.members
    assert [a.kind for a in book.out] == ["drop", "disappeared"]
    book.fire(TOTAL, "down", "drop", T0)  # a weaker kind never moves it back
    assert book.incidents.open[inc.id].kind == "disappeared"


def test_resolve_closes_the_incident_with_its_last_member_and_keeps_it_for_reopening() -> None:
    config = EngineConfig()
    book = Book(config)
    total = book.fire(TOTAL, "up", "spike", T0)
    ios = book.fire(IOS, "up", "spike", T0 + W)
    (inc,) = book.incidents.open.values()
    book.calm(ios, "up", T0 + 20 * W)
    assert inc.id in book.incidents.open and len(book.out) == 1  # the total still fires
    book.calm(total, "up", T0 + 30 * W)
    assert book.incidents.open == {}
    resolved = book.out[-1]
    assert (resolved.id, resolved.state) == (inc.id, "resolved")
    assert resolved.ended_at == "2026-11-02T00:30:00Z"
    assert book.incidents.recent == [(inc.id, "volume:up", TOTAL, T0, T0 + 30 * W)]
    # the same trouble again within `reopen_minutes` of the end: the same alert, reopened
    again = T0 + 30 * W + (config.lifecycle.reopen_minutes - 10) * 60.0
    book.fire(TOTAL, "up", "spike", again)
    (reopened,) = book.incidents.open.values()
    assert (reopened.id, reopened.started) == (inc.id, T0)
    assert book.incidents.recent == []


def test_the_group_of_a_lifecycle_is_its_metric_and_direction() -> None:
    book = Book()
    volume = book.firing(TOTAL, "down", T0)
    activity = Series(key="activity|source=ios_app", metric="activity",
                      series={"source": "ios_app"}, model=None, baseline=SliceBaseline(),
                      first_seen=T0, last_active=T0)  # fmt: skip
    assert group_of(volume, "down") == "volume:down"
    assert group_of(activity, "down") == "volume:down"  # users gone: a drop of the traffic
    assert group_of(volume, "new") == "new"
    assert group_of(volume, "seq:gone:Order Completed:ios_app:3.1.0") == "volume:down"
