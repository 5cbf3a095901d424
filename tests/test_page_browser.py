"""The marketers' page in a real browser: `trackwatch page` as a process (with a token) over a
small history, Debian's headless Chromium driven by playwright-core going through every view
(tests/e2e/node/page_views.mjs). Screenshots land in $TRACKWATCH_SCREENSHOTS (else a temporary
folder) to be looked at."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import history_support as hs
from tests.e2e_parts import NODE_DIR, chromium, node

TOKEN = "page-test-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path: Path):
    db = hs.build(tmp_path / "h.sqlite")
    port = free_port()
    cli = [sys.executable, "-c", "from streams.cli import main; main()"]
    command = [*cli, "page", "--db", str(db), "--port", str(port)]
    env = {**os.environ, "TRACKWATCH_PAGE_TOKEN": TOKEN}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/?token={TOKEN}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_every_view_in_chromium(served: str, tmp_path: Path) -> None:
    browser, node_bin = chromium(), node()
    shots = Path(os.environ.get("TRACKWATCH_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    request = {
        "chromium": browser,
        "url": served,
        "shots": str(shots),
        "explain": {
            "event": "Order Placed",
            "source": "storefront",
            "from": "2026-03-08T14:00",
            "to": "2026-03-08T16:00",
        },
    }
    done = subprocess.run(
        [node_bin, str(NODE_DIR / "page_views.mjs")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=NODE_DIR,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["pageErrors"] == [] and report["offsite"] == []
    assert not [line for line in report["console"] if line.startswith("error")]
    # anomalies: the alert's sentence
    assert any("sent twice" in text for text in report["anomalies"])
    # explorer: opened on the alert's series, the observed line over its expected band, the
    # doubled orders outside it; the funnel step by step
    chart = report["chart"]
    assert chart["event"] == "Order Placed" and chart["band"] == 1
    assert chart["observed"] > 20 and chart["outside"] >= 1
    assert any("Checkout Begun → Order Placed" in row for row in report["funnel"])
    # explain: the verdict, its paragraph first, then the evidence
    verdict = report["verdict"]
    assert verdict["badge"] == "tracking"
    assert verdict["paragraph"].startswith("This looks like a tracking problem")
    assert any("repeat a business key" in item for item in verdict["evidence"])
    assert report["fromAnomaly"]["badge"] == "tracking"
    for name in ("anomalies", "explorer", "explain"):
        assert (shots / f"{name}.png").stat().st_size > 10_000
