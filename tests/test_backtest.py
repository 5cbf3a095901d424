"""Backtest scoring: folding alert lines, matching alerts to labelled incidents, the figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors.backtest import (
    AlertSpan,
    Label,
    alert_spans,
    matches,
    score,
    series_match,
)
from detectors.plots import hourly_rates, plot_incident, readable, safe_name, wrap_caption
from detectors.records import Attribution
from detectors.rollup import DEFAULT_LEVELS
from streams.backtest_run import charted, run_backtest, watched_series
from tests.conftest import EXAMPLE_PLAN

H = 3600.0
T = 1_793_577_600.0


def label(kind="drop", series=None, start=T, end=T + H, expect=True, name=None):
    return Label(name or f"{kind}@{start}", kind, series or {"source": "ios", "platform": "ios"},
                 start, end, expect)  # fmt: skip


def span(kind="drop", series=None, started=T + 300, fired=T + 480, ended=None, attribution=(),
         id_="a1"):  # fmt: skip
    return AlertSpan(id_, kind, series or {"source": "ios", "platform": "ios"},
                     list(attribution), started, fired, ended)  # fmt: skip


def test_series_match_rules():
    lab = {"event": "Products Searched", "source": "android", "platform": "android",
           "app_version": "7.4.1"}  # fmt: skip
    exact = span(series=dict(lab))
    assert series_match(lab, exact)
    # platform is implied by source; app_version must come from the attribution
    coarse = span(series={"event": "Products Searched", "source": "android"})
    assert not series_match(lab, coarse)
    coarse.attribution = [Attribution("app_version", "7.4.1", 0.9)]
    assert series_match(lab, coarse)
    coarse.attribution = [Attribution("app_version", "7.4.1", 0.3)]
    assert not series_match(lab, coarse)
    assert not series_match(lab, span(series={"event": "Products Searched", "source": "ios"}))
    assert series_match(
        {"source": "ios", "platform": "ios"},
        span(series={"event": "X", "source": "ios", "platform": "ios"}),
    )


def test_time_and_kind_rules():
    lab = label()
    assert matches(lab, span())
    assert not matches(lab, span(kind="spike"))
    assert not matches(lab, span(kind="disappeared"))
    assert not matches(lab, span(started=T - 3 * H, fired=T - 2 * H))  # already open before
    assert not matches(lab, span(started=T + 4 * H))  # too late even with the slack
    assert matches(lab, span(started=T + 2.5 * H, fired=T + 2.6 * H))  # within the slack
    assert not matches(lab, span(started=T - 300, ended=T - 60))  # resolved before


def test_an_alert_dated_early_finds_the_incident_it_first_fired_during():
    gone = label(kind="disappeared")
    # the last event came 25 min before the stop, the absence was told 50 min after it
    late_told = span(kind="disappeared", started=T - 1500, fired=T + 3000)
    assert matches(gone, late_told)
    # told before the stop began: an earlier absence, not this incident
    assert not matches(gone, span(kind="disappeared", started=T - 1500, fired=T - 60))
    # a fall dated 11 min early by its estimate, fired during the incident
    assert matches(label(), span(started=T - 660, fired=T + H))
    # fired after the incident and its slack: about something else
    assert not matches(label(), span(started=T - 660, fired=T + 3.5 * H))


def test_fold_alert_lines_keeps_latest_kind_and_first_firing():
    lines = [
        {"id": "x", "kind": "drop", "state": "firing", "series": {"event": "A"},
         "started_at": "2026-11-02T10:00:00Z", "updated_at": "2026-11-02T10:03:00Z",
         "ended_at": None, "attribution": []},
        {"id": "x", "kind": "disappeared", "state": "firing",
         "series": {"event": "A", "source": "ios"}, "started_at": "2026-11-02T10:00:00Z",
         "updated_at": "2026-11-02T10:05:00Z", "ended_at": None,
         "attribution": [{"dimension": "app_version", "value": "1", "share": 1.0}]},
        {"id": "x", "kind": "disappeared", "state": "resolved",
         "series": {"event": "A", "source": "ios"}, "started_at": "2026-11-02T10:00:00Z",
         "updated_at": "2026-11-02T11:00:00Z", "ended_at": "2026-11-02T11:00:00Z",
         "attribution": []},
    ]  # fmt: skip
    (s,) = alert_spans(lines)
    assert s.kind == "disappeared" and s.series == {"event": "A", "source": "ios"}
    assert s.fired - s.started == 180
    assert s.ended - s.started == 3600
    assert s.attribution[0].value == "1"


def test_fold_counts_an_alert_that_fires_again_after_resolving():
    def line(state, minute):
        at = f"2026-11-02T10:{minute:02d}:00Z"
        return {"id": "x", "kind": "drop", "state": state, "series": {"event": "A"},
                "started_at": "2026-11-02T10:00:00Z", "updated_at": at,
                "ended_at": at if state == "resolved" else None, "attribution": []}  # fmt: skip

    steady = [line("firing", 3), line("firing", 4), line("resolved", 9)]
    assert [s.reopened for s in alert_spans(steady)] == [0]
    flapping = [*steady, line("firing", 20), line("resolved", 25), line("firing", 30)]
    (s,) = alert_spans(flapping)
    assert s.reopened == 2 and s.ended is None
    assert score([], [s], days=1.0).summary()["reopened"] == 2


def test_score_recall_false_alerts_latency():
    labels = [
        label("drop", name="outage"),
        label("spike", {"event": "PV", "source": "web", "platform": "web"}, start=T + 5 * H,
              end=T + 6 * H, name="bots"),
        label("campaign", {"source": "web", "platform": "web"}, start=T + 10 * H,
              end=T + 12 * H, expect=False, name="newsletter"),
    ]  # fmt: skip
    spans = [
        span(id_="hit", fired=T + 600),
        span(id_="dup", series={"event": "PV", "source": "ios", "platform": "ios"},
             fired=T + 900),
        span("spike", {"event": "other"}, started=T + 20 * H, fired=T + 20 * H, id_="noise"),
        span("spike", {"source": "web", "platform": "web"}, started=T + 10.5 * H,
             fired=T + 10.6 * H, id_="campaign-alert"),
    ]  # fmt: skip
    result = score(labels, spans, days=2.0)
    assert result.recall_by_kind() == {"drop": (1, 1), "spike": (0, 1)}
    assert result.recall == 0.5
    assert result.latency == {"outage": 10.0}
    assert {s.id for s in result.false_alerts} == {"noise", "campaign-alert"}
    assert result.false_per_day == 1.0
    assert result.median_latency == 10.0 and result.max_latency == 10.0
    summary = result.summary()
    assert summary["missed"] == ["bots"] and summary["false_alerts"] == 2


def test_score_without_labels_or_alerts():
    empty = score([], [], days=1.0)
    assert empty.recall == 1.0 and empty.false_per_day == 0.0 and empty.median_latency is None


def test_watched_series_picks_the_most_specific_modelled_level():
    lab = label("disappeared", {"event": "A", "source": "ios", "platform": "ios",
                                "app_version": "1"})  # fmt: skip
    assert watched_series(lab, DEFAULT_LEVELS) == "volume|event=A|platform=ios|source=ios"
    # no level models a whole source by default: the plot sums the source's event series
    assert watched_series(label("drop"), DEFAULT_LEVELS) == "volume|platform=ios|source=ios"
    conv = label("conversion_down", {"from_event": "C", "to_event": "O", "source": "web",
                                     "platform": "web"})  # fmt: skip
    assert watched_series(conv, DEFAULT_LEVELS).startswith("conversion|from_event=C")
    assert watched_series(label("violation_surge", {"event": "A", "source": "ios"}),
                          DEFAULT_LEVELS) == "violation|event=A"  # fmt: skip


def test_plot_writes_a_png(tmp_path: Path):
    rows = [(T + i * 60, 10.0 + (i % 7), 12.0, 5.0, 20.0, 0.1, 1.0) for i in range(300)]
    said = span(fired=T + 110 * 60)
    said.explanation = "Orders of $x^_^$ rose, {odd} \\frac " * 20  # text, not TeX
    path = plot_incident(tmp_path / f"{safe_name('Wéird/näme: 🎉 $x^$')}.png",
                         label(start=T + 100 * 60, end=T + 160 * 60, name="$a^_^$ 🎉"),
                         "volume|source=ios", rows, [said])  # fmt: skip
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = plot_incident(tmp_path / "empty.png", label(), "volume|x=y", [])
    assert empty.stat().st_size > 0
    conv = label("conversion_up", {"from_event": "C", "to_event": "O", "source": "web"})
    rates = [(T + i * 60, float(i % 2), 0.4, 0.0, 1.0, 0.2, 1.0) for i in range(0, 300, 7)]
    drawn = plot_incident(tmp_path / "rate.png", conv,
                          "conversion|from_event=C|source=web|to_event=O", rates)  # fmt: skip
    assert drawn.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rate_is_charted_over_the_last_hour_of_the_windows_with_users():
    """Windows without users carry nothing (no stale value repeated); each point is the users'
    rate over the hour up to it, with the binomial range for that many users."""
    rows = [
        (T, 1.0, 0.4, 0.0, 1.0, 0.1, 2.0),  # 2 of 2 users
        (T + 60, 0.0, 0.4, 0.0, 1.0, 0.1, 0.0),  # nobody: skipped
        (T + 1800, 0.25, 0.5, 0.0, 1.0, 0.2, 4.0),  # 1 of 4
        (T + 3600, 0.0, 0.4, 0.0, 1.0, 0.3, 1.0),  # the first row is an hour old now
    ]
    out = hourly_rates(rows)
    assert [r[0] for r in out] == [T, T + 1800, T + 3600]
    assert out[0][1] == 1.0 and out[0][6] == 2.0
    assert out[1][1] == pytest.approx(3 / 6) and out[1][2] == pytest.approx((0.8 + 2.0) / 6)
    assert out[2][1] == pytest.approx(1 / 5) and out[2][6] == 5.0
    lower, upper = out[1][3], out[1][4]
    assert 0.0 <= lower < out[1][2] < upper <= 1.0  # 6 users: a wide range
    wide = hourly_rates([(T, 0.4, 0.4, 0.0, 1.0, 0.0, 6.0)])[0]
    narrow = hourly_rates([(T, 0.4, 0.4, 0.0, 1.0, 0.0, 600.0)])[0]
    assert narrow[4] - narrow[3] < (wide[4] - wide[3]) / 5


def test_caption_keeps_numbers_with_their_units():
    said = "Conversion on android fell to 18 % (usually about 41 %): 19 of 103 users in 4 h."
    for width in range(20, 90):
        lines = wrap_caption(said, width, lines=20).split("\n")
        assert not any(line.endswith(("4", "18", "41", "103")) for line in lines), lines
    assert wrap_caption("x " * 400, 20).count("\n") == 3  # at most four lines


def test_series_keys_read_as_words():
    key = "conversion|from_event=Checkout Started|platform=web|source=web|to_event=Order Completed"
    assert readable(key) == "Conversion from Checkout Started to Order Completed on web"
    assert readable("volume|event=A|platform=ios|source=ios") == "A on ios"
    assert readable("volume|event=page:Home|source=web") == "Home page views on web"
    assert readable("volume|source=server|platform=web") == "All events on server (web)"
    key = "violation|app_version=5.7.1|event=Product List Viewed|platform=ios|source=ios"
    assert readable(key) == "Plan violations of Product List Viewed on ios for app version 5.7.1"


@pytest.mark.parametrize(
    ("text", "name"), [("a/b c", "a_b_c"), ("🎉", "incident"), ("x" * 200, "x" * 80)]
)
def test_safe_name(text, name):
    assert safe_name(text) == name


def test_alerts_on_deviations_an_incident_causes_elsewhere_are_related_not_false():
    conv = Label.from_dict({
        "name": "tag", "kind": "conversion_up", "start": T, "end": T + 4 * H,
        "series": {"from_event": "C", "to_event": "O", "source": "web", "platform": "web"},
        "related": [{"kind": "spike", "series": {"event": "O"}}],
    })  # fmt: skip
    spans = [
        span("spike", {"event": "O"}, started=T + H, fired=T + H + 300, id_="extra-orders"),
        span("spike", {"event": "O"}, started=T + 9 * H, fired=T + 9 * H, id_="later"),
        span("drop", {"event": "O"}, started=T + H, fired=T + H, id_="wrong-kind"),
    ]
    result = score([conv], spans, days=1.0)
    assert [s.id for s in result.related_alerts] == ["extra-orders"]
    assert {s.id for s in result.false_alerts} == {"later", "wrong-kind"}
    assert result.recall == 0.0  # a related alert is not a find of the labelled deviation
    assert result.summary()["related_alerts"] == 1


def test_backtest_charts_a_rate_only_in_windows_with_users(tmp_path: Path):
    """A small day with a conversion incident: the charted funnel has a row for each window
    with users and none for the others (the chart used to repeat the last value through them)."""
    schedule = tmp_path / "incidents.yaml"
    schedule.write_text(
        "incidents:\n  - name: double\n    kind: conversion_up\n    at: day 0 18:00\n"
        "    duration: 2h\n    source: web\n"
    )
    run = run_backtest(1, 400, 3, plan_path=EXAMPLE_PLAN, schedule_path=schedule)
    early = [k for k in run.history if "within_minutes=10" in k]
    assert early and run.history[early[0]]  # the early rate is recorded too, for its chart
    rows = run.history[run.plotted["double"]]
    assert rows and all(r[6] >= 1 for r in rows)
    assert len(rows) < 0.5 * 11 * 60  # charted from 6 h before the label to 3 h after: 11 h
    assert len({r[0] for r in rows}) == len(rows)


def test_a_conversion_incident_is_charted_on_the_rate_its_alert_was_about():
    whole = "conversion|from_event=C|platform=web|source=web|to_event=O"
    early = "conversion|from_event=C|platform=web|source=web|to_event=O|within_minutes=10"
    on_early = span("conversion_up", {"from_event": "C", "to_event": "O", "within_minutes": "10"})
    on_whole = span("conversion_up", {"from_event": "C", "to_event": "O", "source": "web"})
    assert charted(whole, early, on_early, early_rows=True) == early
    assert charted(whole, early, on_whole, early_rows=True) == whole
    assert charted(whole, early, None, early_rows=True) == whole  # missed: the hour's rate
    assert charted(whole, early, on_early, early_rows=False) == whole  # nothing to draw
