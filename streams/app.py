"""The Faust application factory: one app = the validate, aggregate and detect agents, their state
tables, the `/api/anomalies` web view, and the settings the embedded broker needs."""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from kafka import KafkaConsumer

from streams.broker import create_topics
from streams.topics import RAW, VALID
from streams.worker import Pipeline, WorkerConfig
from tracking_plan.loader import load_plan
from tracking_plan.model import Plan

DEFAULT_APP_ID = "trackwatch"
DEFAULT_WEB_PORT = 6066
DEFAULT_WEB_HOST = "127.0.0.1"


FETCH_MAX_WAIT_MS = 100


def _shorter_fetch_wait() -> None:
    """faust-streaming hard-codes fetch_max_wait_ms=1500 for its consumer. A broker that holds
    an empty fetch for the whole wait (the embedded Tansu does) then adds up to 1.5 s to the
    latency of a quiet stream; 100 ms bounds it. Installed once, idempotent."""
    thread = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(thread, "_trackwatch_patched", False):
        return
    create = thread._create_worker_consumer

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    thread._create_worker_consumer = create_worker_consumer
    thread._trackwatch_patched = True


def _bootstrap(broker: str) -> str:
    return broker.removeprefix("kafka://")


def topic_partitions(bootstrap: str, topics: tuple[str, ...] = (RAW, VALID)) -> int:
    """The partition count shared by `topics` (creating the trackwatch topics if missing).

    Raises OSError at once when nothing listens at `bootstrap`."""
    host, _, port = bootstrap.rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
        pass
    create_topics(bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        counts = {t: len(consumer.partitions_for_topic(t) or ()) for t in topics}
    finally:
        consumer.close()
    if not all(counts.values()):
        raise RuntimeError(f"topics without partitions on {bootstrap}: {counts}")
    return max(counts.values())


def create_app(
    broker: str,
    plan: str | Path | Plan,
    *,
    app_id: str = DEFAULT_APP_ID,
    config: WorkerConfig | None = None,
    store: str = "memory://",
    web_port: int | None = DEFAULT_WEB_PORT,
    web_host: str = DEFAULT_WEB_HOST,
    data_dir: str | Path | None = None,
    partitions: int | None = None,
) -> faust.App:
    """A Faust app for `broker` (``host:port`` or ``kafka://host:port``) validating with `plan`
    until a plan is published on the broker's `plans` topic (`trackwatch plans publish`): the
    workers then switch to it between two batches, without a restart.

    `store` is ``memory://`` (state restored from the changelog topics at start) or
    ``rocksdb://`` (needs faust-streaming[rocksdb]). `web_port=None` disables the web server;
    it listens on `web_host` only (loopback by default: Faust alone would bind every interface).
    The app's `pipeline` attribute is the installed `Pipeline`.
    """
    bootstrap = _bootstrap(broker)
    _shorter_fetch_wait()
    loaded = plan if isinstance(plan, Plan) else load_plan(plan)
    n = partitions or topic_partitions(bootstrap)
    data = Path(data_dir) if data_dir else Path(tempfile.gettempdir()) / f"trackwatch-{app_id}"
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store=store,
        datadir=str(data),
        topic_partitions=n,
        topic_replication_factor=1,
        topic_allow_declare=True,
        broker_session_timeout=8.0,
        broker_heartbeat_interval=2.0,
        broker_request_timeout=40.0,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=8_000_000,  # per partition: several batch messages per fetch
        stream_wait_empty=False,  # agents hold un-acked input until their next snapshot
        producer_max_request_size=2_000_000,
        producer_max_batch_size=1_000_000,  # a batch message is ~100-300 kB: one Kafka batch each
        web_enabled=web_port is not None,
        web_port=web_port or DEFAULT_WEB_PORT,
        web_bind=web_host,  # the address the server listens on
        web_host=web_host,  # the address Faust puts in the URLs it prints
        table_cleanup_interval=3600.0,
    )
    pipeline = Pipeline(app, loaded, config or WorkerConfig(), n, bootstrap=bootstrap)
    app.pipeline = pipeline  # type: ignore[attr-defined]

    @app.page("/api/anomalies")
    async def anomalies(web: Any, request: Any) -> Any:
        """The anomalies currently pending or firing, newest first, and whether the models
        still learn (`models`: series, learning, ready, learning_until, event_time, summary)."""
        items = sorted(pipeline.anomalies.values(), key=lambda a: a.updated_at, reverse=True)
        return web.json(
            {
                "anomalies": [a.to_dict() for a in items],
                "models": pipeline.model_status().to_dict(now=time.time()),
            }
        )

    history = (config or WorkerConfig()).history_db
    if history is not None:

        @app.page("/api/explain")
        async def explain(web: Any, request: Any) -> Any:
            """Tracking, or real? The verdict on a period from the history this worker keeps
            (`trackwatch explain --json`; parameters as `trackwatch page`'s /api/explain)."""
            from streams.page import explain_query

            status, body = explain_query(history, dict(request.query))
            return web.json(body, status=status)

    return app
