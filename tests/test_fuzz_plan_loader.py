"""Runs the atheris (libFuzzer) harness of the plan loader, tests/fuzz/fuzz_plan_loader.py, for
a bounded number of inputs in a child process (libFuzzer exits its process when it is done or
on the first crash) and asserts that it found none.

Hypothesis fuzzing of the loader (random text, YAML structures, plan-shaped documents, bytes,
mutations of the example) lives in tests/test_plan_loader.py; this adds coverage guidance: the
fuzzer mutates the real plans towards code paths not reached yet.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "fuzz" / "fuzz_plan_loader.py"
RUNS = 8000


def test_atheris_finds_no_crash_in_the_plan_loader(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris)")
    sys.path.insert(0, str(HARNESS.parent))
    try:
        from fuzz_plan_loader import prepare_corpus
    finally:
        sys.path.remove(str(HARNESS.parent))
    corpus = tmp_path / "corpus"
    prepare_corpus(corpus)
    proc = subprocess.run(
        [sys.executable, str(HARNESS), f"-runs={RUNS}", "-seed=7", "-max_len=8192",
         f"-dict={tmp_path / 'plan.dict'}", f"-artifact_prefix={tmp_path}/", str(corpus)],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )  # fmt: skip
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert proc.returncode == 0 and not crashes, (crashes, proc.stderr[-3000:])
    assert f"Done {RUNS} runs" in proc.stderr
    # the seeds loaded and the fuzzer grew the corpus beyond them: it was really exploring
    assert len(list(corpus.iterdir())) > 7


def test_the_harness_accepts_the_seed_plans_and_refuses_garbage_cleanly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The target itself, without libFuzzer: seeds pass, hostile bytes raise only PlanError,
    and any other exception of the loader does escape the target (libFuzzer's crash)."""
    sys.path.insert(0, str(HARNESS.parent))
    try:
        from fuzz_plan_loader import SEED_PLANS, one_input
    finally:
        sys.path.remove(str(HARNESS.parent))
    for path in SEED_PLANS:
        one_input(path.read_bytes())
    for data in (b"", b"\xff\xfe", b"plan: [", b"&a [*a]", b"a: !!python/object:os.system x",
                 b"\xef\xbb\xbfplan: p\nversion: 1\nevents: {}", b"- " * 5000):  # fmt: skip
        one_input(data)
    from tracking_plan import loader

    def broken(text: str, path: str = "<string>") -> None:
        raise KeyError("a loader bug")

    monkeypatch.setattr(loader, "parse_plan", broken)
    with pytest.raises(KeyError):
        one_input(b"plan: x\n")
