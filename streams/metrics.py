"""Prometheus metrics of trackwatch. Names are a contract (dashboards, rules): change with care.

Labels are low-cardinality only: source, event, platform, kind, code, route, status, topic.
Events the plan does not know are reported with event="(unplanned)" to keep cardinality bounded.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

UNPLANNED_EVENT_LABEL = "(unplanned)"

# Collector (HTTP)
HTTP_REQUESTS = Counter(
    "trackwatch_http_requests_total", "HTTP requests answered by the collector", ["route", "status"]
)
HTTP_LATENCY = Histogram(
    "trackwatch_http_request_duration_seconds",
    "Time from request received to response sent (includes the Kafka acknowledgement)",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
COLLECTED = Counter(
    "trackwatch_events_collected_total", "Events acknowledged by the collector", ["source"]
)
PRODUCE_BATCH = Histogram(
    "trackwatch_produce_batch_events",
    "Envelopes per Kafka message written by the collector",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000),
)

# Worker
RECEIVED = Counter(
    "trackwatch_events_received_total", "Events read from events.raw", ["source", "event"]
)
VALID = Counter(
    "trackwatch_events_valid_total", "Events forwarded to events.valid", ["source", "event"]
)
FLAGGED = Counter(
    "trackwatch_events_flagged_total",
    "Events forwarded with violations (mode flag/omit)",
    ["source", "event", "code"],
)
QUARANTINED = Counter(
    "trackwatch_events_quarantined_total",
    "Events sent to events.quarantine, by violation code",
    ["source", "event", "code"],
)
DUPLICATES = Counter(
    "trackwatch_events_duplicate_total", "Events dropped as duplicates of a messageId", ["source"]
)
DUPLICATE_KEYS = Counter(
    "trackwatch_duplicate_keys_total",
    "Events repeating a plan business key (unique) under another messageId: duplicate_key",
    ["source", "event"],
)
REPEATED_PAYLOADS = Counter(
    "trackwatch_repeated_payloads_total",
    "Planned events without a business key repeating the same user and properties within an "
    "hour under another messageId (counted, not a violation)",
    ["source", "event"],
)
PROCESSING_LAG = Gauge(
    "trackwatch_processing_lag_seconds",
    "Now minus received_at of the newest event processed (stage: validate, aggregate)",
    ["stage"],
)
LAST_PROCESSED = Gauge(
    "trackwatch_last_processed_timestamp_seconds",
    "Unix time at which the stage (validate, aggregate, detect) last processed a batch; set "
    "to the worker's start time until then",
    ["stage"],
)
BATCH_SIZE = Histogram(
    "trackwatch_batch_size_events",
    "Events per batch processed by an agent",
    ["stage"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
WINDOWS_EMITTED = Counter(
    "trackwatch_windows_emitted_total", "Window records written to metrics.windows", ["kind"]
)
LATE_EVENTS = Counter(
    "trackwatch_late_events_total", "Events that arrived after their window closed", ["source"]
)
LATE_REVISED = Counter(
    "trackwatch_late_revised_events_total",
    "Late events counted in revision records of their window (within the late horizon)",
    ["source"],
)
TOO_LATE = Counter(
    "trackwatch_too_late_events_total",
    "Late events beyond the late horizon: in no window record",
    ["source"],
)
INPUT_GAPS = Counter(
    "trackwatch_input_gaps_total",
    "Offset gaps in an agent's input (messages the consumer skipped), read back from the broker "
    "(outcome=repaired), no longer on it (outcome=lost), or missing at a partition's end and "
    "fetched again (outcome=resought)",
    ["stage", "outcome"],
)
INPUT_GAP_MESSAGES = Counter(
    "trackwatch_input_gap_messages_total",
    "Input messages read back from the broker to fill a gap",
    ["stage"],
)
PLAN_VERSION = Gauge(
    "trackwatch_plan_info", "The tracking plan version the worker validates with", ["version"]
)

# Detectors
SERIES_LABELS = ["event", "source", "platform", "kind"]
SERIES_OBSERVED = Gauge("trackwatch_series_observed", "Observed value, last window", SERIES_LABELS)
SERIES_EXPECTED = Gauge("trackwatch_series_expected", "Model's expected value", SERIES_LABELS)
SERIES_LOWER = Gauge("trackwatch_series_lower", "Lower bound of the normal interval", SERIES_LABELS)
SERIES_UPPER = Gauge("trackwatch_series_upper", "Upper bound of the normal interval", SERIES_LABELS)
SERIES_SCORE = Gauge("trackwatch_series_anomaly_score", "Anomaly score in [0, 1]", SERIES_LABELS)
ANOMALY_FIRING = Gauge(
    "trackwatch_anomaly_firing",
    "1 while an anomaly of this kind is firing for the series, else 0",
    SERIES_LABELS,
)
ANOMALIES = Counter(
    "trackwatch_anomalies_total", "Anomalies that reached the firing state", ["kind"]
)
MODELS = Gauge(
    "trackwatch_models_series",
    "Series the detectors model, by state: learning (no alerts yet) or ready",
    ["state"],
)
MODELS_LEARNING_UNTIL = Gauge(
    "trackwatch_models_learning_until_timestamp_seconds",
    "Event time (Unix) until which the series learning now keep learning; 0 when none learns",
)
