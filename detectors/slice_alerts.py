"""Slice alerts: the slice tests' verdicts turned into lifecycle steps and incidents. Pure,
deterministic.

Each closed window the detection engine (`detectors.engine`) hands its records to
`SliceAlerts.window`, which
- feeds them to the slice tests: `SliceFeed` reads the observations off the records (counted in
  the event's usual events per user on its source; annotated series are not observed), and
  `SliceWatch` steps the tests and gives the verdicts of those alarmed or just calmed;
- steps, per verdict, a lifecycle on a track of the series the test is about (`_target`: a
  version's missing event on the event's volume on that source, its broken events on the event's
  violations, a funnel step on the step's conversion on that source), named after the test
  (`seq:family:subject:source:value`). It fires at once when hot, its incident starts at the
  test's onset, and its evidence is what the test gathered since (`Track.told`);
- lets a test take a change as its new normal when the series accepted it already or its users
  moved to a newer release, never while a funnel step's last step is broken (the engine's
  `broken`), and drops a pair's verdict while its first step is in an open spike (a flood);
- tells the engine's incidents (`detectors.incidents`) of each track that fires or resolves;
  a track with no verdict has calmed down, and is forgotten once idle.

It keeps the tests (`watch`), the batch in progress (`feed`), the platform of each source
(`platforms`) and the open tracks (`open`); the engine saves them in its snapshots
(`DetectionEngine.to_state`, keys "slices", "feed", "platforms" and "seq_open").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from detectors.annotations import Annotation, is_annotated
from detectors.engine_config import SEQ, SEQUENTIAL, EngineConfig
from detectors.engine_state import Series, Track
from detectors.incidents import Incidents
from detectors.lifecycle import Transition
from detectors.records import WITHIN, Anomaly, WindowRecord
from detectors.rollup import MISSING, series_key
from detectors.slice_feed import SliceFeed, pair_steps
from detectors.slices import FAMILIES as FAMILY_SPECS
from detectors.slices import MEASURES, WHOLE, Observation, SliceWatch, Verdict

CONVERSION_FAMILIES = MEASURES["funnel"]  # a funnel step's tests


def _cause(v: Verdict) -> str:
    """The test behind a slice alert, for its sentence (`detectors.explain`): "pair:" and the
    pair's first step, "conversion", or the test's family."""
    if v.family == "pair_gone":
        return "pair:" + pair_steps(v.subject)[0]
    if v.family in CONVERSION_FAMILIES:
        return "conversion"
    return v.family


class SliceAlerts:
    """The slice tests and the alerts of their verdicts: each window's records in, lifecycle
    steps on the series' slice tracks and their incidents out."""

    def __init__(
        self,
        config: EngineConfig,
        lookup: Callable[[str], Series | None],
        incidents: Incidents,
        arrivals: Callable[[WindowRecord], float],
        superseded: Callable[[dict[str, str], float], bool],
        broken: Callable[[str | None, str | None], bool],
    ) -> None:
        """`lookup` finds a series by key (the engine's), `incidents` are the engine's,
        `arrivals` gives a volume record's events sent, `superseded` whether a series' users
        moved to a newer release since a time (`Releases.superseded`), `broken` whether an
        event is missing or breaking the plan in an open incident on a source (or on any)."""
        self.config = config
        self._lookup = lookup
        self._incidents = incidents
        self._arrivals = arrivals
        self._superseded = superseded
        self._broken = broken
        self.watch = SliceWatch(config.slices)
        self.feed = SliceFeed(config.slice_batch_windows)
        self.platforms: dict[str, str] = {}  # source -> platform (from the records)
        self.open: set[tuple[str, str]] = set()  # (series key, track) of open slice tests

    def window(self, ts: float, window: float, records: list[WindowRecord],
               near: list[Annotation], out: list[Anomaly]) -> None:  # fmt: skip
        """Feed this window to the sequential slice tests (`detectors.slices`) and step the
        alerts of their verdicts; a test's track that got no verdict has calmed down. `near`:
        the annotations this window's checks can touch."""
        for rec in records:
            source, platform = rec.series.get("source"), rec.series.get("platform")
            known = source is None or platform is None or source in self.platforms
            if not known and len(self.platforms) < 1000:
                self.platforms[source] = platform
        quiet = None
        if near:
            tail = self.config.annotation_tail_minutes * 60.0

            def quiet(series: dict[str, str]) -> bool:
                return is_annotated(near, series, ts - tail, ts + window)

        observations = self.feed.add(records, self._arrivals, self._units,
                                     quiet or (lambda series: False))  # fmt: skip
        stepped: set[tuple[str, str]] = set()
        for verdict in self.watch.window(ts, window, observations, self._may_accept):
            stepped.add(self._on_verdict(ts, window, verdict, out))
        for key, name in sorted(self.open - stepped):
            s = self._lookup(key)
            track = s.tracks.get(name) if s is not None else None
            if s is None or track is None:
                self.open.discard((key, name))
                continue
            self._calm(ts, window, s, name, track, out)

    def _units(self, event: str, source: str) -> float:
        """An event's usual events per user and window on a source (≥ 1)."""
        platform = self.platforms.get(source)
        s = self._lookup(
            series_key("volume", {"event": event, "source": source, "platform": platform or ""})
        )
        return s.burst if s is not None else 1.0

    def _may_accept(self, obs: Observation) -> bool:
        """May a slice test take a lasting change of this funnel step as its new normal? Not
        while its last step is broken on its source (see `DetectionEngine._step_broken`)."""
        if obs.measure not in ("funnel", "funnel_early"):
            return True
        return not self._broken(pair_steps(obs.subject)[1], obs.source)

    def _target(self, v: Verdict) -> tuple[str, str, str, dict[str, str]]:
        """(parent series key, track name, kind, alert series) of a slice test's verdict."""
        kind = SEQUENTIAL[v.family][1]
        platform = self.platforms.get(v.source, v.source)
        where = {"source": v.source, "platform": platform}
        version = {} if v.value in (WHOLE, "unknown", MISSING) else {"app_version": v.value}
        if v.family in ("gone", "bad", "repeat"):
            event = v.subject
            series = {"event": event, **where, **version}
            if v.family == "bad":
                parent = series_key("violation", {"event": event})
            else:
                parent = series_key("volume", {"event": event, **where})
        else:
            from_event, to_event, within = pair_steps(v.subject)
            if v.family == "pair_gone":
                series = {"event": to_event, **where, **version}
                parent = series_key("volume", {"event": to_event, **where})
            else:
                steps = {"from_event": from_event, "to_event": to_event}
                if within:
                    steps[WITHIN] = within
                series = {**steps, **where, **version}
                parent = series_key("conversion", {**steps, **where})
        name = f"{SEQ}{v.family}:{v.subject}:{v.source}:{v.value}"
        return parent, name, kind, series

    def _on_verdict(
        self, ts: float, window: float, v: Verdict, out: list[Anomaly]
    ) -> tuple[str, str]:
        """Step the alert of one slice test's verdict (fire at once when hot, resolve once calm
        for the lifecycle's calm windows); its evidence is what the test gathered since onset."""
        parent, name, kind, series = self._target(v)
        s = self._lookup(parent)
        if s is None:
            return parent, name
        if v.family in CONVERSION_FAMILIES and not v.calm:
            own = s.tracks.get("down" if FAMILY_SPECS[v.family].low else "up")
            if own is not None and own.muted:  # the series accepted this change already
                self.watch.adopt(v.key)
                v = replace(v, hot=False, calm=True)
        if v.family == "pair_gone" and not v.calm and self._flooded(v):
            self.watch.discard(v.key)  # the first step's flood (bots) does not go on: told there
            return parent, name
        if (
            v.family in ("gone", "pair_gone")
            and not v.calm
            and self._superseded(series, v.since or ts)
        ):
            self.watch.adopt(v.key)  # its users moved to a newer release that sends it
            v = replace(v, hot=False, calm=True)
        score = 1.0 if v.hot else (0.0 if v.calm else 0.5)
        since = v.onset or ts
        if v.family == "pair_gone" and v.value == WHOLE and s.zero_since is not None:
            # the pair's evidence is dated by its first step (the screen), the next step cannot
            # have stopped before it last came: not before the source's empty run of it began
            since = max(since, s.zero_since)
        track, transition = self._step(ts, window, s, name, score, since=since)
        if track is None:
            return parent, name
        self.open.add((parent, name))
        if not v.calm:
            expected = v.expected
            if FAMILY_SPECS[v.family].model == "bernoulli":  # its trials are users or events
                told = [v.observed, expected, v.trials, v.minutes]
            else:
                told = [v.observed, expected, 0.0, v.minutes]
            track.told = told
            track.cause = _cause(v)
            if v.value == WHOLE:  # the releases it comes from, as the versions' tests see it
                low = FAMILY_SPECS[v.family].low
                track.parts = {
                    "app_version": {
                        version: [0.0, gap] if low else [gap, 0.0]
                        for version, gap in self.watch.shortfall_by_value(v.key).items()
                    }
                }
            track.windows = max(1, round(v.minutes * 60.0 / window))
            track.peak = 1.0
            rate = v.observed / v.trials if v.trials > 0 else 0.0
            track.last = [rate if v.family != "gone" else v.observed, v.rate, 0.0, 0.0]
        self._announce(ts, window, s, name, track, transition, kind, series, out)
        self._forget_if_idle(s, name, track)
        return parent, name

    def _flooded(self, v: Verdict) -> bool:
        """Is the first step of this pair rising in an open spike on its source (or on every
        source)? Then the users who do not go on are the flood's (bots load pages and send
        nothing else), already told by that spike."""
        first = pair_steps(v.subject)[0]
        return any(
            inc.group == "volume:up"
            and inc.series.get("event") == first
            and inc.series.get("source", v.source) == v.source
            for inc in self._incidents.open.values()
        )

    def _calm(
        self, ts: float, window: float, s: Series, name: str, track: Track, out: list[Anomaly]
    ) -> None:
        """A slice test's track without a verdict this window: its slice is calm. Once resolved
        and past reopening, the track is forgotten."""
        transition = track.lifecycle.step(ts, 0.0, window, self.config.lifecycle)
        if transition == "resolve":
            self._incidents.resolve(ts, window, s, name, out)
        self._forget_if_idle(s, name, track)

    def _forget_if_idle(self, s: Series, name: str, track: Track) -> None:
        """A slice track back to idle (resolved and past reopening) is forgotten."""
        if track.lifecycle.state == "idle":
            s.tracks.pop(name, None)
            self.open.discard((s.key, name))

    def _step(
        self, ts: float, window: float, s: Series, name: str, score: float, since: float
    ) -> tuple[Track | None, Transition | None]:
        """Step the lifecycle of track `name` on a score whose evidence is already gathered (a
        slice test's verdict): at the firing level it fires at once, and an incident starts when
        its evidence did (`since`). No track is made while the score is below it."""
        cfg = self.config.lifecycle
        track = s.tracks.get(name)
        hot = score >= cfg.fire_score
        if track is None:
            if not hot:
                return None, None
            track = s.tracks[name] = Track()
        before = track.lifecycle.state
        transition = track.lifecycle.step(ts, score, window, cfg)
        if hot and track.lifecycle.state == "pending":
            transition = track.lifecycle.escalate(cfg)
        if before not in ("pending", "firing") and track.lifecycle.active:
            track.reset_evidence()
            track.lifecycle.started = min(track.lifecycle.started or ts, since)
        return track, transition

    def _announce(
        self,
        ts: float,
        window: float,
        s: Series,
        name: str,
        track: Track,
        transition: Transition | None,
        kind: str,
        series: dict[str, str],
        out: list[Anomaly],
    ) -> None:
        """Open (or join) the incident of a slice track that fired, or resolve it."""
        if transition in ("fire", "reopen"):
            track.fired_at = ts + window
            self._incidents.fire(ts, window, s, name, kind, series, out)
        elif transition == "resolve":
            self._incidents.resolve(ts, window, s, name, out)

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict[str, Any]:
        """What the engine saves of the slice tests, under these keys at its state's top."""
        return {
            "slices": self.watch.to_state(),
            "feed": self.feed.to_state(),
            "platforms": dict(sorted(self.platforms.items())),
            "seq_open": sorted([list(x) for x in self.open]),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Take back what `to_state` saved (the engine's state; a key missing: afresh)."""
        cfg = self.config
        self.watch = SliceWatch.from_state(state.get("slices", {}), cfg.slices)
        self.feed = SliceFeed.from_state(state.get("feed", {}), cfg.slice_batch_windows)
        self.platforms = {str(k): str(v) for k, v in state.get("platforms", {}).items()}
        self.open = {(str(k), str(n)) for k, n in state.get("seq_open", [])}
