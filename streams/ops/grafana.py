"""Grafana provisioning of trackwatch, generated from code and committed under deploy/grafana.

Dashboards are built with grafana-foundation-sdk (typed builders for the Grafana 11 schema).
Grafana-managed alert rules are derived from the alerting rules of deploy/prometheus/rules.yml, so
that expressions, durations, labels and texts have one source (unit-tested with promtool); they
notify a webhook contact point. The provisioning YAML files (datasource, dashboard provider, alert
rules, contact point, notification policy) follow Grafana's file-provisioning format, which differs
from the HTTP API models the SDK offers, so they are plain dicts built by small functions.

`render(rules_text)` returns every file as text; `write` puts them on disk and `stale_files` tells
which committed files differ from what the code generates (`trackwatch ops check`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as prom_models

DATASOURCE_UID = "trackwatch-prometheus"
DATASOURCE_URL = "http://prometheus:9090"
FOLDER = "Trackwatch"
DASHBOARDS_DIR_IN_CONTAINER = "/var/lib/grafana/dashboards"
WEBHOOK_URL_ENV = "TRACKWATCH_ALERT_WEBHOOK_URL"
CONTACT_POINT = "trackwatch-webhook"
ALERT_GROUP = "trackwatch"
ALERT_INTERVAL = "1m"
CONDITION_REF = "FIRING"

_DS = dm.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
# Series kinds (label `kind` of the series gauges): volume, violation_rate, conversion.
_NOT_FUNNEL = 'kind!="conversion"'
_CONVERSION = 'kind="conversion"'


# ---------------------------------------------------------------------------------------------
# Panels


def _query(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False) -> prom.Dataquery:
    query = prom.Dataquery().expr(expr).ref_id(ref).legend_format(legend or "__auto")
    if instant:
        query = query.instant().format(prom_models.PromQueryFormat.TABLE)
    return query


def _targets(queries: list[tuple[str, str]]) -> list[Builder[Any]]:
    return [_query(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)]


def _timeseries(
    title: str, description: str, queries: list[tuple[str, str]], unit: str, width: int = 12
) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(_DS)
        .targets(_targets(queries))
        .unit(unit)
        .height(8)
        .span(width)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
    )


def _stat(
    title: str, description: str, expr: str, unit: str, red_above: float | None
) -> stat.Panel:
    steps = [dm.Threshold(value=None, color="green")]
    if red_above is not None:
        steps.append(dm.Threshold(value=red_above, color="red"))
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(_DS)
        .with_target(_query(expr, title))
        .unit(unit)
        .height(4)
        .span(4)
        .thresholds(db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(steps))
    )


def _band_panel(title: str, description: str, selector: str, unit: str) -> timeseries.Panel:
    """Observed value against the model's expected value and normal interval (lower..upper)."""
    queries = [
        (f"max(trackwatch_series_observed{{{selector}}})", "observed"),
        (f"max(trackwatch_series_expected{{{selector}}})", "expected"),
        (f"max(trackwatch_series_lower{{{selector}}})", "lower"),
        (f"max(trackwatch_series_upper{{{selector}}})", "upper"),
    ]
    band = [
        dm.DynamicConfigValue(id_val="custom.lineWidth", value=0),
        dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "green"}),
    ]
    return (
        _timeseries(title, description, queries, unit, width=12)
        .fill_opacity(0)
        .override_by_name(
            "observed",
            [
                dm.DynamicConfigValue(id_val="custom.lineWidth", value=2),
                dm.DynamicConfigValue(
                    id_val="color", value={"mode": "fixed", "fixedColor": "blue"}
                ),
            ],
        )
        .override_by_name(
            "expected",
            [
                dm.DynamicConfigValue(
                    id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
                ),
                dm.DynamicConfigValue(
                    id_val="color", value={"mode": "fixed", "fixedColor": "green"}
                ),
            ],
        )
        .override_by_name("lower", band)
        .override_by_name(
            "upper",
            [
                *band,
                dm.DynamicConfigValue(id_val="custom.fillBelowTo", value="lower"),
                dm.DynamicConfigValue(id_val="custom.fillOpacity", value=20),
            ],
        )
    )


def _variable(name: str, label: str, query: str, *, multi: bool) -> db.QueryVariable:
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(_DS)
        .query(query)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
        .multi(multi)
        .include_all(multi)
    )


def _dashboard(uid: str, title: str, description: str) -> db.Dashboard:
    return (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["trackwatch"])
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
        .readonly()
        .link(
            db.DashboardLink("Trackwatch")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags(["trackwatch"])
            .as_dropdown(True)
            .include_vars(False)
            .keep_time(True)
        )
    )


def overview_dashboard() -> dict[str, Any]:
    """Throughput, plan conformance, quarantine, processing lag and collector HTTP health."""
    src = 'source=~"$source"'
    dash = (
        _dashboard(
            "trackwatch-overview",
            "Trackwatch / Overview",
            "Events collected and processed, how many follow the tracking plan, why the others "
            "are quarantined, and whether the pipeline keeps up.",
        )
        .with_variable(
            _variable(
                "source",
                "Source",
                "label_values(trackwatch_events_received_total, source)",
                multi=True,
            )
        )
        .with_row(db.Row("Now"))
        .with_panel(
            _stat(
                "Events/s collected",
                "Events acknowledged by the collector, last 5 minutes.",
                f"sum(trackwatch:events_collected:rate5m{{{src}}})",
                "ops",
                None,
            )
        )
        .with_panel(
            _stat(
                "Valid",
                "Share of received events forwarded to events.valid (flagged included).",
                f"sum(trackwatch:events_valid:rate5m{{{src}}}) "
                f"/ sum(trackwatch:events_received:rate5m{{{src}}})",
                "percentunit",
                None,
            )
        )
        .with_panel(
            _stat(
                "Quarantined",
                "Share of received events sent to events.quarantine.",
                f"max(trackwatch:events_quarantined:ratio_rate5m{{{src}}})",
                "percentunit",
                0.05,
            )
        )
        .with_panel(
            _stat(
                "Anomalies firing",
                "Series whose model currently raises an alert.",
                "count(max by (event, source, platform, kind) (trackwatch_anomaly_firing) == 1) "
                "or vector(0)",
                "none",
                0.5,
            )
        )
        .with_panel(
            _stat(
                "Processing lag",
                "Worst lag of any stage: now minus received time of the newest event processed.",
                "max(trackwatch:processing_lag_seconds:max)",
                "s",
                120,
            )
        )
        .with_panel(
            _stat(
                "Collector 5xx",
                "Share of collector requests answered 5xx (503: Kafka unavailable).",
                "trackwatch:http_requests_5xx:ratio_rate5m",
                "percentunit",
                0.01,
            )
        )
        .with_row(db.Row("Throughput and plan conformance"))
        .with_panel(
            _timeseries(
                "Events/s by source",
                "Collected by the collector and received by the workers.",
                [
                    (f"trackwatch:events_collected:rate5m{{{src}}}", "collected {{source}}"),
                    (
                        f"sum by (source) (trackwatch:events_received:rate5m{{{src}}})",
                        "received {{source}}",
                    ),
                ],
                "ops",
            )
        )
        .with_panel(
            _timeseries(
                "Events/s by event (top 15)",
                "Events received by the workers, per event name.",
                [
                    (
                        f"topk(15, sum by (event) (trackwatch:events_received:rate5m{{{src}}}))",
                        "{{event}}",
                    )
                ],
                "ops",
            )
        )
        .with_panel(
            _timeseries(
                "Valid % by source",
                "Share of received events forwarded to events.valid.",
                [(f"trackwatch:events_valid:ratio_rate5m{{{src}}}", "{{source}}")],
                "percentunit",
            )
            .min(0)
            .max(1)
        )
        .with_panel(
            _timeseries(
                "Quarantined % by source",
                "Share of received events sent to quarantine; alert above 5 % for 10 min.",
                [(f"trackwatch:events_quarantined:ratio_rate5m{{{src}}}", "{{source}}")],
                "percentunit",
            ).min(0)
        )
        .with_row(db.Row("Quarantine"))
        .with_panel(
            _timeseries(
                "Quarantine by code",
                "Violations per second that sent events to quarantine.",
                [(f"sum by (code) (trackwatch:events_quarantined:rate5m{{{src}}})", "{{code}}")],
                "ops",
                width=8,
            )
        )
        .with_panel(
            _timeseries(
                "Quarantine by event (top 10)",
                "Violations per second, per event name.",
                [
                    (
                        f"topk(10, sum by (event) (trackwatch:events_quarantined:rate5m{{{src}}}))",
                        "{{event}}",
                    )
                ],
                "ops",
                width=8,
            )
        )
        .with_panel(
            _timeseries(
                "Quarantine by source",
                "Violations per second, per source.",
                [
                    (
                        f"sum by (source) (trackwatch:events_quarantined:rate5m{{{src}}})",
                        "{{source}}",
                    )
                ],
                "ops",
                width=8,
            )
        )
        .with_panel(
            table.Panel()
            .title("Top violations (event × code)")
            .description("Share of an event's traffic quarantined for each code, last 5 minutes.")
            .datasource(_DS)
            .with_target(
                _query(
                    f"topk(20, trackwatch:events_quarantined:ratio_by_code_rate5m{{{src}}})",
                    instant=True,
                )
            )
            .unit("percentunit")
            .height(8)
            .span(12)
        )
        .with_panel(
            _timeseries(
                "Duplicates and late events",
                "Duplicates dropped by messageId; events that arrived after their window closed"
                " (still counted in a revision of it within the late horizon); too late: beyond"
                " the horizon, in no window.",
                [
                    (
                        f"sum by (source) (rate(trackwatch_events_duplicate_total{{{src}}}[5m]))",
                        "duplicates {{source}}",
                    ),
                    (
                        f"sum by (source) (rate(trackwatch_late_events_total{{{src}}}[5m]))",
                        "late {{source}}",
                    ),
                    (
                        f"sum by (source) (rate(trackwatch_too_late_events_total{{{src}}}[5m]))",
                        "too late {{source}}",
                    ),
                ],
                "ops",
            )
        )
        .with_row(db.Row("Pipeline"))
        .with_panel(
            _timeseries(
                "Processing lag by stage",
                "Now minus received time of the newest event processed; alert above 2 minutes.",
                [("trackwatch:processing_lag_seconds:max", "{{stage}}")],
                "s",
                width=8,
            )
        )
        .with_panel(
            _timeseries(
                "Since last batch, by stage",
                "Seconds since a stage last processed a batch on any worker.",
                [("trackwatch:last_processed_age_seconds:min", "{{stage}}")],
                "s",
                width=8,
            )
        )
        .with_panel(
            _timeseries(
                "Batch size p50 / p99",
                "Events per batch processed by each agent.",
                [
                    (
                        "histogram_quantile(0.5, sum by (stage, le) "
                        "(rate(trackwatch_batch_size_events_bucket[5m])))",
                        "p50 {{stage}}",
                    ),
                    (
                        "histogram_quantile(0.99, sum by (stage, le) "
                        "(rate(trackwatch_batch_size_events_bucket[5m])))",
                        "p99 {{stage}}",
                    ),
                ],
                "none",
                width=8,
            )
        )
        .with_panel(
            _timeseries(
                "Windows emitted/s",
                "Window records written to metrics.windows, by kind.",
                [("sum by (kind) (rate(trackwatch_windows_emitted_total[5m]))", "{{kind}}")],
                "ops",
                width=8,
            )
        )
        .with_panel(
            table.Panel()
            .title("Plan version per worker")
            .description("All workers should validate with the same plan version.")
            .datasource(_DS)
            .with_target(_query("trackwatch_plan_info == 1", instant=True))
            .height(8)
            .span(8)
        )
        .with_panel(
            _timeseries(
                "Envelopes per Kafka message",
                "Micro-batch size written by the collector (p50).",
                [
                    (
                        "histogram_quantile(0.5, sum by (le) "
                        "(rate(trackwatch_produce_batch_events_bucket[5m])))",
                        "p50",
                    )
                ],
                "none",
                width=8,
            )
        )
        .with_row(db.Row("Collector HTTP"))
        .with_panel(
            _timeseries(
                "HTTP p99 latency by route",
                "Includes waiting for Kafka to acknowledge the events.",
                [("trackwatch:http_request_duration_seconds:p99_5m", "{{route}}")],
                "s",
            )
        )
        .with_panel(
            _timeseries(
                "HTTP requests by status",
                "4xx: bad input from trackers; 5xx: collector or Kafka trouble.",
                [("sum by (status) (trackwatch:http_requests:rate5m)", "{{status}}")],
                "reqps",
            )
        )
    )
    return _to_dict(dash)


def anomalies_dashboard() -> dict[str, Any]:
    """Per series: observed value against the expected band; what is firing now."""
    observed = "trackwatch_series_observed"
    dash = (
        _dashboard(
            "trackwatch-anomalies",
            "Trackwatch / Anomalies",
            "What the online models expect for each event series, the normal range they learned, "
            "what was observed, and which alerts fire. Explanations: GET :6066/api/anomalies.",
        )
        .with_variable(
            _variable(
                "source",
                "Source",
                f"label_values({observed}{{{_NOT_FUNNEL}}}, source)",
                multi=False,
            )
        )
        .with_variable(
            _variable(
                "platform",
                "Platform",
                f'label_values({observed}{{{_NOT_FUNNEL}, source="$source"}}, platform)',
                multi=False,
            )
        )
        .with_variable(
            _variable(
                "kind",
                "Series kind",
                f'label_values({observed}{{{_NOT_FUNNEL}, source="$source", '
                f'platform="$platform"}}, kind)',
                multi=False,
            )
        )
        .with_variable(
            _variable(
                "event",
                "Event",
                f'label_values({observed}{{source="$source", platform="$platform", '
                f'kind="$kind"}}, event)',
                multi=True,
            )
        )
        .with_row(db.Row("Firing now"))
        .with_panel(
            table.Panel()
            .title("Firing anomalies")
            .description(
                "Series that belong to a firing alert now (all sources and platforms); the "
                "anomaly kind and its explanation are in GET :6066/api/anomalies."
            )
            .datasource(_DS)
            .with_target(
                _query(
                    "max by (event, source, platform, kind) (trackwatch_anomaly_firing) == 1",
                    instant=True,
                )
            )
            .height(8)
            .span(12)
        )
        .with_panel(
            _timeseries(
                "Anomalies reaching firing, per hour",
                "By kind: spike, drop, disappeared, new_event, conversion_up/down, "
                "violation_surge.",
                [("sum by (kind) (increase(trackwatch_anomalies_total[1h]))", "{{kind}}")],
                "none",
            )
        )
        .with_row(db.Row("Series: observed vs expected"))
        .with_panel(
            _timeseries(
                "Anomaly score ($kind, $source/$platform)",
                "In [0, 1]; the alert lifecycle decides when a high score becomes an alert.",
                [
                    (
                        'max by (event) (trackwatch_series_anomaly_score{event=~"$event", '
                        'source="$source", platform="$platform", kind="$kind"})',
                        "{{event}}",
                    )
                ],
                "none",
                width=24,
            )
            .min(0)
            .max(1)
        )
        .with_panel(
            _band_panel(
                "$event ($kind, $source/$platform)",
                "Blue: observed per window. Dashed: expected. Green band: normal interval.",
                'event="$event", source="$source", platform="$platform", kind="$kind"',
                "none",
            )
            .repeat("event")
            .repeat_direction("h")
            .max_per_row(2)
        )
    )
    return _to_dict(dash)


def funnels_dashboard() -> dict[str, Any]:
    """Conversion rate of each funnel step pair against its expected band."""
    dash = (
        _dashboard(
            "trackwatch-funnels",
            "Trackwatch / Funnels",
            "Conversion from one funnel step to the next, with the interval the model expects. "
            "A jump from a cosmetic change usually means broken tracking, not a miracle.",
        )
        .with_variable(
            _variable(
                "source",
                "Source",
                f"label_values(trackwatch_series_observed{{{_CONVERSION}}}, source)",
                multi=False,
            )
        )
        .with_variable(
            _variable(
                "platform",
                "Platform",
                f'label_values(trackwatch_series_observed{{{_CONVERSION}, source="$source"}}, '
                f"platform)",
                multi=False,
            )
        )
        .with_variable(
            _variable(
                "step",
                "Step pair",
                f'label_values(trackwatch_series_observed{{{_CONVERSION}, source="$source", '
                f'platform="$platform"}}, event)',
                multi=True,
            )
        )
        .with_row(db.Row("Firing now"))
        .with_panel(
            table.Panel()
            .title("Conversion alerts firing")
            .description("Step pairs whose conversion model raises an alert now.")
            .datasource(_DS)
            .with_target(
                _query(
                    "max by (event, source, platform, kind) "
                    '(trackwatch_anomaly_firing{kind="conversion"}) == 1',
                    instant=True,
                )
            )
            .height(8)
            .span(24)
        )
        .with_row(db.Row("Conversion per step pair"))
        .with_panel(
            _band_panel(
                "$step ($source/$platform)",
                "Blue: observed conversion rate per window. Dashed: expected. Green band: "
                "normal interval (binomial/beta).",
                f'event="$step", source="$source", platform="$platform", {_CONVERSION}',
                "percentunit",
            )
            .repeat("step")
            .repeat_direction("h")
            .max_per_row(2)
        )
    )
    return _to_dict(dash)


def _to_dict(dash: db.Dashboard) -> dict[str, Any]:
    """Serialise through the SDK encoder, then number panels and targets deterministically."""
    data: dict[str, Any] = json.loads(json.dumps(dash.build(), cls=JSONEncoder))
    for number, panel in enumerate(data.get("panels", []), start=1):
        panel["id"] = number
    return data


def dashboards() -> dict[str, dict[str, Any]]:
    """File name (without folder) to dashboard model."""
    return {
        "overview.json": overview_dashboard(),
        "anomalies.json": anomalies_dashboard(),
        "funnels.json": funnels_dashboard(),
    }


# ---------------------------------------------------------------------------------------------
# Provisioning files


def datasources() -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "type": "prometheus",
                "uid": DATASOURCE_UID,
                "access": "proxy",
                "url": DATASOURCE_URL,
                "isDefault": True,
                "editable": False,
                "jsonData": {"timeInterval": "15s", "httpMethod": "POST"},
            }
        ],
    }


def dashboard_providers() -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "trackwatch",
                "orgId": 1,
                "folder": FOLDER,
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 60,
                "options": {
                    "path": DASHBOARDS_DIR_IN_CONTAINER,
                    "foldersFromFilesStructure": False,
                },
            }
        ],
    }


def contact_points() -> dict[str, Any]:
    """One webhook; Grafana fills the URL from the environment when it provisions."""
    return {
        "apiVersion": 1,
        "contactPoints": [
            {
                "orgId": 1,
                "name": CONTACT_POINT,
                "receivers": [
                    {
                        "uid": CONTACT_POINT,
                        "type": "webhook",
                        "settings": {"url": f"${{{WEBHOOK_URL_ENV}}}", "httpMethod": "POST"},
                        "disableResolveMessage": False,
                    }
                ],
            }
        ],
    }


def notification_policies() -> dict[str, Any]:
    """Everything to the webhook, one notification per alert and series; critical repeats sooner."""
    return {
        "apiVersion": 1,
        "policies": [
            {
                "orgId": 1,
                "receiver": CONTACT_POINT,
                "group_by": ["alertname", "reason", "source", "event", "kind"],
                "group_wait": "30s",
                "group_interval": "5m",
                "repeat_interval": "4h",
                "routes": [
                    {
                        "receiver": CONTACT_POINT,
                        "object_matchers": [["severity", "=", "critical"]],
                        "repeat_interval": "1h",
                    }
                ],
            }
        ],
    }


@dataclass(frozen=True)
class PromAlert:
    """One alerting rule of the Prometheus rules file."""

    name: str
    expr: str
    for_: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


def prometheus_alerts(rules_text: str) -> list[PromAlert]:
    """The alerting rules of a Prometheus rules file, in file order."""
    doc = yaml.safe_load(rules_text) or {}
    alerts = []
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            if "alert" in rule:
                alerts.append(
                    PromAlert(
                        name=rule["alert"],
                        expr=rule["expr"].strip(),
                        for_=str(rule.get("for", "0s")),
                        labels={k: str(v) for k, v in (rule.get("labels") or {}).items()},
                        annotations={k: str(v) for k, v in (rule.get("annotations") or {}).items()},
                    )
                )
    return alerts


def prometheus_recording_rules(rules_text: str) -> dict[str, str]:
    """Recording rule name to expression."""
    doc = yaml.safe_load(rules_text) or {}
    return {
        rule["record"]: rule["expr"]
        for group in doc.get("groups", [])
        for rule in group.get("rules", [])
        if "record" in rule
    }


# Grafana has no `query` template function: the anomaly rule gets the series' observed, expected
# and interval as extra queries labelled like the alert, and its own description.
def _series_join(metric: str) -> str:
    """`metric` of every series whose anomaly fires, labelled exactly like the alert query."""
    return (
        f"max by (event, source, platform, kind) ({metric})\n"
        "  and on (event, source, platform, kind)\n"
        "(max by (event, source, platform, kind) (trackwatch_anomaly_firing) == 1)"
    )


def _value_or_na(ref: str) -> str:
    """The value of query `ref` for this series: a count for volumes, a percentage for rates."""
    return (
        f'{{{{ with $values.{ref} }}}}{{{{ if eq $labels.kind "volume" }}}}'
        "{{ humanize .Value }}{{ else }}{{ humanizePercentage .Value }}{{ end }}"
        "{{ else }}n/a{{ end }}"
    )


EXTRA_QUERIES: dict[str, dict[str, str]] = {
    "TrackwatchAnomalyFiring": {
        "OBSERVED": _series_join("trackwatch_series_observed"),
        "EXPECTED": _series_join("trackwatch_series_expected"),
        "LOWER": _series_join("trackwatch_series_lower"),
        "UPPER": _series_join("trackwatch_series_upper"),
    }
}
ANNOTATION_OVERRIDES: dict[str, dict[str, str]] = {
    "TrackwatchAnomalyFiring": {
        "description": (
            "The {{ $labels.kind }} of '{{ $labels.event }}' from "
            "{{ $labels.source }}/{{ $labels.platform }} left its normal range: observed "
            + _value_or_na("OBSERVED")
            + ", expected "
            + _value_or_na("EXPECTED")
            + " (normal range "
            + _value_or_na("LOWER")
            + " to "
            + _value_or_na("UPPER")
            + ")."
        )
    }
}


def _grafana_annotation(text: str) -> str:
    """Prometheus `$value` is the query result; in Grafana it is the value of query A."""
    return re.sub(r"\$value\b", "$values.A.Value", text)


def _uid(alert: PromAlert) -> str:
    slug = re.sub(r"(?<!^)(?=[A-Z])", "-", alert.name.removeprefix("Trackwatch")).lower()
    reason = alert.labels.get("reason")
    return "tw-" + slug + (f"-{reason.replace('_', '-')}" if reason else "")


def _prometheus_query(ref: str, expr: str) -> dict[str, Any]:
    return {
        "refId": ref,
        "relativeTimeRange": {"from": 600, "to": 0},
        "datasourceUid": DATASOURCE_UID,
        "model": {
            "refId": ref,
            "datasource": {"type": "prometheus", "uid": DATASOURCE_UID},
            "expr": expr,
            "instant": True,
            "range": False,
            "intervalMs": 1000,
            "maxDataPoints": 43200,
        },
    }


def _condition(ref: str) -> dict[str, Any]:
    """1 for every series query A returns: a Prometheus alert expression returns only offenders."""
    return {
        "refId": ref,
        "datasourceUid": "__expr__",
        "model": {
            "refId": ref,
            "datasource": {"type": "__expr__", "uid": "__expr__"},
            "type": "math",
            "expression": "$A == $A",
        },
    }


def grafana_rule(alert: PromAlert) -> dict[str, Any]:
    """A Grafana-managed rule (file-provisioning format) evaluating the same expression."""
    extra = EXTRA_QUERIES.get(alert.name, {})
    annotations = {k: _grafana_annotation(v) for k, v in alert.annotations.items()}
    annotations.update(ANNOTATION_OVERRIDES.get(alert.name, {}))
    reason = alert.labels.get("reason")
    return {
        "uid": _uid(alert),
        "title": alert.name + (f" ({reason})" if reason else ""),
        "condition": CONDITION_REF,
        "data": [
            _prometheus_query("A", alert.expr),
            *(_prometheus_query(ref, expr) for ref, expr in extra.items()),
            _condition(CONDITION_REF),
        ],
        "noDataState": "OK",  # an alert expression returns nothing when all is well
        "execErrState": "Error",
        "for": alert.for_,
        "annotations": annotations,
        "labels": alert.labels,
        "isPaused": False,
    }


def alert_rules(rules_text: str) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": ALERT_GROUP,
                "folder": FOLDER,
                "interval": ALERT_INTERVAL,
                "rules": [grafana_rule(alert) for alert in prometheus_alerts(rules_text)],
            }
        ],
    }


# ---------------------------------------------------------------------------------------------
# Files


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as literal blocks, so the committed files read like the rules."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _yaml(data: dict[str, Any], header: str) -> str:
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=10_000)
    return f"# {header}\n# Generated by `trackwatch ops grafana`: do not edit by hand.\n{body}"


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def render(rules_text: str) -> dict[str, str]:
    """Every provisioning file, by path relative to deploy/grafana, as the exact text to commit."""
    files = {
        "provisioning/datasources/prometheus.yml": _yaml(datasources(), "Prometheus datasource"),
        "provisioning/dashboards/trackwatch.yml": _yaml(
            dashboard_providers(), "Dashboards from " + DASHBOARDS_DIR_IN_CONTAINER
        ),
        "provisioning/alerting/rules.yml": _yaml(
            alert_rules(rules_text),
            "Grafana-managed alert rules, derived from deploy/prometheus/rules.yml",
        ),
        "provisioning/alerting/contact-points.yml": _yaml(
            contact_points(), f"Webhook contact point; URL from ${WEBHOOK_URL_ENV}"
        ),
        "provisioning/alerting/policies.yml": _yaml(
            notification_policies(), "Notification policy tree"
        ),
    }
    for name, dash in dashboards().items():
        files[f"dashboards/{name}"] = _json(dash)
    return files


def write(out_dir: Path, files: dict[str, str]) -> list[Path]:
    written = []
    for rel, text in files.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_files(out_dir: Path, files: dict[str, str]) -> list[str]:
    """Relative paths that are missing, differ from `files`, or are not generated at all."""
    problems = []
    for rel, text in files.items():
        path = out_dir / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{rel}: differs from the generated version")
    for sub in ("provisioning", "dashboards"):
        for path in sorted((out_dir / sub).rglob("*")) if (out_dir / sub).is_dir() else []:
            rel = path.relative_to(out_dir).as_posix()
            if path.is_file() and rel not in files:
                problems.append(f"{rel}: not generated (stale file?)")
    return problems


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, variables included."""
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield panel.get("title", ""), target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, str) and query:
            yield f"variable {variable['name']}", query


# ---------------------------------------------------------------------------------------------
# Which metrics the queries name

# Series that Prometheus itself writes for every scrape target.
PROMETHEUS_BUILTIN_SERIES = frozenset({"up"})
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "unknown": ("",),
}
_GRAFANA_INTERVAL = re.compile(r"\$\{?__\w+\}?")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.+),\s*[A-Za-z_]\w*\s*\)\s*$", re.S)


def exposed_metric_names() -> set[str]:
    """Series names the trackwatch exporter can expose: what importing streams.metrics registers
    in prometheus_client's default registry, with the suffixes each metric type adds."""
    from prometheus_client import REGISTRY

    import streams.metrics  # noqa: F401  (registers the metrics)

    names = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def metric_names(query: str) -> set[str]:
    """Names of the series a PromQL expression (or a Grafana `label_values` query) selects.

    Grafana's interval macros are replaced by a duration first; dashboard variables only occur
    inside label matcher strings, where they do not matter. Raises ValueError for a query that is
    not valid PromQL or selects series without a fixed name.
    """
    expr = _GRAFANA_INTERVAL.sub("5m", query)
    match = _LABEL_VALUES.match(expr)
    if match:
        expr = match.group("selector")
    try:
        ast = promql_parser.parse(expr)
    except Exception as exc:  # the parser raises its own error types
        raise ValueError(f"not valid PromQL: {query!r}: {exc}") from exc
    names: set[str] = set()
    unnamed: list[str] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
                return
            fixed = [
                m.value
                for m in node.matchers.matchers
                if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal
            ]
            if fixed:
                names.update(fixed)
            else:
                unnamed.append(str(node))

    promql_parser.walk(ast, visit)
    if unnamed:
        raise ValueError(f"selector without a fixed metric name in {query!r}: {unnamed}")
    return names


def all_queries(rules_text: str) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for each query of the dashboards, Grafana alerts and Prometheus rules."""
    for file_name, dash in dashboards().items():
        for title, query in dashboard_queries(dash):
            yield f"dashboards/{file_name}: {title}", query
    for rule in alert_rules(rules_text)["groups"][0]["rules"]:
        for item in rule["data"]:
            if "expr" in item["model"]:
                yield f"grafana alert {rule['title']} ({item['refId']})", item["model"]["expr"]
    for name, expr in prometheus_recording_rules(rules_text).items():
        yield f"recording rule {name}", expr
    for alert in prometheus_alerts(rules_text):
        yield f"alerting rule {alert.name}", alert.expr


def unknown_metrics(rules_text: str) -> list[str]:
    """Problems: queries that are not PromQL or name series nobody exposes or records."""
    known = (
        exposed_metric_names()
        | set(prometheus_recording_rules(rules_text))
        | PROMETHEUS_BUILTIN_SERIES
    )
    problems = []
    for where, query in all_queries(rules_text):
        try:
            missing = sorted(metric_names(query) - known)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if missing:
            problems.append(f"{where}: unknown metric(s) {', '.join(missing)}")
    return problems
