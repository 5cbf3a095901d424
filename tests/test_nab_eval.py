"""NAB scoring rule (bench/nab_scoring.py) and the evaluator's freeze-and-apply thresholds path."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


nab = load_module("nab_scoring")
N, WINDOWS = 2000, [(800, 899), (1500, 1599)]


def labelled(hits: list[int], category: str = "c") -> list:
    scores = np.zeros(N)
    scores[hits] = 1.0
    return [nab.LabelledFile(f"{category}/f.csv", scores, WINDOWS)]


def test_scores_are_normalised_between_null_and_perfect():
    assert nab.evaluate(labelled([]))["score"] == pytest.approx(0.0)
    assert nab.evaluate(labelled([800, 1500]))["score"] == pytest.approx(100.0)
    late = nab.evaluate(labelled([890, 1590]))["score"]
    early = nab.evaluate(labelled([810, 1510]))["score"]
    assert 0.0 < late < early < 100.0
    assert nab.evaluate(labelled([800, 850, 1500]))["score"] == pytest.approx(100.0)  # 2nd free


@pytest.mark.parametrize("profile", ["standard", "reward_low_FP", "reward_low_FN"])
def test_false_positives_cost_the_profile_weight_less_right_after_a_window(profile):
    weights = nab.PROFILES[profile]
    with_fp = nab.score_at(labelled([800, 1500, 400]), 0.5, weights)
    span = with_fp["perfect"] - with_fp["null"]
    assert with_fp["score"] == pytest.approx(100.0 * (span - weights["fp"]) / span)
    near = nab.score_at(labelled([800, 1500, 905]), 0.5, weights)["raw"]
    far = nab.score_at(labelled([800, 1500, 1200]), 0.5, weights)["raw"]
    assert weights["tp"] * 2 > near > far > weights["tp"] * 2 - weights["fp"] - 1e-12
    missed = nab.score_at(labelled([800]), 0.5, weights)["raw"]
    assert missed == pytest.approx(weights["tp"] - weights["fn"])


def test_probation_is_ignored_and_one_threshold_is_fitted():
    assert nab.evaluate(labelled([10, 800, 1500]))["score"] == pytest.approx(100.0)
    scores = np.zeros(N)
    scores[[810, 1510]] = 0.9
    scores[1200] = 0.5  # a false positive below the windows' hits: the threshold skips it
    result = nab.evaluate([nab.LabelledFile("c/f.csv", scores, WINDOWS)])
    assert result["threshold"] == pytest.approx(0.9) and result["false_rows"] == 0


def test_leave_one_category_out_needs_two_categories():
    assert nab.leave_one_category_out(labelled([800]), nab.STANDARD) is None
    both = labelled([800, 1500], "a") + labelled([800, 1500], "b")
    assert nab.leave_one_category_out(both, nab.STANDARD)["score"] == pytest.approx(100.0)


def fake_nab(root: Path, seed: int) -> None:
    """Two categories, two files each: noise with a spike in the middle of a labelled window."""
    rng = np.random.default_rng(seed)
    labels = {}
    for category in ("alpha", "beta"):
        (root / "data" / category).mkdir(parents=True)
        for k in range(2):
            x = 10 + rng.standard_normal(1500)
            x[1100] += 40
            stamps = [
                f"2020-03-0{1 + i // 288} {i % 288 // 12:02d}:{i % 12 * 5:02d}:00"
                for i in range(1500)
            ]
            rows = "".join(f"{t},{v:.4f}\n" for t, v in zip(stamps, x, strict=True))
            (root / "data" / category / f"f{k}.csv").write_text("timestamp,value\n" + rows)
            labels[f"{category}/f{k}.csv"] = [[stamps[1050] + ".000000", stamps[1150] + ".000000"]]
    labels["beta/absent.csv"] = []
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(labels))


def run_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "nab_eval.py"), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_thresholds_are_frozen_then_applied_to_another_folder(tmp_path):
    fake_nab(tmp_path / "public", 1)
    fake_nab(tmp_path / "unseen", 2)
    frozen = tmp_path / "thresholds.json"
    fitted = run_eval("--nab", str(tmp_path / "public"), "--save-thresholds", str(frozen))
    assert fitted.returncode == 0, fitted.stderr
    assert "leave-one-category-out" in fitted.stdout and "causal check: passed" in fitted.stdout
    assert "rows/s" in fitted.stdout and "z-score" in fitted.stdout
    saved = json.loads(frozen.read_text())
    assert set(saved["thresholds"]["trackwatch detect"]) == set(nab.PROFILES)
    applied = run_eval("--nab", str(tmp_path / "unseen"), "--thresholds", str(frozen))
    assert applied.returncode == 0, applied.stderr
    assert "frozen thresholds" in applied.stdout and "windows found" in applied.stdout
    frozen.write_text("{}")
    broken = run_eval("--nab", str(tmp_path / "unseen"), "--thresholds", str(frozen))
    assert broken.returncode != 0 and "not a thresholds file" in broken.stderr
    missing = run_eval("--nab", str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "laid out like NAB" in missing.stderr
