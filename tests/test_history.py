"""The history store, `trackwatch history`/`explain`, and the page's JSON API (real SQLite
files, the real aiohttp server through its test client)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from typer.testing import CliRunner

from detectors.records import WindowRecord
from streams.cli.app import app
from streams.history import HistoryStore, load_files, record_history
from streams.page import make_app
from tests import history_support as hs

runner = CliRunner()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hs.build(tmp_path_factory.mktemp("history") / "h.sqlite")


def rec(start: float, count: int = 3, **kw) -> WindowRecord:
    labels = {"event": "Order Placed", "source": "storefront", "platform": "web"}
    return WindowRecord(labels, start, start + 60, count=count, distinct_users=count, **kw)


def test_a_revision_adds_to_its_window_and_a_resent_window_replaces_it(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "h.sqlite") as store:
        store.add_windows([rec(600.0, 3), rec(600.0, 3)])  # sent twice (a re-run): once
        store.add_windows([rec(600.0, 2, revision=True, violations=1)])
        row = store.db.execute("SELECT count, users, violations, late FROM windows").fetchone()
        hourly = store.db.execute("SELECT count FROM hourly").fetchone()
    assert row == (5, 3, 1, 2)
    assert hourly[0] == 8  # the hourly sums add every record: see the module's docstring


def test_retention_and_size_bound_prune_the_oldest(tmp_path: Path) -> None:
    day = 86400.0
    with HistoryStore(tmp_path / "h.sqlite", retention_days=2) as store:
        store.add_windows([rec(k * day) for k in range(5)])
        starts = [r[0] for r in store.db.execute("SELECT start FROM windows ORDER BY start")]
        assert starts == [int(2 * day), int(3 * day), int(4 * day)]
    with HistoryStore(tmp_path / "b.sqlite", max_bytes=1) as store:
        store.add_windows([rec(k * day + m * 60) for k in range(3) for m in range(50)])
        store.prune()
        days = {r[0] // int(day) for r in store.db.execute("SELECT start FROM windows")}
        assert days == {2}  # never the last day


def test_alerts_keep_their_last_state_and_whether_they_fired(tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "h.sqlite") as store:
        firing = {**hs.ALERT, "state": "firing", "ended_at": None}
        store.add_alerts([{**firing, "state": "pending"}, firing, hs.ALERT])
        assert store.db.execute("SELECT state, fired FROM alerts").fetchall() == [("resolved", 1)]


def test_the_service_hook_logs_instead_of_raising(tmp_path: Path, caplog) -> None:
    store = HistoryStore(tmp_path / "h.sqlite")
    store.close()  # a closed connection: every write fails
    record_history(store, [rec(0.0)], [hs.ALERT])
    assert "not written" in caplog.text


def test_load_skips_unreadable_lines_and_cli_reports(tmp_path: Path) -> None:
    windows = tmp_path / "w.jsonl"
    lines = [orjson.dumps(rec(60.0 * i).to_dict()) for i in range(10)]
    windows.write_bytes(b"\n".join([*lines, b"{not json", b'{"series": 1}', "ünï".encode()]))
    alerts = tmp_path / "a.jsonl"
    alerts.write_bytes(orjson.dumps(hs.ALERT) + b"\n[1, 2]\n")
    with HistoryStore(tmp_path / "h.sqlite") as store:
        stats = load_files(store, windows, alerts)
    assert (stats.windows, stats.alerts, stats.skipped) == (10, 1, 4)
    result = runner.invoke(
        app,
        [
            "history",
            "load",
            "--db",
            str(tmp_path / "c.sqlite"),
            "--windows",
            str(windows),
            "--alerts",
            str(alerts),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "10 window records, 1 alert changes" in result.output
    assert "4 unreadable lines skipped" in result.output
    info = runner.invoke(app, ["history", "info", "--db", str(tmp_path / "c.sqlite")])
    assert orjson.loads(info.output)["windows"] == 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["history", "load", "--db", "/nonexistent/dir/h.sqlite"], "does not exist"),
        (["history", "load", "--windows", "/nonexistent.jsonl"], "no such file"),
        (
            [
                "explain",
                "--db",
                "/nonexistent.sqlite",
                "--from",
                "2026-03-01",
                "--to",
                "2026-03-02",
            ],
            "no such history file",
        ),
        (["explain", "--event", "x"], "give the period"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_file_that_is_not_a_history_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    result = runner.invoke(app, ["history", "info", "--db", str(bad)])
    assert result.exit_code != 0 and "not a usable history file" in result.output


def test_explain_cli_on_the_double_firing(history: Path) -> None:
    args = [
        "explain",
        "--db",
        str(history),
        "--event",
        "Order Placed",
        "--source",
        "storefront",
        "--from",
        "2026-03-08T14:00Z",
        "--to",
        "2026-03-08T16:00Z",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Verdict: TRACKING" in result.output
    assert "repeat a business key" in result.output
    data = orjson.loads(runner.invoke(app, [*args, "--json"]).output)
    assert data["verdict"] == "tracking" and data["alerts"][0]["id"] == hs.ALERT["id"]
    bad = runner.invoke(app, [*args[:-4], "--from", "yesterday", "--to", "2026-03-08T16:00Z"])
    assert bad.exit_code != 0 and "not a time" in bad.output


# ------------------------------------------------------------------------ the page's API


Request = tuple[str, str, dict, dict]  # method, path, query, headers


def fetch(history: Path, requests: list[Request], token: str | None = None) -> list[tuple]:
    """(status, content type, body) of each request to the page's real server."""

    async def run() -> list[tuple]:
        c = TestClient(TestServer(make_app(history, token)))
        await c.start_server()
        out = []
        try:
            for method, path, query, headers in requests:
                r = await c.request(method, path, params=query, headers=headers, data=b"")
                out.append((r.status, r.content_type, await r.read()))
        finally:
            await c.close()
        return out

    return asyncio.run(run())


def get(history: Path, path: str, **query: str) -> tuple[int, object]:
    status, kind, body = fetch(history, [("GET", path, query, {})])[0]
    return status, orjson.loads(body) if kind == "application/json" else body


def test_api_answers(history: Path) -> None:
    _, dims = get(history, "/api/dimensions")
    assert "Order Placed" in dims["events"] and dims["funnels"] == ["purchase"]
    _, anomalies = get(history, "/api/anomalies", days="2")
    assert [a["id"] for a in anomalies["anomalies"]] == [hs.ALERT["id"]]
    q = {
        "event": "Order Placed",
        "source": "storefront",
        "from": "2026-03-08T10:00Z",
        "to": "2026-03-08T20:00Z",
    }
    _, series = get(history, "/api/series", **q)
    inside = [p for p in series["points"] if hs.INCIDENT[0] <= p[0] < hs.INCIDENT[1]]
    outside = [p for p in series["points"] if p[0] < hs.INCIDENT[0] - 3600]
    assert sum(p[1] for p in inside) > 1.6 * sum(p[2] for p in inside)  # doubled
    assert 0.6 < sum(p[1] for p in outside) / sum(p[2] for p in outside) < 1.4  # as usual
    # every event over two days (the per-source hourly sums) = the sum of each event's
    days = {"from": "2026-03-07T00:00Z", "to": "2026-03-09T00:00Z", "source": "storefront"}
    _, every = get(history, "/api/series", **days)
    each = [get(history, "/api/series", **days, event=e)[1] for e in hs.PER_MINUTE]
    assert every["bucket"] == 3600 and every["points"]
    for i, point in enumerate(every["points"]):
        assert point[1] == sum(s["points"][i][1] for s in each)
        assert point[2] == pytest.approx(sum(s["points"][i][2] for s in each), abs=0.05)
    _, funnel = get(history, "/api/funnel", **q, funnel="purchase")
    assert funnel["steps"][0]["from"] == "Checkout Begun"
    q.update({"from": "2026-03-08T14:00Z", "to": "2026-03-08T16:00Z"})
    _, verdict = get(history, "/api/explain", **q)
    assert verdict["verdict"] == "tracking"
    status, page = get(history, "/")
    assert status == 200 and b"Explain this period" in page
    status, kind, _ = fetch(history, [("GET", "/assets/page.js", {}, {})])[0]
    assert status == 200 and kind == "text/javascript"


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/api/series", {"from": "yesterday"}, 400),
        ("/api/series", {"from": "2026-03-08T10:00Z", "to": "2026-03-01T10:00Z"}, 400),
        ("/api/series", {"from": "9" * 40}, 400),
        ("/api/series", {"metric": "count; DROP TABLE windows"}, 400),
        ("/api/series", {"event": "x" * 5000}, 400),
        ("/api/series", {"event": "Order\x00Placed"}, 400),
        ("/api/anomalies", {"days": "nan"}, 400),
        ("/api/anomalies", {"days": "-1"}, 400),
        ("/api/funnel", {}, 400),
        (
            "/api/explain",
            {"event": "Ördér 🛒 Placed", "from": "2026-03-08T14:00Z", "to": "2026-03-08T16:00Z"},
            422,
        ),
        ("/api/explain", {"from": "2026-03-08T14:00Z", "to": "2026-03-08T13:00Z"}, 422),
        ("/assets/..%2F..%2Fhistory.py", {}, 404),
        ("/assets/page.py", {}, 404),
        ("/nothing", {}, 404),
    ],
)
def test_api_refuses_bad_input_with_a_json_error(
    history: Path, path: str, params: dict, status: int
) -> None:
    got, body = get(history, path, **params)
    assert got == status
    assert "error" in body


def test_read_only_and_token(history: Path) -> None:
    before = history.read_bytes()
    token = "s3cret-token-0123456789"
    bearer = {"Authorization": f"Bearer {token}"}
    statuses = [
        r[0]
        for r in fetch(
            history,
            [
                ("GET", "/api/dimensions", {}, {}),
                ("GET", "/api/anomalies", {"token": "wrong"}, {}),
                ("GET", "/api/dimensions", {}, bearer),
                ("GET", "/", {"token": token}, {}),
                ("POST", "/api/explain", {}, bearer),
                ("DELETE", "/api/anomalies", {}, bearer),
            ],
            token=token,
        )
    ]
    assert statuses == [401, 401, 200, 200, 405, 405]
    assert history.read_bytes() == before


def test_page_refuses_an_open_host_without_a_token(history: Path) -> None:
    result = runner.invoke(app, ["page", "--db", str(history), "--host", "0.0.0.0"])
    assert result.exit_code != 0 and "--token" in result.output


def test_the_store_is_readable_while_written(tmp_path: Path) -> None:
    """WAL: a reader sees committed windows while the writer keeps its connection."""
    path = tmp_path / "h.sqlite"
    writer = HistoryStore(path)
    writer.add_windows([rec(0.0)])
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert reader.execute("SELECT count(*) FROM windows").fetchone()[0] == 1
    writer.add_windows([rec(60.0)])
    assert reader.execute("SELECT count(*) FROM windows").fetchone()[0] == 2
    writer.close()
    reader.close()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--event", "Ördér 🛒\u202e Placed"], "knows no event"),
        (["--event", "x" * 10_000], "knows no event"),
        (["--source", "storefront", "--version", "9.9.9"], "knows no app version"),
        (["--funnel", "nope"], "knows no funnel"),
    ],
)
def test_explain_cli_refuses_what_the_history_does_not_know(
    history: Path, flags: list[str], message: str
) -> None:
    period = ["--from", "2026-03-08T14:00Z", "--to", "2026-03-08T16:00Z"]
    result = runner.invoke(app, ["explain", "--db", str(history), *flags, *period])
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output


def test_explain_cli_refuses_a_backwards_or_overlong_period(history: Path) -> None:
    base = ["explain", "--db", str(history), "--event", "Order Placed"]
    backwards = runner.invoke(
        app, [*base, "--from", "2026-03-08T16:00Z", "--to", "2026-03-08T14:00Z"]
    )
    assert backwards.exit_code != 0 and "--to must be after --from" in backwards.output
    long = runner.invoke(app, [*base, "--from", "2025-01-01T00:00Z", "--to", "2026-03-08T14:00Z"])
    assert long.exit_code != 0 and "longer than the history keeps" in long.output


def test_funnel_steps_are_shown_along_the_chain() -> None:
    from streams.page import _step_order

    pairs = {("C", "D"): 1, ("A", "B"): 1, ("B", "C"): 1}
    assert [p for p, _ in sorted(pairs.items(), key=_step_order(pairs))] == [
        ("A", "B"),
        ("B", "C"),
        ("C", "D"),
    ]
