"""scripts/setup.sh is idempotent: a second run installs nothing and prints nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAMP = ROOT / ".venv" / ".trackwatch-installed"


def test_a_second_setup_run_installs_and_prints_nothing() -> None:
    if not STAMP.exists() or Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("runs in the venv scripts/setup.sh made (./scripts/test.sh does)")
    before = STAMP.stat().st_mtime_ns
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    # no pip, no setuptools banner, no apt, no npm; a note that Node.js is missing may remain
    assert [line for line in lines if not line.startswith("setup: Node.js")] == []
    assert STAMP.stat().st_mtime_ns == before  # nothing was reinstalled
