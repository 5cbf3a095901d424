"""Generic univariate scorer: causal, comparable across series, one score per onset, seasonal,
clear errors on bad CSV input, irregular time accepted with a warning."""

from __future__ import annotations

import csv
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.univariate import (
    DetectInputError,
    UnivariateScorer,
    detect_csv,
    score_from_surprise,
    score_series,
)
from detectors.univariate.calibration import TailCalibrator
from detectors.univariate.onsets import Onsets
from detectors.univariate.seasonal import SeasonalContext
from detectors.univariate.sustained import SustainedSurprise

DAY = 288  # rows of 5 minutes
T0 = 1_700_000_000.0


def noise(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return 50 + 5 * rng.standard_normal(n)
    if kind == "heavy":
        return 1e6 + 3e4 * rng.standard_t(3, n)
    return rng.poisson(4, n).astype(float)


def minutes(n: int) -> np.ndarray:
    return T0 + 60.0 * np.arange(n)


def daily(seed: int, missing: int | None = None, days: int = 14) -> tuple[np.ndarray, np.ndarray]:
    """5-minute square wave: 20 at night, 80 from 08:00 to 18:00, noise 2; `missing`: a day
    whose jump never comes."""
    rng = np.random.default_rng(seed)
    n = days * DAY
    phase = np.arange(n) % DAY
    x = np.where((phase >= 96) & (phase < 216), 80.0, 20.0) + 2.0 * rng.standard_normal(n)
    if missing is not None:
        day = slice(missing * DAY + 96, missing * DAY + 216)
        x[day] = 20.0 + 2.0 * rng.standard_normal(120)
    return T0 + 300.0 * np.arange(n), x


# ------------------------------------------------------------------ causality, range, determinism


@given(
    values=st.lists(
        st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), min_size=1, max_size=400
    ),
    steps=st.lists(st.sampled_from([60.0, 60.0, 60.0, 0.0, -3600.0, 86_400.0]), max_size=400),
    cut=st.integers(min_value=1, max_value=400),
)
@settings(max_examples=60, deadline=None)
def test_scores_of_a_prefix_equal_the_full_runs(values, steps, cut):
    # time as it comes: repeats, steps back and gaps included
    ts = list(np.cumsum([T0, *(steps + [60.0] * len(values))[: len(values) - 1]]))
    full = score_series(ts, values, memory=300)
    cut = min(cut, len(values))
    assert score_series(ts[:cut], values[:cut], memory=300) == full[:cut]
    assert all(0.0 <= s < 1.0 for s in full)


def test_later_rows_do_not_change_earlier_scores_on_real_shapes():
    ts, x = daily(1)
    y = x.copy()
    y[3000:] += 50  # whatever comes later...
    assert score_series(ts, x)[:3000] == score_series(ts, y)[:3000]  # ...the past is the same
    assert score_series(ts, x) == score_series(ts, x)  # and runs are deterministic


def test_streaming_equals_batch_and_rejects_non_finite():
    x = noise("counts", 600, 5)
    scorer = UnivariateScorer()
    assert [scorer.update(T0 + i, v) for i, v in enumerate(x)] == score_series(
        T0 + np.arange(600), x
    )
    with pytest.raises(ValueError):
        scorer.update(T0 + 601, float("nan"))
    with pytest.raises(ValueError):
        UnivariateScorer(memory=10)


def test_invariant_to_units_and_offset():
    x = noise("normal", 2000, 3)
    x[1500] += 80
    a = score_series(minutes(2000), x)
    b = score_series(minutes(2000), 1000.0 * x - 7.0)
    assert np.allclose(a, b, atol=1e-6)


# ------------------------------------------------------------------ one scale, never saturating


@pytest.mark.parametrize("kind", ["normal", "heavy", "counts"])
def test_noise_rarely_scores_high_whatever_its_shape(kind):
    scores = np.array(score_series(minutes(5000), noise(kind, 5000, 2)))[500:]
    assert (scores >= 0.5).mean() < 0.005  # the same rarity on every kind of noise
    assert (scores > 0.0).mean() < 0.05  # most rows say nothing: one score per onset


def test_scores_never_saturate_a_bigger_spike_scores_higher():
    base = noise("normal", 3200, 7)
    scores = []
    for sigmas in [8, 16, 64, 1e3, 1e6, 1e12]:  # the same history, a bigger and bigger spike
        x = base.copy()
        x[3000] += 5 * sigmas
        scores.append(score_series(minutes(3200), x)[3000])
    assert np.all(np.diff(scores) > 0.0), scores  # no plateau, however extreme
    assert scores[0] >= 0.5 and scores[-1] < 1.0


def test_score_map_is_continuous_and_below_one():
    surprises = [0.0, 0.5, 1.0, 3.0, 9.0, 99.0, 1e6]
    scores = [score_from_surprise(s) for s in surprises]
    assert scores[:5] == pytest.approx([0.0, 1 / 3, 0.5, 0.75, 0.9])
    assert all(a < b < 1.0 for a, b in itertools.pairwise(scores))


def test_calibrator_is_a_rank_inside_the_range_and_a_slow_tail_beyond():
    cal = TailCalibrator(memory=1000, min_history=50)
    for v in range(1000):
        cal.learn(float(v % 100))  # each of 0..99 ten times
    assert cal.upper(50.0) == pytest.approx(math.log10(1001 / 501))  # 500 values are ≥ 50
    assert cal.upper(200.0) > cal.upper(120.0) > cal.upper(99.0)  # beyond the max: continues
    assert cal.upper(1e12) > cal.upper(1e9)  # never a plateau...
    assert cal.upper(1e12) - cal.upper(1e9) <= cal.cap * math.log(1000) + 1e-6  # ...logarithmic
    assert cal.lower(-1.0) == pytest.approx(cal.upper(100.0), rel=0.2)  # symmetric tails
    assert TailCalibrator(min_history=50).upper(1e9) == 0.0  # no evidence yet


@pytest.mark.parametrize("kind", ["normal", "heavy", "counts"])
def test_spike_scores_high(kind):
    x = noise(kind, 1500, 4)
    spread = np.quantile(x, 0.99) - np.quantile(x, 0.01)
    x[1200] = np.median(x) + 3 * spread
    scores = score_series(minutes(1500), x)
    assert scores[1200] >= 0.6
    assert max(scores[1100:1200]) < scores[1200]


# ------------------------------------------------------------------ one score per onset


def test_refractory_one_event_one_high_score():
    x = noise("normal", 3000, 6)
    x[2000:] += 30  # a level shift that stays
    scores = np.array(score_series(minutes(3000), x))
    spoke = np.flatnonzero(scores[2000:2064] > 0.0)
    assert 1 <= spoke.size <= 2 and scores[2000:2064].max() >= 0.6  # not a run of 64 rows
    assert (scores[2064:] >= 0.5).sum() <= 2  # the new level is not news for long


def test_onsets_rule():
    onsets = Onsets(refractory=5, margin=1.0, memory=1000)
    said = [onsets.update(s) for s in [4.0, 4.5, 5.0, 3.0, 4.9, 0.0]]
    assert said == [4.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # a run of high rows speaks once
    assert onsets.update(6.5) == 6.5  # ten times rarer than the onset: a new onset
    for _ in range(5):
        onsets.update(0.0)
    assert onsets.update(4.0) == pytest.approx(4.0 - math.log10(3))  # 2 earlier onsets ≥ 4
    creeping = Onsets(refractory=2, margin=1.0)
    assert creeping.update(3.0) == 3.0
    creeping.update(0.0), creeping.update(0.0)
    # a little above the earlier onset, within the margin: the same size, discounted as a repeat
    assert creeping.update(3.5) == pytest.approx(3.5 - math.log10(2))
    creeping.update(0.0), creeping.update(0.0)
    assert creeping.update(5.0) == 5.0  # more than a decade above every earlier one: news
    quiet = Onsets(refractory=3, margin=1.0)
    assert quiet.update(0.9) == 0.0 and quiet.update(1.5) == 1.5  # below the margin: silence


def test_onsets_the_rows_sharing_a_pattern_must_be_as_rare_as_two_events():
    onsets = Onsets(refractory=10, margin=1.0)  # overlap: the 3 rows after one that spoke
    assert onsets.update(4.0) == 4.0
    assert onsets.update(6.5) == 0.0  # a decade and more above, but not p ≤ p_before²
    assert onsets.update(8.5) == 8.5  # rarer than the first row's event seen twice over
    later = Onsets(refractory=10, margin=1.0)
    assert later.update(4.0) == 4.0
    assert [later.update(0.0) for _ in range(3)] == [0.0] * 3
    assert later.update(5.5) == 5.5  # past the overlap a decade is enough: a stir never masks
    plain = Onsets(refractory=10, margin=1.0, overlap=0)
    assert plain.update(4.0) == 4.0 and plain.update(5.5) == 5.5
    for bad in ({"power": 0.5}, {"overlap": -1}):
        with pytest.raises(ValueError):
            Onsets(**bad)


def test_sustained_surprise_a_run_counts_a_single_row_does_not():
    rng = np.random.default_rng(4)
    run = SustainedSurprise(span=16, memory=2000)
    usual = -np.log10(rng.uniform(size=2000))  # the surprises of calibrated, uneventful rows
    said = [run.update(s) for s in usual]
    assert said[: 4 * 16 + 15] == [0.0] * (4 * 16 + 15)  # ranked only once 4 spans of means kept
    assert max(said[1000:]) < 3.5
    single = [run.update(s) for s in [6.0, *([0.3] * 15)]]  # one rare row in a quiet span
    assert max(single) < 6.0 - 1.0  # never a decade over the row itself: it cannot speak over it
    sustained = [run.update(1.5) for _ in range(16)]  # every row only 10^-1.5: a run of them
    assert sustained[-1] >= 4.0


@pytest.mark.parametrize("seed", range(8))
def test_a_run_of_slightly_novel_rows_scores_high(seed):
    rng = np.random.default_rng(seed)
    x = 50 + 5 * rng.standard_normal(3000)
    x[2000:2400] = 50 + 5 * 1.25 * rng.standard_normal(400)  # noise a quarter wider, for long
    # no single row need stand out; the run does (without it, 3 of these 8 seeds stay under 0.6)
    assert max(score_series(minutes(3000), x)[2000:2400]) >= 0.6


# ------------------------------------------------------------------ seasonal structure


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_missing_daily_jump_scores_high_and_its_return_does_not(seed):
    ts, x = daily(seed, missing=10)
    scores = np.array(score_series(ts, x))
    per_day = [scores[d * DAY : (d + 1) * DAY].max() for d in range(14)]
    ordinary = per_day[3:10]
    assert per_day[10] >= 0.8 and per_day[10] > max(ordinary) + 0.1  # the missing jump
    assert per_day[11] <= max(ordinary) + 0.02  # its return is an ordinary day
    missing_day = scores[10 * DAY + 96 : 10 * DAY + 216]
    assert missing_day.argmax() < 16  # found when the jump should have come


def test_seasonal_view_is_off_without_a_period_and_on_with_one():
    view = SeasonalContext()
    x = noise("normal", 6 * DAY, 8)
    for i, v in enumerate(x):
        view.score_one(T0 + 300.0 * i, v)
        view.learn_one(T0 + 300.0 * i, v)
    assert not view.active  # noise: half a day ago predicts as well as a day ago
    ts, y = daily(4, days=6)
    seasonal = SeasonalContext()
    for t, v in zip(ts, y, strict=True):
        seasonal.score_one(t, v)
        seasonal.learn_one(t, v)
    assert seasonal.active


# ------------------------------------------------------------------ awkward series


def test_mostly_zero_series_does_not_fire_on_every_burst():
    rng = np.random.default_rng(3)
    n = 6000
    x = np.where(rng.random(n) < 0.07, rng.gamma(2.0, 50.0, n), 0.0)  # 93 % zeros
    scores = np.array(score_series(minutes(n), x))
    bursts = np.flatnonzero(x[1000:] > 0) + 1000
    assert (scores[bursts] >= 0.5).mean() < 0.1
    x[5000] = 20 * x.max()  # a burst like none before still stands out
    assert score_series(minutes(n), x)[5000] >= 0.8


@pytest.mark.parametrize(
    "values",
    [
        np.full(500, 45.0),
        np.tile([0.0, 0.0, 1.0], 200),
        np.random.default_rng(9).integers(0, 3, 600).astype(float),
    ],
)
def test_flat_quantised_and_periodic_series_stay_quiet(values):
    scores = np.array(score_series(minutes(len(values)), values))
    assert (scores[100:] >= 0.5).sum() == 0


# ------------------------------------------------------------------ CSV in, CSV out


def write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_detect_csv_round_trip(tmp_path):
    x = noise("normal", 400, 6)
    x[350] = 500
    rows = "\n".join(f"2024-01-01T{i // 60:02d}:{i % 60:02d}:00Z,{v},é{i}" for i, v in enumerate(x))
    src = write(tmp_path / "in.csv", "timestamp,value,note\n" + rows + "\n")
    assert detect_csv(src, tmp_path / "out.csv") == 400
    with open(tmp_path / "out.csv", encoding="utf-8") as fh:
        out = list(csv.DictReader(fh))
    assert [r["note"] for r in out] == [f"é{i}" for i in range(400)]
    scores = [float(r["anomaly_score"]) for r in out]
    assert scores[350] == max(scores) >= 0.6


def test_detect_csv_accepts_irregular_time_with_warnings(tmp_path, capsys):
    # 5-minute rows; a daylight-saving step back (01:55 → 01:00), a repeat and a 6-hour outage
    stamps = [T0 + 300.0 * i for i in range(300)]
    stamps[200:] = [t - 3600.0 for t in stamps[200:]]
    stamps[250] = stamps[249]
    stamps[280:] = [t + 6 * 3600.0 for t in stamps[280:]]
    text = "timestamp,value\n" + "".join(f"{t:.0f},{i % 7}\n" for i, t in enumerate(stamps))
    src = write(tmp_path / "dst.csv", text)
    assert detect_csv(src, tmp_path / "out.csv") == 300
    err = capsys.readouterr().err.splitlines()
    assert any("go backwards" in line and "line 202" in line for line in err), err
    assert any("repeat" in line and "line 252" in line for line in err), err
    assert any("gap" in line and "line 282" in line for line in err), err
    assert all(line.startswith("warning: ") for line in err)
    messages: list[str] = []
    detect_csv(src, tmp_path / "out2.csv", warn=messages.append)
    assert len(messages) == 3 and capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "missing column"),
        ("time,val\n1,2\n", "missing column(s) timestamp, value"),
        ("timestamp,value\n", "no data rows"),
        ("timestamp,value\n1,2\n2,abc\n", "line 3: value 'abc' is not a number"),
        ("timestamp,value\n1,2\n2,inf\n", "line 3: value must be finite"),
        ("timestamp,value\nyesterday,2\n", "line 2: timestamp 'yesterday'"),
        ("timestamp,value\n1e400,2\n", "line 2: timestamp must be finite"),
        ("timestamp,value\n1,2,3\n", "line 2: expected 2 fields"),
        ("timestamp,value\n1\n", "line 2: expected 2 fields"),
    ],
)
def test_detect_csv_bad_input_names_the_problem(tmp_path, text, message):
    src = write(tmp_path / "bad.csv", text)
    with pytest.raises(DetectInputError) as err:
        detect_csv(src, tmp_path / "out.csv")
    assert message in str(err.value) and "bad.csv" in str(err.value)
    assert "\n" not in str(err.value)


def test_detect_csv_missing_and_binary_files(tmp_path):
    with pytest.raises(DetectInputError, match="cannot read"):
        detect_csv(tmp_path / "nope.csv", tmp_path / "out.csv")
    (tmp_path / "bin.csv").write_bytes(b"timestamp,value\n\xff\xfe\x00,1\n")
    with pytest.raises(DetectInputError, match="UTF-8"):
        detect_csv(tmp_path / "bin.csv", tmp_path / "out.csv")


def test_detect_csv_hostile_rows(tmp_path):
    nul = write(tmp_path / "nul.csv", "timestamp,value\n1,2\n2,\x003\n")
    with pytest.raises(DetectInputError, match="line"):
        detect_csv(nul, tmp_path / "out.csv")
    huge = write(tmp_path / "huge.csv", "timestamp,value\n1," + "9" * 200_000 + "\n")
    with pytest.raises(DetectInputError, match="line 2"):
        detect_csv(huge, tmp_path / "out.csv")
    for text in ("1,nan", "1,1e400", "1,-inf"):
        src = write(tmp_path / "nf.csv", "timestamp,value\n" + text + "\n")
        with pytest.raises(DetectInputError, match="finite"):
            detect_csv(src, tmp_path / "out.csv")
    odd = write(tmp_path / "odd.csv", "\ufefftimestamp , value \n1,2\n1,3\n")  # BOM, spaces, ties
    assert detect_csv(odd, tmp_path / "out.csv", warn=lambda m: None) == 2
