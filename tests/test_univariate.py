"""Generic univariate scorer: causal, comparable across series, clear errors on bad CSV input."""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.univariate import DetectInputError, UnivariateScorer, detect_csv, score_series


def series(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    if kind == "normal":
        return 50 + 5 * rng.standard_normal(n)
    if kind == "heavy":
        return 1e6 + 3e4 * rng.standard_t(3, n)
    if kind == "seasonal":
        return 10 + 3 * np.sin(2 * np.pi * t / 288) + rng.standard_normal(n) * 0.3
    return rng.poisson(4, n).astype(float)


@given(
    values=st.lists(
        st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), min_size=1, max_size=120
    ),
    cut=st.integers(min_value=1, max_value=120),
)
@settings(max_examples=100, deadline=None)
def test_scores_are_causal(values, cut):
    ts = list(range(len(values)))
    full = score_series(ts, values, window=50)
    cut = min(cut, len(values))
    assert score_series(ts[:cut], values[:cut], window=50) == full[:cut]
    assert all(0.0 <= s <= 1.0 for s in full)


def test_later_rows_do_not_change_earlier_scores_on_real_shapes():
    x = series("seasonal", 3000, 1)
    y = x.copy()
    y[2000:] += 50  # whatever comes later...
    a, b = score_series(range(3000), x), score_series(range(3000), y)
    assert a[:2000] == b[:2000]  # ...the past is scored the same


@pytest.mark.parametrize("kind", ["normal", "heavy", "seasonal", "counts"])
def test_false_alarm_rate_is_comparable_across_series(kind):
    scores = np.array(score_series(range(5000), series(kind, 5000, 2))[100:])
    assert (scores >= 0.5).mean() < 0.01  # p < 1e-3 is rare on every kind of noise
    assert (scores >= 0.2).mean() > 0.005  # and the score is not stuck at 0


def test_invariant_to_units_and_offset():
    x = series("normal", 2000, 3)
    a = score_series(range(2000), x)
    b = score_series(range(2000), 1000.0 * x - 7.0)
    assert np.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("kind", ["normal", "heavy", "seasonal", "counts"])
def test_spike_scores_high(kind):
    x = series(kind, 1500, 4)
    spread = np.quantile(x, 0.99) - np.quantile(x, 0.01)
    x[1200] = np.median(x) + 3 * spread
    scores = score_series(range(1500), x)
    assert scores[1200] >= 0.9
    assert max(scores[1100:1200]) < 0.9


# Not "seasonal": the scorer has no seasonal model, a shift smaller than the cycle is not found.
@pytest.mark.parametrize("kind", ["normal", "heavy", "counts"])
def test_level_shift_scores_high_within_a_few_points(kind):
    x = series(kind, 1500, 6)
    spread = np.quantile(x[:1000], 0.9) - np.quantile(x[:1000], 0.1)
    x[1000:] += spread  # a shift smaller than the usual range: single points are not alarming
    scores = score_series(range(1500), x)
    assert max(scores[1000:1010]) >= 0.67
    assert max(scores[900:1000]) < 0.6


def test_streaming_equals_batch_and_rejects_non_finite():
    x = series("counts", 300, 5)
    s = UnivariateScorer()
    assert [s.update(i, v) for i, v in enumerate(x)] == score_series(range(300), x)
    with pytest.raises(ValueError):
        s.update(301, float("nan"))
    with pytest.raises(ValueError):
        UnivariateScorer(window=5)


def write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_detect_csv_round_trip(tmp_path):
    x = series("normal", 200, 6)
    x[150] = 500
    rows = "\n".join(f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}Z,{v},é{i}" for i, v in enumerate(x))
    src = write(tmp_path / "in.csv", "timestamp,value,note\n" + rows + "\n")
    assert detect_csv(src, tmp_path / "out.csv") == 200
    with open(tmp_path / "out.csv", encoding="utf-8") as fh:
        out = list(csv.DictReader(fh))
    assert [r["note"] for r in out] == [f"é{i}" for i in range(200)]
    scores = [float(r["anomaly_score"]) for r in out]
    assert scores[150] == max(scores) >= 0.9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "missing column"),
        ("time,val\n1,2\n", "missing column(s) timestamp, value"),
        ("timestamp,value\n", "no data rows"),
        ("timestamp,value\n1,2\n2,abc\n", "line 3: value 'abc' is not a number"),
        ("timestamp,value\n1,2\n2,inf\n", "line 3: value must be finite"),
        ("timestamp,value\nyesterday,2\n", "line 2: timestamp 'yesterday'"),
        ("timestamp,value\n5,2\n4,2\n", "line 3: timestamp '4' goes backwards"),
        ("timestamp,value\n1,2,3\n", "line 2: expected 2 fields"),
        ("timestamp,value\n1\n", "line 2: expected 2 fields"),
    ],
)
def test_detect_csv_bad_input_names_the_problem(tmp_path, text, message):
    src = write(tmp_path / "bad.csv", text)
    with pytest.raises(DetectInputError, match=None) as err:
        detect_csv(src, tmp_path / "out.csv")
    assert message in str(err.value) and "bad.csv" in str(err.value)


def test_detect_csv_missing_and_binary_files(tmp_path):
    with pytest.raises(DetectInputError, match="cannot read"):
        detect_csv(tmp_path / "nope.csv", tmp_path / "out.csv")
    (tmp_path / "bin.csv").write_bytes(b"timestamp,value\n\xff\xfe\x00,1\n")
    with pytest.raises(DetectInputError, match="UTF-8"):
        detect_csv(tmp_path / "bin.csv", tmp_path / "out.csv")


def load_nab_eval():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "nab_eval.py"
    spec = importlib.util.spec_from_file_location("nab_eval", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_nab_scoring_is_normalised_between_null_and_perfect():
    nab = load_nab_eval()
    n = 2000
    windows = [(800, 899), (1500, 1599)]

    def labelled(hits: list[int]) -> list:
        scores = np.zeros(n)
        scores[hits] = 1.0
        return [nab.LabelledFile("f.csv", scores, windows)]

    assert nab.evaluate(labelled([]))["score"] == pytest.approx(0.0)
    assert nab.evaluate(labelled([800, 1500]))["score"] == pytest.approx(100.0)
    late = nab.evaluate(labelled([890, 1590]))["score"]
    early = nab.evaluate(labelled([810, 1510]))["score"]
    assert 0.0 < late < early < 100.0
    # False positives cost; one far from any window costs more than one just after a window.
    with_fp = nab.evaluate(labelled([800, 1500, 400]))
    span = with_fp["perfect"] - with_fp["null"]
    assert with_fp["score"] == pytest.approx(100.0 * (span - 0.11) / span)
    near = nab.prepare(labelled([])[0], nab.STANDARD).fp_cost
    start = labelled([])[0].probation
    assert near[905 - start] > near[1200 - start] > -0.11 - 1e-12
    assert near[400 - start] == pytest.approx(-0.11)
    # Detections in the probationary period are ignored.
    assert nab.evaluate(labelled([10, 800, 1500]))["score"] == pytest.approx(100.0)


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
    assert detect_csv(odd, tmp_path / "out.csv") == 2
