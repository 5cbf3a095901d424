"""Anomaly score for any univariate series (`trackwatch detect`): causal, comparable, one per onset.

A score answers "how rare is what just happened, for this series?" on one scale for every series,
so that one threshold serves all of them. It is built in three steps, each in its own module:

1. Views (`novelty.PatternNovelty`, `seasonal.SeasonalContext`) each compute one statistic per row
   from the past only (`score_one`, then `learn_one`, river's convention):
   - pattern novelty: the distance from the last 4 values to the nearest earlier pattern (spikes,
     drops, new levels, new shapes; a burst or daily spike seen before is near something);
   - seasonal context, only while a daily or weekly pattern is present (found online: one period
     ago must predict much better than half a period ago): the residual from the median of the
     last three periods at this phase, averaged over 16 rows (a missing daily jump is an anomaly,
     its return the next day is not).
2. `calibration.TailCalibrator` turns each statistic into a surprise s = -log10(p), p being its
   rank among the view's own past values (with the +1 prior), continued beyond the past maximum
   and the 99th percentile by exponential tails with bounded extra decades. Nothing depends on the
   unit, offset, noise shape or quantisation of the series: a series that is mostly zero, bursty
   or drifting is compared with itself.
3. `sustained.SustainedSurprise` lets a run of rows each only somewhat rare speak (the mean row
   surprise over the refractory span, ranked against its own past); `onsets.Onsets` keeps one
   high row per event (a refractory rule) and discounts onsets the series keeps producing;
   `scorer.score_from_surprise` maps s to s / (s + 1) in [0, 1).

Why not more of river: its statistics are used where they fit (the moving errors that decide
whether a period is present are `river.stats.EWMean`), but river has no calibrated tail
probability with bounded memory (its `stats.Quantile`/`RollingQuantile` give a quantile, not the
rank of a value), no nearest-neighbour pattern search over a bounded history, and its anomaly
detectors (`HalfSpaceTrees`, `GaussianScorer`, `StandardAbsoluteDeviation`, `LocalOutlierFactor`)
return scores whose meaning differs from series to series, which is what a single threshold
cannot live with; `time_series.SNARIMAX`/`HoltWinters` need the season length up front and cost
much more per row than a phase-bin lookup.

Everything is deterministic and causal: a row's score depends on the rows before it only, so the
scores of a prefix equal the first scores of the full run.
"""

from detectors.univariate.csv_io import DetectInputError, detect_csv, time_warnings
from detectors.univariate.scorer import UnivariateScorer, score_from_surprise, score_series

__all__ = [
    "DetectInputError",
    "UnivariateScorer",
    "detect_csv",
    "score_from_surprise",
    "score_series",
    "time_warnings",
]
