"""What the detection engine (`detectors.engine`) keeps, and saves in its snapshots: per series
its model and tracks (`Series`), per series × direction the lifecycle and the evidence since its
incident began (`Track`), and the open incidents (`Incident`). Plain data with JSON-safe state.
"""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from detectors.attribution import SliceBaseline
from detectors.base import SeriesModel
from detectors.lifecycle import Lifecycle
from detectors.rollup import COUNTS
from detectors.silence import Silence

# the longest span of windows before `pending` a rise's evidence starts from: the volume model's
# scales up to a quarter of an hour (its hour-long span is left out: an hour's excess is often
# the model's own error, as `detectors.worth` says of volumes)
LEAD_WINDOWS = 15


def _silence_from_state(state: list | None) -> Silence | None:
    """A saved silence test (one saved before arrivals were told apart starts afresh)."""
    if not state or not isinstance(state[0], list):
        return None
    return Silence.from_state(state)


@dataclass(slots=True)
class Track:
    """One series × direction: its lifecycle and the evidence gathered since the incident began."""

    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    obs: float = 0.0  # volume: counts; rates: numerators
    exp: float = 0.0  # volume: expected counts; rates: expected numerators
    den: float = 0.0
    windows: int = 0
    peak: float = 0.0
    last: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])  # obs, exp, lo, up
    codes: dict[str, int] = field(default_factory=dict)
    parts: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    fired_at: float | None = None
    silent_windows: int = 0  # longest run of empty windows seen while active
    silent_expected: float = 0.0  # events expected during that run
    muted: bool = False  # its level shift was accepted; quiet until the score is calm
    # the model's most deviating span seen while active (it may have begun before `pending`):
    # sums, for rates the denominators too, and its length in windows
    span_obs: float = 0.0
    span_exp: float = 0.0
    span_den: float = 0.0
    span_windows: int = 0
    # obs, exp, den up to the last window at the firing level, and that window's end: what the
    # sentence tells (the windows an alert lingers in before it resolves would water a burst
    # down to "normal"; a sparse rate has no record in many windows: time, not windows, counts)
    hot: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    # slice tests: the evidence as told (observed, expected, denominator, minutes), and what the
    # test is about ("repeat", "pair:<step before>", "bad", "gone", "conversion")
    told: list[float] | None = None
    cause: str = ""
    users: float = 0.0  # volumes: the users arriving in its windows (visits), summed
    # volumes: the other events of its scope (its source, or all events) in its windows, and
    # what their models expected: a rise they all share is the traffic's (`_carried`)
    ctx_obs: float = 0.0
    ctx_exp: float = 0.0
    ctx_own: float = 0.0  # its own expected counts, on the same footing (a window's lag)
    # refused as a level shift while its last step was broken: a breakage's, never accepted
    vetoed: bool = False

    def reset_evidence(self) -> None:
        self.obs = self.exp = self.den = self.peak = self.silent_expected = self.users = 0.0
        self.ctx_obs = self.ctx_exp = self.ctx_own = 0.0
        self.span_obs = self.span_exp = self.span_den = 0.0
        self.windows = self.silent_windows = self.span_windows = 0
        self.codes, self.parts = {}, {}
        self.last = [0.0, 0.0, 0.0, 0.0]
        self.hot = [0.0, 0.0, 0.0, 0.0]
        self.fired_at = None
        self.vetoed = False

    def to_state(self) -> dict:
        return {
            "lifecycle": self.lifecycle.to_state(),
            "obs": self.obs,
            "exp": self.exp,
            "den": self.den,
            "windows": self.windows,
            "peak": self.peak,
            "last": self.last,
            "codes": self.codes,
            "parts": self.parts,
            "fired_at": self.fired_at,
            "silent_windows": self.silent_windows,
            "silent_expected": self.silent_expected,
            "muted": self.muted,
            "span_obs": self.span_obs,
            "span_exp": self.span_exp,
            "span_den": self.span_den,
            "span_windows": self.span_windows,
            "hot": self.hot,
            "told": self.told,
            "cause": self.cause,
            "users": self.users,
            "ctx_obs": self.ctx_obs,
            "ctx_exp": self.ctx_exp,
            "ctx_own": self.ctx_own,
            "vetoed": self.vetoed,
        }

    @classmethod
    def from_state(cls, s: dict) -> Track:
        rest = {k: v for k, v in s.items() if k != "lifecycle"}
        return cls(lifecycle=Lifecycle.from_state(s["lifecycle"]), **rest)


@dataclass(slots=True)
class Series:
    """Everything the engine keeps about one modelled series."""

    key: str
    metric: str
    series: dict[str, str]
    model: SeriesModel
    baseline: SliceBaseline
    first_seen: float
    last_active: float
    planned: bool = True
    is_event_total: bool = False
    tracks: dict[str, Track] = field(default_factory=dict)
    zero_run: int = 0
    zero_expected: float = 0.0
    zero_since: float | None = None
    recent: deque = field(default_factory=deque)  # [ts, count] of the last windows (new_event)
    # volumes: the evidence of the last windows (packed doubles: ts, count, expected, users,
    # context observed, context expected, own expected), so that a rise starts from the windows
    # that made it
    lead: deque = field(default_factory=lambda: deque(maxlen=LEAD_WINDOWS))
    announced: bool = False
    ew_events: float = 0.0  # EW events and distinct users per window (burstiness)
    ew_users: float = 0.0
    ew_arrivals: float = 0.0  # EW users per window who were not there the window before
    # longest normal run of empty windows, by expected count per window (bucket = log2(exp+1))
    quiet: list[float] = field(default_factory=lambda: [0.0] * 12)
    last: tuple[float, ...] | None = None  # observed, expected, lower, upper, score
    last_weight: float = 0.0  # that window's weight (rates: users); for charts, not saved
    # EW traffic (events of all kinds on the series' source) per slice value, e.g. app_version:
    # with `baseline`, what each version usually sends of this event per event it sends
    traffic: SliceBaseline = field(default_factory=SliceBaseline)
    silence: Silence | None = None  # activity series: the evidence that its users fell silent

    @property
    def gone(self) -> bool:
        return self.zero_since is not None

    @property
    def burst(self) -> float:
        """Usual events per user and window (≥ 1): how many events one unit of evidence is."""
        if self.metric not in COUNTS or self.ew_users <= 0:
            return 1.0
        return max(1.0, self.ew_events / self.ew_users)

    @property
    def per_arrival(self) -> float:
        """Usual events per arriving user (≥ 1): a visit's events over the minutes it spans,
        so the expected arrivals of an expected count are that count over this."""
        if self.metric not in COUNTS or self.ew_arrivals <= 0:
            return self.burst
        return max(1.0, self.ew_events / self.ew_arrivals)

    def to_state(self) -> dict:
        return {
            "key": self.key,
            "metric": self.metric,
            "series": self.series,
            "model": self.model.to_state(),
            "baseline": self.baseline.to_state(),
            "first_seen": self.first_seen,
            "last_active": self.last_active,
            "planned": self.planned,
            "is_event_total": self.is_event_total,
            "tracks": {f: t.to_state() for f, t in self.tracks.items()},
            "zero_run": self.zero_run,
            "zero_expected": self.zero_expected,
            "zero_since": self.zero_since,
            "recent": [list(x) for x in self.recent],
            "lead": [list(x) for x in self.lead],
            "announced": self.announced,
            "ew_events": self.ew_events,
            "ew_users": self.ew_users,
            "ew_arrivals": self.ew_arrivals,
            "quiet": self.quiet,
            "last": list(self.last) if self.last is not None else None,
            "traffic": self.traffic.to_state(),
            "silence": self.silence.to_state() if self.silence is not None else None,
        }

    @classmethod
    def from_state(cls, s: dict, model_cls: Any) -> Series:
        return cls(
            key=s["key"],
            metric=s["metric"],
            series=s["series"],
            model=model_cls.from_state(s["model"]),
            baseline=SliceBaseline.from_state(s["baseline"]),
            first_seen=s["first_seen"],
            last_active=s["last_active"],
            planned=s["planned"],
            is_event_total=s["is_event_total"],
            tracks={f: Track.from_state(t) for f, t in s["tracks"].items()},
            zero_run=s["zero_run"],
            zero_expected=s["zero_expected"],
            zero_since=s["zero_since"],
            recent=deque(s["recent"]),
            lead=deque((array("d", x) for x in s.get("lead", ())), maxlen=LEAD_WINDOWS),
            announced=s["announced"],
            ew_events=s["ew_events"],
            ew_users=s["ew_users"],
            ew_arrivals=s.get("ew_arrivals", 0.0),
            quiet=s["quiet"],
            last=tuple(s["last"]) if s["last"] is not None else None,
            traffic=SliceBaseline.from_state(s["traffic"]) if "traffic" in s else SliceBaseline(),
            silence=_silence_from_state(s.get("silence")),
        )


@dataclass(slots=True)
class Incident:
    """One alert: the series that owns it and the lifecycles (series × direction) in it."""

    id: str
    kind: str
    group: str  # metric:direction, or "new"
    owner: tuple[str, str]  # (series key, family)
    series: dict[str, str]
    started: float
    members: list[tuple[str, str]]
    direction: int

    def to_state(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "group": self.group,
            "owner": list(self.owner),
            "series": self.series,
            "started": self.started,
            "members": [list(m) for m in self.members],
            "direction": self.direction,
        }

    @classmethod
    def from_state(cls, s: dict) -> Incident:
        return cls(
            id=s["id"],
            kind=s["kind"],
            group=s["group"],
            owner=(s["owner"][0], s["owner"][1]),
            series=s["series"],
            started=s["started"],
            members=[(m[0], m[1]) for m in s["members"]],
            direction=s["direction"],
        )
