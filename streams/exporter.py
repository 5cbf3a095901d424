"""The worker's Prometheus endpoint (prometheus-client): the metrics of `streams.metrics`."""

from __future__ import annotations

from prometheus_client import start_http_server

DEFAULT_METRICS_PORT = 9108
DEFAULT_HOST = "127.0.0.1"  # loopback: other machines reach it only when asked (--host)


def start_exporter(port: int = DEFAULT_METRICS_PORT, host: str = DEFAULT_HOST) -> None:
    """Serve ``/metrics`` on `host:port` from a daemon thread (OSError if the port is taken)."""
    start_http_server(port, addr=host)
