"""Incidents: the lifecycles that fired, grouped into alerts. Pure, deterministic.

The detection engine (`detectors.engine`) steps one lifecycle per series × direction (and per
slice test); when one fires or resolves it tells `Incidents`, which
- joins it to an open incident of the same group (metric and direction) about a compatible
  series begun at most `merge_minutes` before, or about events of the same source (or the same
  events elsewhere) begun within `together_minutes`; a total to an open incident of one of its
  slices, however old; or to an incident of a related group about the same trouble (`RELATED`);
- otherwise opens one (reopening a compatible one resolved within `reopen_minutes`: same id);
- widens an incident to what its members share, and upgrades it to a stronger kind
  (`PRECEDENCE`: kinds only move up, so an alert never flaps between them);
- resolves an incident when its last member has calmed down, and keeps it a while for reopening;
- turns an incident into the `Anomaly` record the engine emits, told by its owner's evidence.

It keeps the open incidents (`open`) and the recently resolved ones (`recent`); the engine saves
both in its snapshots (`DetectionEngine.to_state`) and reads the series it owns through a lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from detectors.attribution import attribute, notable
from detectors.engine_config import PRECEDENCE, RELATED, RISES, SEQ, SEQUENTIAL, EngineConfig
from detectors.engine_state import Incident, Series
from detectors.explain import Evidence, describe, explain
from detectors.lifecycle import alert_id
from detectors.records import Anomaly
from detectors.rollup import compatible, series_key
from detectors.worth import span_says_more

# a resolved incident kept for reopening: (id, group, series, started, ended)
Recent = tuple[str, str, dict[str, str], float, float]


def group_of(s: Series, family: str) -> str:
    """The incident group of a lifecycle: metric and direction (an outage of a source's
    active users is a drop of its volume; a slice test's is its family's)."""
    if family == "new":
        return "new"
    if family.startswith(SEQ):
        return SEQUENTIAL[family[len(SEQ) :].split(":", 1)[0]][0]
    metric = "volume" if s.metric == "activity" else s.metric
    return f"{metric}:{family}"


def _traffic_lost(group: str, one: dict[str, str], other: dict[str, str]) -> bool:
    """Are these two falls the totals of different events (no source named) or of anything
    on no source at all: the traffic of every source falling at once?"""
    if group != "volume:down" or "source" in one or "source" in other:
        return False
    return _events(one) != _events(other)


def _events(series: dict[str, str]) -> set[str]:
    """The events a series names (its event, or its funnel steps)."""
    return {series[k] for k in ("event", "from_event", "to_event") if k in series}


def _iso(ts: float) -> str:
    """UTC epoch seconds as ISO 8601 with a Z."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


class Incidents:
    """The open incidents and the recently resolved ones: lifecycles that fire join or open
    one, lifecycles that calm down resolve it, and each change is told as an `Anomaly`."""

    def __init__(
        self,
        config: EngineConfig,
        lookup: Callable[[str], Series | None],
        window: Callable[[], float],
    ) -> None:
        """`lookup` finds a series by key (the engine's), `window` gives the window length in
        seconds (both asked when needed: the engine learns its window from its first records)."""
        self.config = config
        self._lookup = lookup
        self._window = window
        self.open: dict[str, Incident] = {}  # open incidents by id
        self.recent: list[Recent] = []  # recently resolved incidents, for reopening

    def of(self, member: tuple[str, str]) -> Incident | None:
        """The open incident a lifecycle (series key, family) is part of."""
        return next((i for i in self.open.values() if member in i.members), None)

    def busy(self) -> set[str]:
        """The keys of the series with a lifecycle in an open incident."""
        return {m[0] for inc in self.open.values() for m in inc.members}

    def active(self, last_ts: float | None) -> list[Anomaly]:
        """The alerts firing now (`last_ts`: the start of the last window processed)."""
        result = []
        for inc in self.open.values():
            anomaly = self.anomaly(inc, "firing", (last_ts or inc.started) + self._window())
            if anomaly is not None:
                result.append(anomaly)
        return result

    def add(self, inc: Incident, at: float, out: list[Anomaly]) -> None:
        """Open an incident the engine made itself (a new event's) and tell it firing."""
        self.open[inc.id] = inc
        self._emit(inc, "firing", at, out)

    def expire(self, inc: Incident, at: float, out: list[Anomaly]) -> None:
        """Resolve an incident at `at` without keeping it for reopening (a new event's, once
        held for long enough)."""
        self._emit(inc, "resolved", at, out)
        del self.open[inc.id]

    def _find(
        self, group: str, series: dict[str, str], since: float | None = None
    ) -> Incident | None:
        """An open incident of `group` about a compatible series (that began no more than
        `merge_minutes` before `since`, when given: an old alert does not swallow a new one),
        or about another event of the same source that began at most `together_minutes` from
        `since` (one burst of a source's traffic moves several of its events at once)."""
        limit = self.config.merge_minutes * 60.0
        for inc in self.open.values():
            if inc.group != group:
                continue
            if not compatible(inc.series, series):
                if since is None or not self._together(inc, series, since):
                    continue
                return inc
            if since is None or since - inc.started <= limit:
                return inc
        return None

    def _together(self, inc: Incident, series: dict[str, str], since: float) -> bool:
        """Did `series` start deviating with `inc`, on the same source (a burst of its traffic)
        or about the same events (one event breaking on several versions or sources at once)?"""
        limit = self.config.together_minutes * 60.0
        if limit <= 0.0 or abs(since - inc.started) > limit:
            return False
        source = series.get("source")
        if source is not None and inc.series.get("source") == source:
            return True
        # the same events (or, for whole sources, none) on several versions or sources at once
        if _events(series) == _events(inc.series):
            return True
        # several events' totals falling at once: the traffic itself is lost (one alert)
        return _traffic_lost(inc.group, inc.series, series)

    def _open_slice(self, group: str, series: dict[str, str]) -> Incident | None:
        """An open incident of `group` on a slice of `series` (its keys and more: one source of
        this event), however old: a total moving the way one of its open slices already does
        is that slice's incident (a new one elsewhere still fires on its own slice). Traffic
        that names no event (a source's active users, or everyone's) is no event's total: its
        outage is not an old incident about one event of one release."""
        if not _events(series):
            return None
        for inc in self.open.values():
            if inc.group == group and series.items() < inc.series.items():
                return inc
        return None

    def fire(
        self,
        ts: float,
        window: float,
        s: Series,
        family: str,
        kind: str,
        series: dict[str, str],
        out: list[Anomaly],
    ) -> None:
        """A lifecycle fired: join a compatible open incident (or a related one: the same
        trouble seen on another metric), or open (or reopen) one."""
        group = group_of(s, family)
        member = (s.key, family)
        since = s.tracks[family].lifecycle.started or ts
        inc = self._find(group, series, since=since)
        if inc is None:
            inc = self._open_slice(group, series)
        related = False
        if inc is None:
            inc = self._related(group, series, since)
            related = inc is not None
        if inc is not None:
            if member not in inc.members:
                inc.members.append(member)
            if self._upgrade(inc, ts, window, s, family, kind, group, series, out):
                return
            if related:  # the same trouble seen on another metric: worth telling
                self._emit(inc, "firing", ts + window, out)
            else:
                self._widen(inc, series, ts + window, out)
            return
        started = since
        reopen_limit = self.config.lifecycle.reopen_minutes * 60.0
        inc_id = alert_id(series_key(s.metric, series), group, started)
        for i, (old_id, old_group, old_series, old_started, ended) in enumerate(self.recent):
            if old_group == group and compatible(old_series, series) and ts - ended <= reopen_limit:
                inc_id, started = old_id, old_started
                del self.recent[i]
                break
        sign = -1 if group.endswith(":down") else 1
        inc = Incident(inc_id, kind, group, member, series, started, [member], sign)
        self.open[inc_id] = inc
        self._emit(inc, "firing", ts + window, out)

    def _related(self, group: str, series: dict[str, str], since: float) -> Incident | None:
        """An open incident of a related group about the same trouble (`RELATED`): on the same
        source (or every source), naming the same event if both name one, begun at most
        `together_minutes` after and `merge_minutes` before `since`. A conversion that falls
        while the source's events are missing, a purchase fired twice and the conversion it
        inflates, an event quarantined by the plan and missing from the valid traffic: one
        alert each, not two."""
        cfg = self.config
        for inc in self.open.values():
            if inc.group not in RELATED.get(group, ()):
                continue
            if not (-cfg.together_minutes * 60.0 <= since - inc.started
                    <= cfg.merge_minutes * 60.0):  # fmt: skip
                continue
            if not compatible(inc.series, series):
                continue
            mine, theirs = _events(series), _events(inc.series)
            if mine and theirs and not mine & theirs:
                continue
            return inc
        return None

    def _upgrade(
        self,
        inc: Incident,
        ts: float,
        window: float,
        s: Series,
        family: str,
        kind: str,
        group: str,
        series: dict[str, str],
        out: list[Anomaly],
    ) -> bool:
        """A member of a stronger kind (`PRECEDENCE`: a silence over a drop, broken tracking
        over what it causes) makes the incident its own: owner, kind and series. Kinds only
        ever move up, so an incident never flaps between them. True if it did."""
        if PRECEDENCE.get(kind, 0) <= PRECEDENCE.get(inc.kind, 0):
            return False
        if inc.group == "volume:down" and not _events(inc.series) and kind == "disappeared":
            return False  # the traffic lost: one event silent in it is part of the drop
        inc.kind = kind
        inc.owner = (s.key, family)
        inc.group = group
        inc.series = dict(series)
        if inc.owner not in inc.members:
            inc.members.append(inc.owner)
        self._emit(inc, "firing", ts + window, out)
        return True

    def _widen(self, inc: Incident, series: dict[str, str], at: float, out: list[Anomaly]) -> None:
        """A member about the same events on another version or source: the incident is about
        what they share (every version of the event breaking is the event's alert)."""
        if _events(series) != _events(inc.series):
            if _traffic_lost(inc.group, inc.series, series):
                # several events at once: a fall of the traffic, told as the drop it is (the
                # one exception to kinds only moving up: it is no one event's disappearance)
                common = {k: v for k, v in inc.series.items() if series.get(k) == v}
                if common != inc.series or inc.kind != "drop":
                    inc.series, inc.kind = common, "drop"
                    self._emit(inc, "firing", at, out)
            return
        common = {k: v for k, v in inc.series.items() if series.get(k, v) == v}
        if common != inc.series:
            inc.series = common
            self._emit(inc, "firing", at, out)

    def to_disappeared(
        self,
        ts: float,
        window: float,
        s: Series,
        family: str,
        series: dict[str, str],
        out: list[Anomaly],
    ) -> None:
        """A drop whose series (or one of its slices) went silent becomes `disappeared`."""
        group = group_of(s, family)
        inc = self._find(group, series)
        if inc is not None:
            self._upgrade(inc, ts, window, s, family, "disappeared", group, series, out)

    def resolve(self, ts: float, window: float, s: Series, family: str, out: list[Anomaly]) -> None:
        """A lifecycle calmed down: the incident resolves when its last member has."""
        member = (s.key, family)
        inc = self.of(member)
        if inc is None:
            return
        inc.members.remove(member)
        if inc.members:
            return
        ended = s.tracks[family].lifecycle.ended or ts
        owner = self._lookup(inc.owner[0])
        if owner is None or inc.owner[1] not in owner.tracks:
            owner_ref = (s, family)
        else:
            owner_ref = (owner, inc.owner[1])
        self._emit(inc, "resolved", ended, out, owner_ref)
        del self.open[inc.id]
        self.recent.append((inc.id, inc.group, inc.series, inc.started, ended))
        if len(self.recent) > 1000:
            del self.recent[:500]

    def _emit(
        self,
        inc: Incident,
        state: str,
        at: float,
        out: list[Anomaly],
        owner_ref: tuple[Series, str] | None = None,
    ) -> None:
        """Tell an incident's state at `at`: its `Anomaly` joins `out` (none when its owner
        is gone)."""
        anomaly = self.anomaly(inc, state, at, owner_ref)
        if anomaly is not None:
            out.append(anomaly)

    def anomaly(
        self,
        inc: Incident,
        state: str,
        at: float,
        owner_ref: tuple[Series, str] | None = None,
    ) -> Anomaly | None:
        """The alert record of an incident in `state` at `at`, told by its owner's evidence
        (`owner_ref`, or the owner as it is now; None when that series or track is gone)."""
        if owner_ref is not None:
            s, family = owner_ref
        else:
            found = self._lookup(inc.owner[0])
            if found is None:
                return None
            s, family = found, inc.owner[1]
        track = s.tracks.get(family)
        if track is None:
            return None
        observed, expected, denominator, until = track.hot
        start = track.lifecycle.started or inc.started
        minutes = (until - start) / 60.0
        if track.told is not None:  # a slice test: what it gathered since its onset
            observed, expected, denominator, minutes = track.told
        elif until <= start:  # not gathered window by window (a new event)
            observed, expected, denominator = track.obs, track.exp, track.den
            minutes = track.windows * self._window() / 60.0
        elif track.span_windows > 0 and span_says_more(s, track, observed, expected):
            # as in `worth_an_alert`: a sparse rate is told on the span that made it significant
            observed, expected = track.span_obs, track.span_exp
            denominator, minutes = track.span_den, track.span_windows * self._window() / 60.0
        if inc.kind == "disappeared" and track.told is None:
            observed, expected = 0.0, track.silent_expected
            minutes = track.silent_windows * self._window() / 60.0
        attribution = attribute(track.parts, inc.direction, self.config.attribution_top)
        margin = 0.0 if inc.kind == "new_event" else 0.15
        evidence = Evidence(
            kind=inc.kind,
            series=inc.series,
            started=inc.started,
            minutes=minutes,
            observed=observed,
            expected=expected,
            denominator=denominator,
            planned=s.planned,
            codes=track.codes,
            # a slice test's versions are each judged by their own test: no usual share to beat
            attribution=attribution
            if track.told is not None
            else notable(track.parts, attribution, margin=margin),
            ended=at if state == "resolved" else None,
            echo=self._echo(inc) if inc.kind == "conversion_up" else None,
            cause=track.cause or ("activity" if s.metric == "activity" else ""),
            inflated=self._inflated(inc) if inc.kind == "spike" else None,
        )
        obs, exp, lo, up = track.last
        return Anomaly(
            id=inc.id,
            kind=inc.kind,  # type: ignore[arg-type]
            series=dict(inc.series),
            state=state,  # type: ignore[arg-type]
            started_at=_iso(inc.started),
            updated_at=_iso(at),
            ended_at=_iso(at) if state == "resolved" else None,
            observed=float(obs),
            expected=float(exp),
            lower=float(lo),
            upper=float(up),
            score=float(track.peak),
            explanation=explain(evidence),
            attribution=attribution,
        )

    def _inflated(self, inc: Incident) -> str | None:
        """For a spike: the conversion that rose with it (a member of the incident), named as
        the sentences name it; None when there is none."""
        for key, family in inc.members:
            s = self._lookup(key)
            if s is not None and s.metric == "conversion" and group_of(s, family).endswith(":up"):
                steps = {k: s.series[k] for k in ("from_event", "to_event") if k in s.series}
                return describe("conversion", steps)
        return None

    def _echo(self, inc: Incident) -> tuple[str, float] | None:
        """For a conversion rise: the earliest rise of the last step's own events on its source
        (or over all sources), open or resolved, from `echo_hours` before it began."""
        event, source = inc.series.get("to_event"), inc.series.get("source")
        since = inc.started - self.config.echo_hours * 3600.0
        rises = [(i.group, i.series, i.started) for i in self.open.values()]
        rises += [(group, series, started) for _, group, series, started, _ in self.recent]
        found = [
            (started, group)
            for group, series, started in rises
            if group in RISES
            and series.get("event") == event
            and series.get("source", source) == source
            and started >= since
        ]
        if not found:
            return None
        started, group = min(found)
        return RISES[group], started
