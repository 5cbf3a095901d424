"""The real outside parts the end-to-end tests drive (Node.js and the npm trackers of
tests/e2e/node, Debian's Chromium, Prometheus and Alertmanager), found or reported missing.

`scripts/setup.sh` installs every one of them. A developer machine without one skips the tests
that need it, with the reason; in CI (environment CI=true) a missing part fails the test instead,
so that a broken install can never pass as skipped tests.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "e2e" / "node"
SETUP = "run ./scripts/setup.sh"


def require(what: str, path: str | Path | None) -> str:
    """`path` (a file or a command name) resolved, or skip (fail in CI) naming `what` is absent."""
    found = None
    if path is not None:
        found = str(path) if Path(path).is_absolute() and Path(path).exists() else None
        found = found or shutil.which(str(path))
    if found is None:
        reason = f"{what} is not installed ({SETUP})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}: CI must run the end-to-end tests")
        pytest.skip(reason)
    return found


def node() -> str:
    """The `node` command, with tests/e2e/node's packages installed."""
    command = require("Node.js", "node")
    require(
        "the npm packages of tests/e2e/node (npm ci)",
        NODE_DIR / "node_modules" / ".package-lock.json",
    )
    return command


def chromium() -> str:
    return require("Chromium (Debian package chromium)", os.environ.get("CHROMIUM", "chromium"))


def prometheus() -> str:
    return require("Prometheus (Debian package prometheus)", "prometheus")


def alertmanager() -> str:
    return require(
        "Alertmanager (Debian package prometheus-alertmanager)", "prometheus-alertmanager"
    )
