"""The worker's `trackwatch_anomaly_firing` for anomalies about events the plan does not know: the
engine exports no series for them (unbounded names), so a new unplanned event was firing on
/api/anomalies but never in Prometheus (found by tests/test_e2e_alerts.py: no
TrackwatchAnomalyFiring). They now fire under event="(unplanned)"."""

from __future__ import annotations

from detectors.records import Anomaly
from streams.worker import unplanned_firing
from tests.conftest import EXAMPLE_PLAN
from tracking_plan.loader import load_plan

PLAN = load_plan(EXAMPLE_PLAN)


def anomaly(series: dict[str, str], state: str = "firing", kind: str = "new_event") -> Anomaly:
    return Anomaly(
        id=str(sorted(series.items())), kind=kind, series=series, state=state,  # type: ignore[arg-type]
        started_at="2026-12-01T10:00:00Z", updated_at="2026-12-01T10:05:00Z", ended_at=None,
        observed=6, expected=0, lower=0, upper=0, score=1, explanation="",
    )  # fmt: skip


def test_firing_anomalies_of_unplanned_events_share_one_bounded_label_set() -> None:
    anomalies = [
        anomaly({"event": "Promo Popup Shown"}),
        anomaly({"event": "Banner Clicked ☕"}),
        anomaly({"event": "Coupon Pasted", "source": "ios", "platform": "ios"}, kind="spike"),
        anomaly({"event": "Gone Again"}, state="resolved"),
        anomaly({"event": "Still Pending"}, state="pending"),
        anomaly({"event": "Order Completed", "source": "web", "platform": "web"}, kind="spike"),
        anomaly({"from_event": "Checkout Started", "to_event": "Order Completed"}),
    ]
    assert unplanned_firing(anomalies, PLAN) == {
        ("(unplanned)", "", "", "volume"),
        ("(unplanned)", "ios", "ios", "volume"),
    }
    assert unplanned_firing([], PLAN) == set()
