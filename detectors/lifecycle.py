"""Alert lifecycle: pending → firing → resolved, with a minimum duration and hysteresis.

One `Lifecycle` follows one series in one direction (e.g. "volume of Order Completed going up").
It is fed one anomaly score per closed window and says when an alert fires, reopens or resolves:

- idle → pending when the score reaches `fire_score`; the incident starts at that window.
- pending → firing once `fire_windows` windows reached `fire_score` (not necessarily in a row);
  pending is abandoned (silently) after `pending_patience` windows in a row below `fire_score`.
- firing → resolved after `resolve_windows` windows in a row below `resolve_score` (< fire_score):
  a score wandering between the two thresholds keeps the alert open (hysteresis, no flapping).
  The incident ends at the start of the first of those calm windows.
- resolved → firing again ("reopen", same incident start, hence the same alert id) when the
  score fires again within `reopen_minutes` of the end; later it is a new incident.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Literal

State = Literal["idle", "pending", "firing", "resolved"]
Transition = Literal["fire", "reopen", "resolve"]


@dataclass(frozen=True, slots=True)
class LifecycleConfig:
    # with detectors.intervals' scale: p ≤ 3e-5 (per window, after the models' correction for
    # their several time scales). Alerts are counted per day over every series and direction
    # (≈ 170 on the example plan: 94 series, 1440 windows a day): at p ≤ 1e-3 chance alone
    # crosses the line in ~250 windows a day, tens of episodes; at 3e-5 in ~7, a few episodes,
    # which the minimum duration and the evidence rules (`detectors.worth`) then mostly discard.
    fire_score: float = 0.75
    fire_windows: int = 3
    pending_patience: int = 2
    resolve_score: float = 0.3  # p ≥ 0.016
    resolve_windows: int = 5
    reopen_minutes: float = 30.0

    def __post_init__(self) -> None:
        if not 0.0 < self.resolve_score <= self.fire_score <= 1.0:
            raise ValueError("need 0 < resolve_score <= fire_score <= 1")
        if min(self.fire_windows, self.pending_patience, self.resolve_windows) < 1:
            raise ValueError("window counts must be >= 1")


@dataclass(slots=True)
class Lifecycle:
    """The state machine of one series × direction. JSON-safe through `to_state`/`from_state`."""

    state: State = "idle"
    started: float | None = None  # window start of the incident's first anomalous window
    ended: float | None = None  # set when resolved (the last resolution's while firing again)
    hits: int = 0  # windows at or above fire_score since pending began
    calm: int = 0  # consecutive windows below the relevant threshold
    reopening: bool = False  # pending after a recent resolution (keeps `started`)

    def step(
        self, ts: float, score: float, window: float, cfg: LifecycleConfig
    ) -> Transition | None:
        """Feed the score of the window starting at `ts` (length `window` seconds)."""
        hot = score >= cfg.fire_score
        stale = self.ended is not None and ts - self.ended > cfg.reopen_minutes * 60.0
        if self.state == "resolved" and stale:
            self._reset()
        if self.state == "idle":
            if hot:
                self.state, self.started, self.ended = "pending", ts, None
                self.hits, self.calm, self.reopening = 1, 0, False
                return self._maybe_fire(cfg)
            return None
        if self.state == "resolved":
            if hot:
                self.state, self.hits, self.calm, self.reopening = "pending", 1, 0, True
                return self._maybe_fire(cfg)
            return None
        if self.state == "pending":
            if hot:
                self.hits += 1
                self.calm = 0
                return self._maybe_fire(cfg)
            self.calm += 1
            if self.calm >= cfg.pending_patience:
                if self.reopening:
                    self.state, self.hits, self.calm, self.reopening = "resolved", 0, 0, False
                else:
                    self._reset()
            return None
        # firing
        if score < cfg.resolve_score:
            self.calm += 1
            if self.calm >= cfg.resolve_windows:
                self.state = "resolved"
                self.ended = ts - (cfg.resolve_windows - 1) * window
                self.hits, self.calm = 0, 0
                return "resolve"
        else:
            self.calm = 0
        return None

    def escalate(self, cfg: LifecycleConfig) -> Transition | None:
        """Fire a pending incident now (the evidence is conclusive without more windows)."""
        if self.state != "pending":
            return None
        self.hits = max(self.hits, cfg.fire_windows)
        return self._maybe_fire(cfg)

    def hold(self, transition: Transition) -> None:
        """Undo a fire/reopen the caller does not accept yet (too little evidence): stay
        pending, so that the next window at the firing level tries again."""
        if transition in ("fire", "reopen") and self.state == "firing":
            self.state, self.reopening = "pending", transition == "reopen"

    def force_resolve(self, ts: float) -> bool:
        """Close an open incident now (e.g. its series is evicted). True if it was firing."""
        was_firing = self.state == "firing"
        if self.state in ("firing", "pending"):
            self.state = "resolved" if was_firing or self.reopening else "idle"
            self.ended = ts if was_firing else self.ended
            self.hits = self.calm = 0
            self.reopening = False
        return was_firing

    @property
    def active(self) -> bool:
        return self.state in ("pending", "firing")

    def _maybe_fire(self, cfg: LifecycleConfig) -> Transition | None:
        if self.hits < cfg.fire_windows:
            return None
        transition: Transition = "reopen" if self.reopening else "fire"
        # `ended` stays the last resolution's (unread while firing): a fire the caller holds
        # must not forget when the incident ended, or it could reopen it days later
        self.state, self.calm, self.reopening = "firing", 0, False
        return transition

    def _reset(self) -> None:
        self.state, self.started, self.ended = "idle", None, None
        self.hits, self.calm, self.reopening = 0, 0, False

    def to_state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> Lifecycle:
        return cls(**state)


def alert_id(series_key: str, family: str, started: float) -> str:
    """Stable id of an incident: the same series, direction and start always give the same id."""
    raw = f"{series_key}#{family}#{int(started)}".encode()
    return hashlib.blake2b(raw, digest_size=8).hexdigest()
