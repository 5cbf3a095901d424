"""`trackwatch detect`, `anomalies` and `backtest` from the command line, with bad input too."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.cli.app import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def alert(id_="a1", state="firing", kind="spike", **kw):
    base = {"id": id_, "kind": kind, "series": {"event": "Order Completed", "source": "web"},
            "state": state, "started_at": "2026-11-02T10:00:00Z",
            "updated_at": "2026-11-02T10:03:00Z", "ended_at": None, "observed": 1240.0,
            "expected": 590.0, "lower": 400.0, "upper": 800.0, "score": 0.9,
            "explanation": "Order Completed on web is 2.1× higher than expected.",
            "attribution": []}  # fmt: skip
    base.update(kw)
    return base


# ---------------------------------------------------------------------------------- detect


def test_detect_scores_a_csv(tmp_path: Path):
    src = tmp_path / "in.csv"
    rows = [f"{1_700_000_000 + 60 * i},{10 + (i % 5)}" for i in range(300)]
    rows[250] = f"{1_700_000_000 + 60 * 250},500"
    src.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out.csv"
    result = invoke("detect", "--input", src, "--output", out)
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "timestamp,value,anomaly_score" and len(lines) == 301
    scores = [float(line.split(",")[2]) for line in lines[1:]]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[250] == max(scores) >= 0.5
    assert sum(score >= 0.5 for score in scores) == 1  # one event, one high score


def test_detect_accepts_a_daylight_saving_step_back_with_a_warning(tmp_path: Path):
    # 01:00-01:55 twice (the clock steps back an hour), a repeated row, then a 3-hour outage
    stamps = [f"2024-11-03 00:{m:02d}:00" for m in range(0, 60, 5)]
    stamps += [f"2024-11-03 01:{m:02d}:00" for m in range(0, 60, 5)] * 2
    stamps += ["2024-11-03 01:55:00"] + [f"2024-11-03 05:{m:02d}:00" for m in range(0, 60, 5)]
    src = tmp_path / "dst.csv"
    src.write_text("timestamp,value\n" + "".join(f"{t},{i % 5}\n" for i, t in enumerate(stamps)))
    out = tmp_path / "out.csv"
    result = invoke("detect", "--input", src, "--output", out)
    assert result.exit_code == 0, result.output
    assert "go backwards" in result.output and "line 26" in result.output  # the step back
    assert "repeat" in result.output and "gap" in result.output
    assert "error" not in result.output and "Traceback" not in result.output
    lines = out.read_text().splitlines()
    assert len(lines) == len(stamps) + 1
    assert [line.split(",")[0] for line in lines[1:]] == stamps  # file order kept


def test_detect_scores_nab_machine_temperature_that_steps_back(tmp_path: Path):
    src = ROOT.parent / "shared" / "nab" / "data" / "realKnownCause"
    src = src / "machine_temperature_system_failure.csv"
    if not src.is_file():
        pytest.skip("NAB public data not on this machine")
    result = invoke("detect", "--input", src, "--output", tmp_path / "out.csv")
    assert result.exit_code == 0, result.output
    assert "go backwards" in result.output and "scored 22,695 rows" in result.output


@pytest.mark.parametrize(
    "content",
    ["", "timestamp,value\n", "timestamp,value\n1,abc\n", "nope\n1,2\n", "timestamp,value\n1,nan\n",
     "timestamp,value\n\x00\x01,\U0001f389\n"],
)  # fmt: skip
def test_detect_rejects_bad_csv_without_traceback(tmp_path: Path, content: str):
    src = tmp_path / "in.csv"
    src.write_text(content)
    result = invoke("detect", "--input", src, "--output", tmp_path / "out.csv")
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output


def test_detect_missing_file_and_same_output(tmp_path: Path):
    result = invoke("detect", "--input", tmp_path / "missing.csv", "--output", tmp_path / "o.csv")
    assert result.exit_code == 2 and "missing.csv" in result.output
    src = tmp_path / "in.csv"
    src.write_text("timestamp,value\n1,2\n")
    result = invoke("detect", "--input", src, "--output", src)
    assert result.exit_code == 2 and "must differ" in result.output
    assert src.read_text() == "timestamp,value\n1,2\n"


# ---------------------------------------------------------------------------------- anomalies


def test_anomalies_from_file_latest_state_per_id(tmp_path: Path):
    path = tmp_path / "alerts.jsonl"
    lines = [alert("a1"), alert("a2", kind="drop"), alert("a2", state="resolved", kind="drop"),
             alert("a3", series={"event": "Ünïcode 🎉\u202e"})]  # fmt: skip
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    result = invoke("anomalies", "--file", path)
    assert result.exit_code == 0, result.output
    assert "2 anomalies (firing)" in result.output and "drop" not in result.output
    result = invoke("anomalies", "--file", path, "--state", "all")
    assert "3 anomalies (all)" in result.output and "resolved" in result.output


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json\n", ":1: not a JSON line"),
        ('{"a": 1}\n', "no id/kind"),
        ("[1, 2]\n", "expected a list"),
    ],
)
def test_anomalies_bad_file(tmp_path: Path, content: str, fragment: str):
    path = tmp_path / "alerts.jsonl"
    path.write_text(content)
    result = invoke("anomalies", "--file", path)
    assert result.exit_code == 2 and fragment in result.output


def test_anomalies_argument_errors(tmp_path: Path):
    result = invoke("anomalies", "--file", tmp_path / "nope.jsonl")
    assert result.exit_code == 2 and "cannot read" in result.output
    result = invoke("anomalies", "--file", tmp_path / "x", "--url", "http://127.0.0.1:1/")
    assert result.exit_code == 2 and "not both" in result.output
    result = invoke("anomalies", "--url", "file:///etc/passwd")
    assert result.exit_code == 2 and "must start with http" in result.output
    result = invoke("anomalies", "--url", "http://127.0.0.1:1/api/anomalies")
    assert result.exit_code == 2 and "cannot reach" in result.output
    result = invoke("anomalies", "--state", "sometimes")
    assert result.exit_code != 0


class _Handler(BaseHTTPRequestHandler):
    body = b""
    status = 200

    def do_GET(self):
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


def test_anomalies_from_the_worker_api(server):
    url = f"http://127.0.0.1:{server.server_port}/api/anomalies"
    _Handler.status, _Handler.body = 200, json.dumps({"anomalies": [alert()]}).encode()
    result = invoke("anomalies", "--url", url)
    assert result.exit_code == 0 and "1 anomalies" in result.output and "spike" in result.output
    _Handler.body = b"<html>oops</html>"
    result = invoke("anomalies", "--url", url)
    assert result.exit_code == 2 and "not JSON" in result.output
    _Handler.status, _Handler.body = 500, b"{}"
    result = invoke("anomalies", "--url", url)
    assert result.exit_code == 2 and "HTTP 500" in result.output


# ---------------------------------------------------------------------------------- backtest


def test_backtest_runs_end_to_end_on_a_small_simulation(tmp_path: Path):
    """One simulated day (before the schedule's first incident): the whole chain runs and the
    report is written; alerts in a clean day are false alerts and are counted as such."""
    schedule = tmp_path / "incidents.yaml"
    schedule.write_text(
        "incidents:\n  - name: bots\n    kind: spike\n    at: day 0 20:00\n    duration: 1h\n"
        "    event: Product Viewed\n    source: web\n    factor: 3\n"
    )
    result = invoke("backtest", "--days", "1", "--users-per-day", "300", "--seed", "3",
                    "--out-dir", tmp_path / "bt", "--plan", ROOT / "examples/ecommerce.yaml",
                    "--incidents", schedule)  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "bt/seed-3/summary.json").read_text())
    assert summary["incidents"] == 1 and summary["days"] == 1
    assert "recall" in result.output and "false alerts" in result.output
    assert (tmp_path / "bt/seed-3/bots.png").exists()
    assert (tmp_path / "bt/seed-3/alerts.jsonl").exists()


def test_backtest_bad_inputs(tmp_path: Path):
    result = invoke("backtest", "--plan", tmp_path / "nope.yaml", "--out-dir", tmp_path)
    assert result.exit_code == 2 and "plan file not found" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("incidents:\n  - name: x\n    kind: meteor\n    at: day 0 1:00\n"
                   "    duration: 1h\n")  # fmt: skip
    result = invoke("backtest", "--incidents", bad, "--days", "1", "--out-dir", tmp_path,
                    "--plan", ROOT / "examples/ecommerce.yaml")  # fmt: skip
    assert result.exit_code == 2 and "meteor" in result.output and "Traceback" not in result.output
