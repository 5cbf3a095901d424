"""The labelled incident `trackwatch run --simulate` plays live: its schedule is the simulator's
format, and only an alert of its kind, event and time counts as finding it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streams.cli.run import INCIDENT_LASTS, live_incident
from streams.simulator.incidents import load_incidents


def test_the_schedule_starts_it_on_the_first_live_minute(tmp_path) -> None:
    live = datetime(2026, 12, 6, 2, 16, 41, tzinfo=UTC)
    incident = live_incident(live)
    assert incident.start == datetime(2026, 12, 6, 2, 17, tzinfo=UTC)
    assert incident.end - incident.start == INCIDENT_LASTS
    begin = live.replace(second=0) - timedelta(hours=28)  # the warm-up's first moment
    path = tmp_path / "live.yaml"
    path.write_text(incident.schedule(begin), encoding="utf-8")
    (loaded,) = load_incidents(path, begin)
    assert loaded.kind == "spike" and loaded.start == incident.start
    assert loaded.end == incident.end
    assert loaded.label_series == {"event": "Product Viewed", "source": "web", "platform": "web"}
    assert loaded.params["factor"] == 10


def test_only_an_alert_of_its_kind_event_and_time_finds_it() -> None:
    incident = live_incident(datetime(2026, 12, 6, 2, 16, 41, tzinfo=UTC))
    alert = {
        "kind": "spike",
        "series": {"event": "Product Viewed", "source": "web", "platform": "web"},
        "started_at": "2026-12-06T02:18:00Z",
    }
    assert incident.found_by(alert)
    assert incident.found_by({**alert, "series": {"event": "Product Viewed"}})  # the total
    assert not incident.found_by({**alert, "started_at": "2026-12-06T00:00:00Z"})  # before it
    assert not incident.found_by({**alert, "kind": "drop"})
    assert not incident.found_by({**alert, "series": {"event": "Product Viewed", "source": "ios"}})
    assert not incident.found_by({**alert, "series": {"event": "Order Completed"}})
    for odd in ("yesterday", None, "2026-12-06T02:18:00"):  # no time zone: not an alert's
        assert not incident.found_by({**alert, "started_at": odd})
    assert not incident.found_by({**alert, "series": ["not", "a", "dict"]})
