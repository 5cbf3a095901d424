"""The models' status a first run shows: waiting, learning until when, then watching."""

from __future__ import annotations

import random

from detectors.engine import DetectionEngine
from detectors.records import WindowRecord
from streams.model_status import ModelStatus, model_status

T0 = 1_764_547_200.0  # 2025-12-01 00:00 UTC, a Monday
W = 60.0
DAY = 86_400.0


def _window(w: int, rng: random.Random, extra: list[tuple[str, int]] = ()) -> list[WindowRecord]:
    events = [("Product Viewed", 40), ("Order Completed", 4), *extra]
    return [
        WindowRecord(
            series={"event": name, "source": "web", "platform": "web"},
            window_start=T0 + w * W,
            window_end=T0 + (w + 1) * W,
            count=(n := max(0, round(rng.gauss(mean, mean**0.5)))),
            distinct_users=n,
        )
        for name, mean in events
    ]


def test_a_new_engine_waits_for_traffic() -> None:
    assert model_status(None) == ModelStatus()
    status = model_status(DetectionEngine())
    assert status.series == 0 and status.learning_until is None
    assert status.summary().startswith("waiting for traffic")
    assert status.to_dict()["learning_until"] is None


def test_learning_for_a_day_then_watching_and_newcomers_learn_on() -> None:
    rng = random.Random(5)
    engine = DetectionEngine()
    engine.process([r for w in range(60) for r in _window(w, rng)])
    status = model_status(engine)
    assert status.series > 0 and status.learning == status.series  # all of them: first hour
    assert status.learning_until == T0 + DAY  # a volume model learns for its first day
    assert status.event_time == T0 + 60 * W
    assert "learning until Tue 02 Dec 00:00 UTC" in status.summary()
    assert status.to_dict()["learning_until"] == "2025-12-02T00:00:00Z"

    engine.process([r for w in range(60, 1_700) for r in _window(w, rng)])
    watching = model_status(engine)
    assert watching.learning == 0 and watching.ready == watching.series
    assert watching.summary() == f"watching {watching.series} series, all past learning"

    late = [("Refund Requested", 3)]  # a series first seen now learns a day of its own
    engine.process([r for w in range(1_700, 1_710) for r in _window(w, rng, late)])
    newer = model_status(engine)
    assert 0 < newer.learning < newer.series
    assert newer.learning_until == T0 + 1_700 * W + DAY
    assert "newer ones learn until" in newer.summary()


def test_a_backlog_is_shown_as_such() -> None:
    status = ModelStatus(series=10, learning=10, learning_until=T0 + DAY, event_time=T0 + 3600)
    assert "reading a backlog" in status.summary(now=T0 + 5 * 3600)
    assert "reading a backlog" not in status.summary(now=T0 + 3600 + 60)
