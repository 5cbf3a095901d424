"""Is a significant deviation worth an alert? The engine's last word before a lifecycle fires.

A model says a series deviates (its score reaches the firing level); that is not yet worth
telling someone. `worth_an_alert` reads what the track gathered (`Track`: since it became
pending, for a rise also the windows that made it) and asks:
- is it big enough: `min_excess_units` users' events and `min_change` of the expected (a rate:
  `min_rate_excess` users or events);
- a fall: is it more than a run of empty windows this series often has at this level?
- a rise: does it stand out from the traffic that came with it (`carried`: a morning that
  comes early lifts every event of a source alike), do the users *arriving* in its windows go
  beyond chance at the firing level (one visitor browsing for ten minutes is one user; a bot's
  events, more than a few users could send, need no such users), and is it not a release
  arriving (`release_arriving`: an install or update event rising with a new version)?
Pure functions of the series' state and the engine's settings.

    >>> quiet_bucket(0.0), quiet_bucket(3.0), quiet_bucket(1e9)
    (0, 2, 11)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from detectors.engine_state import Series, Track
from detectors.intervals import nb_sf
from detectors.rollup import COUNTS

if TYPE_CHECKING:
    from detectors.engine_config import EngineConfig

# Events a release itself causes: Segment's mobile lifecycle events sent on the first launch of
# a newly installed or updated version (a forced update sends a burst of them)
RELEASE_EVENTS = ("Application Installed", "Application Updated")


def quiet_bucket(expected: float) -> int:
    """The bucket (log2 of the expected count per window, plus one; 0–11) under which a
    series remembers its longest normal run of empty windows."""
    return min(11, int(math.log2(max(expected, 0.0) + 1.0)))


def span_says_more(s: Series, track: Track, observed: float, expected: float) -> bool:
    """For a rate: does the model's most deviating span show a larger excess than these sums?
    (Then it is the evidence, both for deciding and for telling.)"""
    excess = abs(track.span_obs - track.span_exp)
    return s.metric not in COUNTS and excess > abs(observed - expected)


def carried(track: Track, context_min_events: float) -> float:
    """How many times their usual the other events of a rising volume's scope came in its
    windows (at least 1): the share of its rise the traffic carries. A morning that comes
    earlier than the model knows, or more users than it expects, lifts every event of the
    source alike: judged against its usual share of that traffic, no event stands out; a bot's
    page views, a leaked code or a double-fired event rise alone."""
    if track.ctx_exp < context_min_events:
        return 1.0
    return max(1.0, track.ctx_obs / track.ctx_exp)


def release_arriving(
    s: Series, track: Track, fresh: Callable[[], set[str]], p_fire: float, min_units: float
) -> bool:
    """Is a rise of an event that a release itself causes (`RELEASE_EVENTS`) the release
    arriving? Without the app versions `fresh()` names (first seen recently, or their source's
    newest) what is left is no spike: within chance at the firing level `p_fire`, or worth
    fewer than `min_units` users' events (one user updating to an older version, where none
    were expected, is no proof against a phased rollout's hundreds), and there are no more
    events per arriving user than usual: a forced update's users updating at once, or a phased
    rollout's over a week. A release that sends it twice rises in events per user and is still
    told: "more" is beyond 1.5× the usual, halfway between sending it once and sending it
    twice. Other events are not excused: under forced updates
    most users are on the newest release within hours, so a leaked code's rise comes from it
    too. The versions' parts are gathered from `pending` on; the windows before it, in the
    track's sums through the lead-in, have none, so the mix is judged on the windows that have
    (counting the lead-in as the rest made a phased rollout's evening of updates, most of it
    in the lead-in, a spike)."""
    versions = track.parts.get("app_version")
    if s.series.get("event") not in RELEASE_EVENTS or not versions:
        return False
    if track.users <= 0.0 or track.obs / track.users > 1.5 * s.per_arrival:
        return False
    if track.obs <= track.exp:
        return False
    new_versions = fresh()
    new_obs = sum(obs for v, (obs, _) in versions.items() if v in new_versions)
    if new_obs <= 0.0:
        return False
    new_exp = sum(exp for v, (_, exp) in versions.items() if v in new_versions)
    rest_obs = sum(obs for obs, _ in versions.values()) - new_obs
    rest_exp = max(sum(exp for _, exp in versions.values()) - new_exp, 0.0)
    if (rest_obs - rest_exp) / s.burst < min_units:
        return True
    return nb_sf(rest_obs / s.burst, rest_exp / s.burst, 0.0) > p_fire


def worth_an_alert(
    s: Series,
    track: Track,
    cfg: EngineConfig,
    p_fire: float,
    z_fire: float,
    fresh: Callable[[], set[str]],
) -> bool:
    """Is the evidence worth an alert (not only significant)? The evidence: what the track
    gathered since it became pending or, for rates, the model's most deviating span if that
    says more (a conversion rate on a few users an hour is significant only once it has lasted
    long: the windows before `pending` count then too). Volumes keep their own evidence: a long
    span's excess is often the model's own error over hours. `p_fire`/`z_fire`: the firing
    level as a one-sided p-value and its normal quantile; `fresh`: the app versions first seen
    recently (asked only for a release's own events)."""
    obs, exp = track.obs, track.exp
    if span_says_more(s, track, obs, exp):
        obs, exp = track.span_obs, track.span_exp
    excess = abs(obs - exp)
    if s.metric in COUNTS and track.silent_windows and track.obs < track.exp:
        run, expected = track.silent_windows, track.silent_expected
        usual = cfg.quiet_factor * s.quiet[quiet_bucket(expected / run)]
        if run <= usual and expected >= 0.5 * (track.exp - track.obs):
            return False  # mostly a silence no longer than this series often has
    change = excess / exp if exp > 0 else math.inf
    if s.metric not in COUNTS:
        return excess >= cfg.min_rate_excess and change >= cfg.min_change
    units = excess / s.burst
    share = carried(track, cfg.context_min_events) if obs > exp else 1.0
    if share > 1.0:  # judged against its usual share of the traffic that came
        exp = track.ctx_own * share
        excess, change = obs - exp, (obs - exp) / exp if exp > 0 else math.inf
        units = excess / s.burst
        if excess < z_fire * math.sqrt(s.burst * exp):
            return False  # within what that share's own spread gives
    if obs > exp and track.users > 0.0:
        # a rise is worth an alert when more users than usual bring it, or when its extra
        # events are more than a few users could ever send (a bot, a replay loop): one busy
        # visitor at night is neither. Visits are the independent units: unless it is a bot's,
        # the users arriving in its windows (one browsing for ten minutes arrives once) must be
        # beyond chance at the firing level (three in minutes where one was usual are not)
        arrivals = exp / s.per_arrival  # users arriving (a visit counts once)
        extra_users = track.users - arrivals
        if units < cfg.bot_units and nb_sf(track.users, arrivals, 0.0) > p_fire:
            return False
        if release_arriving(s, track, fresh, p_fire, cfg.min_excess_units):
            return False
        units = max(min(units, extra_users), units if units >= cfg.bot_units else 0.0)
    return units >= cfg.min_excess_units and change >= cfg.min_change
