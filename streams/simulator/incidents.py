"""Incidents the traffic simulator can inject, each with its ground-truth label (pure: no I/O but
reading the schedule file).

An `Incident` is a time window plus a kind and its parameters; `label()` is what the backtest
scores against: kind, the series it shows in (a subset of the window-record dimensions), start,
end and whether an alert is expected. An alert matches a label when its series contains every
key/value of the label's series (e.g. a ``drop`` labelled ``{"source": "ios"}`` is found by an
alert on any iOS event) and it overlaps the window.

Kinds and what they do to the generated traffic (sizes are the realistic defaults):

- ``spike``: bots or an unannounced campaign hit one event on one source: every such event
  brings Poisson(``factor`` - 1) extra copies from a few bot visitors (``factor`` 2-4).
- ``drop``: an app outage: a share (1 - ``keep``, keep 0.3-0.5) of the sessions of one source
  send nothing while it lasts (their server-side orders vanish too).
- ``disappeared``: a release (``app_version``, rolled out from ``start`` over ``rollout_hours``)
  stops sending one event on one platform; without ``app_version`` it is a web deploy that hits
  every session at once.
- ``new_event``: a release starts sending an unplanned event after a trigger event.
- ``violation_surge``: a release renames a property (``rename: {product_id: productId}``).
- ``conversion_up``: a tag fires the funnel's last step client-side on an earlier step
  (``trigger``), so buyers are counted twice and non-buyers once (new messageIds).
- ``conversion_down``: payments break on one platform: a share ``fail`` of its orders is lost.
- ``campaign``: an announced campaign multiplies the sessions of some sources by ``factor``;
  it must NOT alert and is exported as an annotation (see `detectors.annotations`).

Version-bound kinds stop at ``end`` (the fix ships by remote config), so the data differ from
normal only inside [start, end).

Schedule file (YAML)::

    incidents:
      - name: Product pages crawled by a bot
        kind: spike
        at: day 7 10:30        # N days after the simulation start (day 0 = first day), HH:MM UTC
        duration: 1h           # 45m, 1h30m, 2d
        event: Product Viewed
        source: web
        factor: 3
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from streams.simulator.sessions import Session, SimEvent

if TYPE_CHECKING:
    from random import Random

    from tracking_plan.model import Plan

KINDS = (
    "spike",
    "drop",
    "disappeared",
    "new_event",
    "violation_surge",
    "conversion_up",
    "conversion_down",
    "campaign",
)
CAMPAIGN_TAIL = timedelta(hours=1)
FUNNEL_FROM = "Checkout Started"
FUNNEL_TO = "Order Completed"

# kind -> (required params, optional params with defaults)
_PARAMS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "spike": (("event", "source"), {"factor": 3.0}),
    "drop": (("source",), {"keep": 0.4}),
    "disappeared": (("event", "source"), {"app_version": None, "rollout_hours": 6.0}),
    "new_event": (
        ("event", "source", "app_version"),
        {"trigger": "Product Viewed", "rate": 0.3, "rollout_hours": 6.0},
    ),
    "violation_surge": (
        ("event", "source", "app_version", "rename"),
        {"rollout_hours": 6.0},
    ),
    "conversion_up": (
        ("source",),
        {"trigger": "Payment Info Entered", "from_event": FUNNEL_FROM, "to_event": FUNNEL_TO},
    ),
    "conversion_down": (
        ("source",),
        {"fail": 0.5, "from_event": FUNNEL_FROM, "to_event": FUNNEL_TO},
    ),
    "campaign": (("sources",), {"factor": 2.5, "events": []}),
}
_COMMON = ("name", "kind", "at", "duration")
_RANGES = {
    "factor": (1.0, 20.0),
    "keep": (0.0, 1.0),
    "rate": (0.0, 1.0),
    "fail": (0.0, 1.0),
    "rollout_hours": (0.01, 24.0 * 30),
}


class IncidentError(ValueError):
    """An incident schedule that cannot be used; the message names the file, entry and fix."""


@dataclass(frozen=True)
class Incident:
    """One injected incident: `kind` in `KINDS`, UTC window [start, end), kind parameters and
    the series dimensions it shows in (`label_series`)."""

    kind: str
    start: datetime
    end: datetime
    params: Mapping[str, Any] = field(default_factory=dict)
    label_series: dict[str, str] = field(default_factory=dict)
    name: str = ""

    @property
    def expect_alert(self) -> bool:
        return self.kind != "campaign"

    @property
    def effect_end(self) -> datetime:
        """When the traffic is normal again: `end`, except for a campaign, whose visitors who
        arrived before `end` go on browsing (and buying) for up to `CAMPAIGN_TAIL`."""
        return self.end + CAMPAIGN_TAIL if self.kind == "campaign" else self.end

    def label(self) -> dict[str, Any]:
        """The ground truth the backtest scores against."""
        out = {
            "name": self.name or self.kind,
            "kind": self.kind,
            "series": dict(self.label_series),
            "start": _iso(self.start),
            "end": _iso(self.effect_end),
            "expect_alert": self.expect_alert,
        }
        if self.kind == "campaign":
            out["annotation"] = self.annotation()
        related = self.related()
        if related:
            out["related"] = related
        return out

    def related(self) -> list[dict[str, Any]]:
        """Other deviations this incident itself causes in the data (kind and series), besides
        the labelled one: an alert on one of them is about this incident, not a false alert
        (the backtest counts it neither as a find nor as false, and reports it apart).

        - conversion_up: the tag sends extra `to_event` calls from the client source (a volume
          spike of that event, which the plan may also flag as sent from the wrong source);
        - conversion_down: the lost orders are a drop of `to_event`;
        - disappeared of one app version: the event drops on its source while the release
          rolls out (before the version is seen as the one missing it);
        - drop of a source: its sessions' server-side orders vanish too (a drop of them);
        - spike: the extra copies come from bots who never go on to the next funnel step (a
          conversion drop from that event on that source).
        """
        p, src = self.params, self.params.get("source")
        where = {"source": src, "platform": self.label_series.get("platform", src)} if src else {}
        if self.kind == "conversion_up":
            return [
                {"kind": "spike", "series": {"event": p["to_event"]}},
                {"kind": "violation_surge", "series": {"event": p["to_event"]}},
            ]
        if self.kind == "conversion_down":
            return [{"kind": "drop", "series": {"event": p["to_event"]}}]
        if self.kind == "disappeared" and p.get("app_version"):
            return [{"kind": "drop", "series": {"event": p["event"], **where}}]
        if self.kind == "drop":
            return [{"kind": "drop", "series": {"event": FUNNEL_TO}}]
        if self.kind == "spike":
            return [{"kind": "conversion_down", "series": {"from_event": p["event"], **where}}]
        return []

    def annotation(self) -> dict[str, Any] | None:
        """For a campaign: its entry in the annotations file format, else None."""
        if self.kind != "campaign":
            return None
        return {
            "name": self.name or "campaign",
            "start": _iso(self.start),
            "end": _iso(self.effect_end),
            "sources": list(self.params.get("annotation_sources") or self.params["sources"]),
            "events": list(self.params.get("events") or []),
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------- building


def make_incident(
    kind: str,
    start: datetime,
    end: datetime,
    params: Mapping[str, Any] | None = None,
    *,
    name: str = "",
    plan: Plan | None = None,
) -> Incident:
    """Check `params` for `kind` (filling defaults) and derive the label series.

    With a `plan`, event and source names are checked against it and platforms come from it.
    Raises ValueError with what to change.
    """
    if kind not in _PARAMS:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be time-zone aware (UTC)")
    if end <= start:
        raise ValueError("the incident must end after it starts")
    required, optional = _PARAMS[kind]
    given = dict(params or {})
    missing = [p for p in required if p not in given]
    if missing:
        raise ValueError(f"{kind} needs {', '.join(missing)}")
    unknown = sorted(set(given) - set(required) - set(optional) - {"annotation_sources"})
    if unknown:
        allowed = ", ".join([*required, *optional])
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for {kind}; use {allowed}")
    full = {**optional, **given}
    _check_values(kind, full, plan)
    platform = _platform(full.get("source"), plan)
    series: dict[str, str] = {}
    if kind in ("conversion_up", "conversion_down"):
        series = {"from_event": full["from_event"], "to_event": full["to_event"]}
    elif kind != "campaign" and kind != "drop":
        series = {"event": full["event"]}
    if "source" in full:
        series["source"] = full["source"]
        series["platform"] = platform
    if full.get("app_version"):
        series["app_version"] = str(full["app_version"])
    if kind == "campaign":
        full["annotation_sources"] = _annotation_sources(full["sources"], plan)
    return Incident(kind, start, end, full, series, name)


def _platform(source: str | None, plan: Plan | None) -> str:
    if source is None:
        return ""
    if plan is not None and source in plan.sources:
        return plan.sources[source].platform or source
    return source


def _check_values(kind: str, params: dict[str, Any], plan: Plan | None) -> None:
    for key, (low, high) in _RANGES.items():
        if key in params:
            value = params[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{key} must be a number, got {value!r}")
            if not (low <= value <= high) or not math.isfinite(value):
                raise ValueError(f"{key} must be between {low:g} and {high:g}, got {value!r}")
    for key in ("event", "source", "app_version", "trigger", "from_event", "to_event"):
        if key in params and params[key] is not None:
            value = params[key]
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{key} must be a non-empty string, got {value!r}")
    if kind == "violation_surge":
        rename = params["rename"]
        if (
            not isinstance(rename, dict)
            or len(rename) != 1
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in rename.items())
        ):
            raise ValueError("rename must map one property to its new name, e.g. {list_id: listId}")
    if kind == "campaign":
        sources = params["sources"]
        if (
            not isinstance(sources, list)
            or not sources
            or not all(isinstance(s, str) for s in sources)
        ):
            raise ValueError("sources must be a non-empty list of source names")
        if not isinstance(params["events"], list):
            raise ValueError("events must be a list of event names")
    if plan is None:
        return
    sources = [params["source"]] if "source" in params else list(params.get("sources", []))
    for source in sources:
        if source not in plan.sources:
            raise ValueError(f"source {source!r} is not in the plan ({', '.join(plan.sources)})")
        if plan.sources[source].platform == "server" and kind not in ("spike", "drop"):
            raise ValueError(f"{kind} needs a client source, not {source!r}")
    for key in ("trigger", "from_event", "to_event"):
        if key in params and params[key] not in plan.events:
            raise ValueError(f"{key} {params[key]!r} is not an event of the plan")
    if kind == "new_event":
        if params["event"] in plan.events:
            raise ValueError(f"new_event {params['event']!r} is already in the plan")
    elif "event" in params and params["event"] not in plan.events:
        raise ValueError(f"event {params['event']!r} is not in the plan")


def _annotation_sources(sources: list[str], plan: Plan | None) -> list[str]:
    """A campaign also lifts server-side orders: annotate the server sources too."""
    extra = [] if plan is None else [n for n, s in plan.sources.items() if s.platform == "server"]
    return [*sources, *(s for s in extra if s not in sources)]


# ---------------------------------------------------------------------------------- schedule

_AT = re.compile(r"^\s*day\s+(\d{1,4})\s+(\d{1,2}):(\d{2})\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m(?:in)?)?\s*$", re.IGNORECASE)


def parse_at(text: str, start: datetime) -> datetime:
    """``"day 9 14:00"`` -> start's midnight + 9 days + 14:00 (UTC)."""
    match = _AT.match(str(text))
    if not match:
        raise ValueError(f"at {text!r} is not like 'day 9 14:00'")
    day, hour, minute = (int(g) for g in match.groups())
    if hour > 23 or minute > 59:
        raise ValueError(f"at {text!r}: no such time of day")
    midnight = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + timedelta(days=day, hours=hour, minutes=minute)


def parse_duration(text: Any) -> timedelta:
    """``"45m"``, ``"1h30m"``, ``"2d"`` (or a number of minutes) -> timedelta (> 0)."""
    if isinstance(text, int) and not isinstance(text, bool):
        minutes = text
    else:
        match = _DURATION.match(str(text))
        if not match or not any(match.groups()):
            raise ValueError(f"duration {text!r} is not like '45m', '1h30m' or '2d'")
        d, h, m = (int(g or 0) for g in match.groups())
        minutes = d * 1440 + h * 60 + m
    if minutes <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return timedelta(minutes=minutes)


def load_incidents(path: str | Path, start: datetime, plan: Plan | None = None) -> list[Incident]:
    """Read a schedule file (times relative to `start`); raise IncidentError naming the entry."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise IncidentError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise IncidentError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise IncidentError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("incidents"), list):
        raise IncidentError(f"{path}: expected a mapping with a list under 'incidents:'")
    out = []
    for index, entry in enumerate(data["incidents"], start=1):
        where = f"{path}: incident {index}"
        if not isinstance(entry, dict):
            raise IncidentError(f"{where}: expected a mapping, got {type(entry).__name__}")
        if isinstance(entry.get("name"), str):
            where += f" ({entry['name']})"
        missing = [k for k in ("kind", "at", "duration") if k not in entry]
        if missing:
            raise IncidentError(f"{where}: missing {', '.join(missing)}")
        params = {k: v for k, v in entry.items() if k not in _COMMON}
        try:
            begin = parse_at(entry["at"], start)
            finish = begin + parse_duration(entry["duration"])
            incident = make_incident(
                str(entry["kind"]),
                begin,
                finish,
                params,
                name=str(entry.get("name", "")),
                plan=plan,
            )
        except ValueError as exc:
            raise IncidentError(f"{where}: {exc}") from None
        out.append(incident)
    return out


# ---------------------------------------------------------------------------------- effects


class Effect:
    """How one incident changes the generated traffic. The simulator calls `apply` for each
    event whose time is inside [start, end) and emits what it returns instead of the event."""

    def __init__(self, incident: Incident, platform: str) -> None:
        self.incident = incident
        self.params = incident.params
        self.start = incident.start.timestamp()
        self.end = incident.end.timestamp()
        self.source = incident.params.get("source")
        self.platform = platform
        self.version = incident.params.get("app_version")

    def hits(self, session: Session) -> bool:
        """Whether this incident can touch events of `session` (platform and app version)."""
        if self.platform and session.platform != self.platform:
            return False
        return self.version is None or session.version == self.version

    def apply(self, sim: Any, session: Session, event: SimEvent, rng: Random) -> list[SimEvent]:
        return [event]


class _Spike(Effect):
    def hits(self, session: Session) -> bool:
        return True  # matched on event and source below (the source may be the server)

    def apply(self, sim: Any, session: Session, event: SimEvent, rng: Random) -> list[SimEvent]:
        if event.name != self.params["event"] or event.source != self.source:
            return [event]
        out = [event]
        for _ in range(_poisson(rng, self.params["factor"] - 1.0)):
            copy = event.copy()
            copy.t = min(event.t + rng.uniform(0.0, 30.0), self.end - 0.001)
            copy.user = sim.bot_user(self.platform, rng)
            out.append(copy)
        return out


class _Drop(Effect):
    def hits(self, session: Session) -> bool:
        return self.platform == "server" or session.platform == self.platform

    def apply(self, sim: Any, session: Session, event: SimEvent, rng: Random) -> list[SimEvent]:
        if self.platform == "server":  # the backend loses a share of its calls
            if event.source != self.source:
                return [event]
            return [] if rng.random() >= self.params["keep"] else [event]
        down = session.flags.get(self)
        if down is None:
            down = session.flags[self] = rng.random() >= self.params["keep"]
        return [] if down else [event]


class _Disappeared(Effect):
    def apply(self, sim: Any, session: Session, event: SimEvent, rng: Random) -> list[SimEvent]:
        return [] if event.name == self.params["event"] and event.source == self.source else [event]


class _NewEvent(Effect):
    def apply(self, sim: Any, session: Session, event: SimEvent, rng: Random) -> list[SimEvent]:
        if event.name != self.params["trigger"] or rng.random() >= self.params["rate"]:
            return [event]
        extra = event.copy()
        extra.name = self.params["event"]
        extra.call = "track"
        extra.t = min(event.t + rng.uniform(1.0, 20.0), self.end - 0.001)
        product = event.props.get("product_id")
        extra.props = {"product_id": product} if product else {}
        extra.raw = True
        return [event, extra]


class _ViolationSurge(Effect):
    def apply(self, sim: Any, session: Session, event: SimEvent, rng: Random) -> list[SimEvent]:
        if event.name == self.params["event"] and event.source == self.source:
            ((old, new),) = self.params["rename"].items()
            if old in event.props:
                props = dict(event.props)
                props[new] = props.pop(old)
                event.props = props
                event.raw = True  # deliberately invalid: sent as is
        return [event]


class _ConversionUp(Effect):
    def apply(self, sim: Any, session: Session, event: SimEvent, rng: Random) -> list[SimEvent]:
        if event.name != self.params["trigger"] or event.source != self.source:
            return [event]
        fired = event.copy()
        fired.name = self.params["to_event"]
        fired.call = "track"
        fired.t = min(event.t + rng.uniform(0.5, 3.0), self.end - 0.001)
        fired.props = sim.order_properties(session, rng)
        return [event, fired]


class _ConversionDown(Effect):
    def hits(self, session: Session) -> bool:
        return session.platform == self.platform

    def apply(self, sim: Any, session: Session, event: SimEvent, rng: Random) -> list[SimEvent]:
        if event.name == self.params["to_event"] and rng.random() < self.params["fail"]:
            return []
        return [event]


class _Campaign(Effect):
    """Campaigns add session arrivals (the simulator runs them), they change no event."""

    def hits(self, session: Session) -> bool:
        return False


_EFFECTS: dict[str, type[Effect]] = {
    "spike": _Spike,
    "drop": _Drop,
    "disappeared": _Disappeared,
    "new_event": _NewEvent,
    "violation_surge": _ViolationSurge,
    "conversion_up": _ConversionUp,
    "conversion_down": _ConversionDown,
    "campaign": _Campaign,
}


def make_effect(incident: Incident, platform: str) -> Effect:
    """The effect object of `incident`; `platform` is its source's platform."""
    return _EFFECTS[incident.kind](incident, platform)


def _poisson(rng: Random, mean: float) -> int:
    """A Poisson draw (Knuth; `mean` is small here)."""
    if mean <= 0:
        return 0
    limit = math.exp(-mean)
    k, p = 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k
