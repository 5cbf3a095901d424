"""The contract between per-series models and the detection engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class Assessment:
    """A model's view of one new observation, computed BEFORE the model learns it.

    `score` is in [0, 1] (1 = certainly anomalous), comparable across series and models.
    `direction` is +1 when observed is above the interval, -1 below, 0 inside.
    `learning` is True while the model has not seen enough data to judge (cold start):
    the engine must not alert on it then.
    `span_observed`/`span_expected`: what the score is about, the sums (counts; for rates,
    numerators and expected numerators) over the `span_windows` last windows that deviate
    most significantly (0 windows: no deviation, or a model that does not say);
    `span_weight`: for rates, the denominators over that span (the users behind it).
    """

    observed: float
    expected: float
    lower: float
    upper: float
    score: float
    direction: int
    learning: bool
    span_observed: float = 0.0
    span_expected: float = 0.0
    span_windows: int = 0
    span_weight: float = 0.0


class SeriesModel(Protocol):
    """An online model of one series. Memory is bounded, whatever the length of the series.

    It also says `learnable(expected, weight) -> (lower, upper)`: the range the engine clips a
    deviating window's observed value (a count, or a rate's numerator) to before teaching it
    (`VolumeModel.learnable`, `RateModel.learnable`).
    """

    def assess(self, ts: float, observed: float, weight: float = 1.0) -> Assessment:
        """Judge `observed` at window start `ts` (UTC epoch seconds), without learning it.

        `weight` is the sample size behind a rate (denominator of a conversion); 1 for counts.
        """
        ...

    def learn(self, ts: float, observed: float, weight: float = 1.0) -> None:
        """Update the model with an observation judged normal (or with a substitute for one)."""
        ...

    def to_state(self) -> dict:
        """A JSON-serialisable snapshot (for the Faust table that makes state survive restarts)."""
        ...
