"""Integration: the real worker process against the real embedded broker over TCP.

Envelope batches (valid, invalid, duplicated, unplanned, malformed, unicode-odd) are produced
straight to events.raw; the test reads events.valid, events.quarantine and metrics.windows back
and checks exact counts, quarantine reasons, duplicates, and that the offline replay of the same
envelopes gives the same window records.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import urlopen

import orjson
import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from detectors.records import WindowRecord
from streams.broker import EmbeddedBroker, create_topics
from streams.history import HistoryStore, rebuild_from_kafka
from streams.merge import merge_records
from streams.replay import replay
from streams.topics import ANOMALIES, QUARANTINE, RAW, VALID, WINDOWS
from streams.worker import STAGES
from tests.listeners import listening_addresses
from tests.streaming_support import T0, body_for, make_envelopes, produce, read_topic
from tests.worker_process import PLAN, start_worker, stop_worker
from tracking_plan.loader import load_plan
from tracking_plan.normalise import format_timestamp

pytestmark = pytest.mark.integration
PARTITIONS = 4


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A broker of this module's own: other tests' events must not reach this worker."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as b:
        create_topics(b.bootstrap, partitions=PARTITIONS)
        yield b


def get_json(url: str) -> dict:
    with urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def closers(seconds_later: float) -> list[dict]:
    """One valid event per partition far in the future: it closes every earlier window."""
    out = []
    for i in range(64):
        ts = T0 + seconds_later
        body = body_for("Product Viewed", f"closer-{i}", ts, f"closer-{i}", "web")
        out.append({"source": "web", "received_at": format_timestamp(ts), "body": body})
    return out


def dedupe_flushes(flushes: list[dict]) -> list[dict]:
    """The documented consumer rule of metrics.windows: skip a flush already seen."""
    seen: dict[str, int] = {}
    kept = []
    for flush in flushes:
        if flush["flush"] <= seen.get(flush["partition"], -1):
            continue
        seen[flush["partition"]] = flush["flush"]
        kept.append(flush)
    return kept


def alerts_by_id(alerts: list[dict]) -> dict[str, dict]:
    """The last change of each alert, as the history keeps it."""
    return {a["id"]: a for a in alerts}


def canon(records: list[WindowRecord]) -> list[str]:
    return sorted(orjson.dumps(r.to_dict(), option=orjson.OPT_SORT_KEYS).decode() for r in records)


def test_worker_validates_quarantines_dedupes_and_windows(kafka, tmp_path: Path) -> None:
    bootstrap = kafka.bootstrap
    envelopes = make_envelopes(3000, seed=3, seconds=900, users=80)
    # unicode-odd and hostile but well-formed calls
    odd_names = ["Café ☕ Viewed", "\u202eReversed", "Null\u0000Byte", "x" * 300]
    for i, name in enumerate(odd_names):  # in event-time order, so that none is late
        body = body_for(name, f"odd-{i}", T0 + 100 + i, f"odd-{i}", "web")
        odd = {"source": "web", "received_at": format_timestamp(T0 + 100), "body": body}
        envelopes.insert(len(envelopes) // 9 + i, odd)
    # the website fires one purchase twice: another messageId, the same order_id (a repeat of
    # the plan's business key: flagged duplicate_key, not blocked)
    at, order = next(
        (i, e)
        for i, e in enumerate(envelopes)
        if e["body"]["event"] == "Order Completed" and "total" in e["body"]["properties"]
    )
    double = orjson.loads(orjson.dumps(order))
    double["body"]["messageId"] += "-again"
    envelopes.insert(at + 1, double)
    produced = produce(bootstrap, envelopes, PARTITIONS, batch=120)
    # malformed messages: not JSON, a JSON object that is not an envelope, a batch with one
    # broken envelope among good ones
    good = make_envelopes(3, seed=99, seconds=10, bad_every=0, dup_every=0)
    for i, env in enumerate(good):  # users of their own, after everything else in event time
        env["body"]["anonymousId"] = f"good-{i}"
        env["body"]["timestamp"] = format_timestamp(T0 + 1800)
        env["received_at"] = format_timestamp(T0 + 1800)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    producer.send(RAW, value=b"{not json \xff", partition=0)
    producer.send(RAW, value=b'{"hello": "world"}', partition=1)
    producer.send(RAW, value=orjson.dumps([good[0], {"source": 3}, good[1], good[2]]), partition=2)
    producer.flush()
    produce(bootstrap, closers(3 * 3600), PARTITIONS, batch=100)

    started = time.time()
    history = tmp_path / "history.sqlite"
    proc = start_worker(
        bootstrap,
        f"tw-{uuid.uuid4().hex[:6]}",
        tmp_path / "w.log",
        tmp_path,
        "--history-db",
        str(history),
    )
    try:
        unique = {e["body"]["messageId"]: e for e in envelopes}
        expected_total = len(unique) + len(good) + 64 + 3  # + closers + 3 unreadable items
        valid = read_topic(bootstrap, VALID, until=None, idle=6, timeout=120)
        quarantine = read_topic(bootstrap, QUARANTINE, idle=2, timeout=30)
        flushes = read_topic(bootstrap, WINDOWS, idle=4, timeout=60)
        alerts = read_topic(bootstrap, ANOMALIES, idle=3, timeout=20)
        api = get_json(f"http://127.0.0.1:{proc.web_port}/api/anomalies")
        # the worker answers "tracking, or real?" from the history it keeps
        period = f"from={format_timestamp(T0)}&to={format_timestamp(T0 + 900)}"
        verdict = get_json(f"http://127.0.0.1:{proc.web_port}/api/explain?{period}")
        with pytest.raises(HTTPError) as refused:
            urlopen(f"http://127.0.0.1:{proc.web_port}/api/explain?from=yesterday", timeout=10)
        metrics = urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=10).read()
        # loopback only by default (--host): neither port is reachable from other machines
        listeners = {p: listening_addresses(p) for p in (proc.metrics_port, proc.web_port)}
    finally:
        assert stop_worker(proc) == 0, (tmp_path / "w.log").read_text()[-3000:]
    assert produced > 0
    assert listeners == {proc.metrics_port: {"127.0.0.1"}, proc.web_port: {"127.0.0.1"}}
    assert isinstance(api["anomalies"], list)
    assert verdict["verdict"] in ("tracking", "real change", "traffic quality", "unclear")
    assert verdict["observed"] > 0 and "no earlier period" in verdict["baseline"]
    assert refused.value.code == 400 and "not a time" in json.loads(refused.value.read())["error"]
    text = metrics.decode()
    assert 'trackwatch_events_quarantined_total{code="missing_required"' in text
    assert 'trackwatch_events_duplicate_total{source="web"}' in text
    assert "trackwatch_windows_emitted_total" in text
    # every stage the stale-stage alert watches reports its own time. Until a stage processes
    # a batch it reports the worker's start; detect merges the flushes the last batch of
    # validate + aggregate sent, so it reports a later time than they do only if it ran
    last = {
        s.labels["stage"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "trackwatch_last_processed_timestamp_seconds"
    }
    assert set(last) == set(STAGES)
    assert last["validate"] == last["aggregate"] > started
    assert last["detect"] >= last["validate"]
    assert 'trackwatch_duplicate_keys_total{event="Order Completed",source="web"} 1.0' in text, text
    assert 'trackwatch_repeated_payloads_total{event="Product Viewed",source="web"}' in text
    forwarded = [item for msg in valid for item in msg["events"]]
    q_records = [rec for msg in quarantine for rec in msg]
    assert len(forwarded) + len(q_records) == expected_total

    # duplicates are gone: every messageId once
    ids = Counter(item["event"]["messageId"] for item in forwarded)
    ids.update(
        r["envelope"]["body"]["messageId"]
        for r in q_records
        if r["envelope"] and "body" in r["envelope"]
    )
    assert max(ids.values()) == 1
    assert set(unique) <= set(ids)

    # quarantine reasons: Order Completed is `block`: without `total` it is quarantined with it
    bad_orders = [
        e
        for e in unique.values()
        if e["body"]["event"] == "Order Completed" and "total" not in e["body"]["properties"]
    ]
    by_code = Counter(v["code"] for r in q_records for v in r["violations"])
    assert by_code["missing_required"] == len(bad_orders) > 0
    missing = [v for r in q_records for v in r["violations"] if v["code"] == "missing_required"]
    assert {v["path"] for v in missing} == {"$.properties.total"}
    assert by_code["malformed_json"] == 1 and by_code["bad_envelope"] == 2
    raw = [r for r in q_records if r["violations"][0]["code"] == "malformed_json"]
    assert raw[0]["envelope"] is None and raw[0]["raw_base64"]
    assert all(r["plan_version"] == "2026.11.1" for r in q_records)

    # web is `flag`: a Product Viewed without price is forwarded with its violation; an order
    # is `block` but its repeat is only flagged
    flagged = [i for i in forwarded if i["event"].get("violations")]
    orders = [i["event"] for i in flagged if i["event"]["event"] == "Order Completed"]
    assert flagged and [o["messageId"] for o in orders] == [double["body"]["messageId"]]
    assert [v["code"] for v in orders[0]["violations"]] == ["duplicate_key"]

    # windows: after the documented flush dedupe, merged records equal the offline replay
    records = merge_records(
        WindowRecord.from_dict(r) for f in dedupe_flushes(flushes) for r in f["records"]
    )
    streamed_counts = Counter()
    for r in records:
        if r.kind == "volume":
            streamed_counts[r.series["event"]] += r.count
    forwarded_counts = Counter(
        i["event"].get("event")
        for i in forwarded
        if not i["event"]["anonymousId"].startswith("closer")
    )
    assert streamed_counts == +Counter({k: v for k, v in forwarded_counts.items()})

    lines = [orjson.dumps(e) for e in [*envelopes, *good, *closers(3 * 3600)]]
    offline: list[WindowRecord] = []
    offline_alerts: list = []
    stats = replay(load_plan(PLAN), lines, on_window=offline.append, on_alert=offline_alerts.append)
    assert stats.late == 0
    closed_until = T0 + 3 * 3600 - 120
    offline = [r for r in offline if r.window_end <= closed_until - 60]
    streamed = [r for r in records if r.window_end <= closed_until - 60]
    assert any(r.kind == "conversion" and r.numerator for r in streamed)
    repeats = Counter()
    for r in streamed:
        repeats[r.series.get("event")] += r.repeats
    assert repeats["Order Completed"] == 1 and repeats["Product Viewed"] > 0
    assert canon(streamed) == canon(offline)

    # alerts: the streaming detect agent and the replay agree (here: a new unplanned event
    # "Banner Clicked" fires, then resolves once it has been gone long enough)
    horizon = format_timestamp(closed_until - 60)
    expected = [a.to_dict() for a in offline_alerts if a.updated_at <= horizon]
    assert {(a["kind"], a["state"]) for a in expected} >= {("new_event", "firing")}
    assert alert_lines(alerts) == alert_lines(expected)

    # the history the detect agent kept (--history-db): the streamed windows, merged, and the
    # last state of every alert
    with HistoryStore(history, readonly=True) as store:
        kept = Counter()
        for key, count in store.db.execute(
            "SELECT s.key, sum(w.count) FROM windows w JOIN series s ON s.id = w.series_id "
            "WHERE w.start + 60 <= ? GROUP BY s.key",
            (closed_until - 60,),
        ):
            kept[key] = count
        states = dict(store.db.execute("SELECT id, state FROM alerts").fetchall())
    want = Counter()
    for r in streamed:
        want[r.series_key()] += r.count
    assert kept == +want
    assert states == {a["id"]: a["state"] for a in alerts_by_id(alerts).values()}
    # rebuilt from the topics (`trackwatch history rebuild`): the same windows and alerts
    rebuilt = tmp_path / "rebuilt.sqlite"
    with HistoryStore(rebuilt) as store:
        stats = rebuild_from_kafka(store, bootstrap)
        again = Counter()
        for key, count in store.db.execute(
            "SELECT s.key, sum(w.count) FROM windows w JOIN series s ON s.id = w.series_id "
            "WHERE w.start + 60 <= ? GROUP BY s.key",
            (closed_until - 60,),
        ):
            again[key] = count
        assert dict(store.db.execute("SELECT id, state FROM alerts").fetchall()) == states
    assert stats.windows > 0 and again == kept


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--broker", "localhost"], "HOST:PORT"),
        (["--broker", "127.0.0.1:1"], "cannot reach the broker"),
        (["--plan", "does/not/exist.yaml"], "exist.yaml"),
        (["--dimensions", ","], "at least one"),
        (["--early-minutes", "-1"], "--early-minutes"),
    ],
)
def test_worker_cli_errors_are_one_line(args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from streams.cli.app import app

    result = CliRunner().invoke(app, ["worker", "--metrics-port", "0", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_the_worker_aggregates_with_its_early_conversion_horizon() -> None:
    """`--early-minutes` reaches the aggregator of every partition (0: no early records)."""
    from types import SimpleNamespace

    from streams.worker import Pipeline, WorkerConfig

    plan = load_plan(PLAN)
    for minutes in (0, 3, 10):
        holder = SimpleNamespace(config=WorkerConfig(early_minutes=minutes))
        assert Pipeline._new_aggregator(holder, plan).early_minutes == minutes  # type: ignore[arg-type]


def test_the_worker_detects_with_its_tuning_and_keeps_it_across_a_restore() -> None:
    """`--detectors` reaches the engine of every partition, new or restored from a snapshot."""
    from types import SimpleNamespace

    from detectors.tuning import parse_tuning
    from streams.worker import Pipeline, WorkerConfig

    tuning = parse_tuning("min_excess_units: 8\nlifecycle: {fire_windows: 4}\n")
    holder = SimpleNamespace(config=WorkerConfig(engine=tuning), plan=load_plan(PLAN))
    fresh = Pipeline._new_engine(holder, None)  # type: ignore[arg-type]
    restored = Pipeline._new_engine(holder, fresh.to_state())  # type: ignore[arg-type]
    assert fresh.config is tuning and restored.config is tuning
    default = SimpleNamespace(config=WorkerConfig(), plan=holder.plan)
    assert Pipeline._new_engine(default, None).config.min_excess_units == 5.0  # type: ignore[arg-type]


def alert_lines(alerts: list[dict]) -> list[str]:
    return sorted(orjson.dumps(a, option=orjson.OPT_SORT_KEYS).decode() for a in alerts)
