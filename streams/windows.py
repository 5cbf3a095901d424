"""Event-time window aggregation (pure: no Kafka, no Faust).

The same `WindowAggregator` runs inside the Faust aggregate agent and in the offline replay,
so both give the same window records for the same input in the same order.

Time
    Every event is placed by its *event time* (the normalised `timestamp`, else `received_at`).
    Windows are tumbling, `[start, start + window_seconds)`, aligned on the epoch.
    The *watermark* is the largest event time seen so far (`add` raises it, `advance` may raise
    it further, e.g. from a heartbeat). A window is *closed* once
    ``window_end + allowed_lateness <= watermark``; `advance` emits the records of every closed
    window, oldest first, and forgets them. Whether an event is late depends only on the events
    added before it (never on how the caller groups calls to `advance`), which keeps streaming
    and replay identical.

Late events
    An event whose window is already closed is not added to any window (adding it to another
    window would distort that one); it is counted in `late_events` by source (the worker exports
    it as ``trackwatch_late_events_total``). The event itself is not lost: it is in events.valid.
    Mobile SDKs flush offline batches hours late, so a late event whose window closed less than
    `late_horizon_seconds` ago (a week by default; 0: none) is still counted where it belongs: in a
    *revision* record (kind "volume", ``revision=True``, the series and window of the original,
    `count`, `violations`, `violation_codes` and `repeats` of what arrived late for it;
    `distinct_users` 0: user sets are not kept for closed windows). The late events that
    arrive while the closed edge (watermark minus lateness) is in one window form one batch: at
    most one revision per series and window, published with the records of the next window to
    close, so each late event is in exactly one revision and the records do not depend on how
    `advance` is called.
    Counted by source in `revised_events` and, beyond the horizon, `too_late_events` (both are
    also in `late_events`). Memory: the deltas of the current batch only (at most
    `max_unplanned_series` unplanned names per window of it).

Volume series
    One series per event key (``Plan.events`` key, e.g. ``Product Viewed``, ``page:Home``) and
    the chosen dimensions: `source`, `platform` (the plan's source spec, else
    ``context.os.name``), `app_version` (``context.app.version``), or any dotted path under the
    event (``context.locale``); a missing value is ``"unknown"``. `count` counts events forwarded
    to events.valid (valid and flagged), `distinct_users` their distinct users (exact sets: the
    state is bounded by the open windows), `violations` events with at least one violation
    (flagged *or* quarantined), `violation_codes` each code once per event, `repeats` events
    (forwarded or quarantined) repeating a business key (`Tally.repeated`), `arrivals` the
    distinct users who did not send it in the window before (the last closed window's users
    are kept per series: one more set each). Unplanned events get
    ``planned=False``; at most `max_unplanned_series` distinct unplanned names per window keep
    their name, the rest are pooled under ``(other unplanned)`` so hostile input cannot blow up
    the state.

Activity series (kind "activity", one per source, platform and app version per window with any
event in it, or with sessions running before it)
    `count` = `distinct_users` = the users (anonymousId, else userId) who sent any event on that
    source in the window, forwarded or quarantined, planned or not; `denominator` = the users of
    the previous window (sessions running), `numerator` = those of them who sent something
    again in this one. Running sessions that go silent, and new visits that stop arriving, show
    an outage within minutes, without waiting for each event's counts to fall.

Conversion series (one per funnel step pair, source, platform and app version of the *first*
step)
    `denominator` = distinct users who did step i in window W; `numerator` = those of them who
    did step i+1 (from any source: a server-side "Order Completed" converts a web "Checkout
    Started") at some time t with s <= t <= s + funnel.window_minutes for one of their step-i
    times s in W. It is computed when that can no longer change, i.e. once
    ``W.end + funnel window + window + allowed_lateness <= watermark``. The record is then
    *dated* by the window it is published with, ``W + funnel window + window`` (the first window
    closed after every matching next step has been seen), because the detectors take each window
    once, all its records together: a conversion rate is an hour late by nature. A user is
    matched on either of userId / anonymousId. The cohort is split by the first step's source,
    platform and app version (``context.app.version``, "unknown" when absent).

Early conversion records (`early_minutes`, 10 by default; 0: none) count the same cohort's
    users who did step i+1 within `early_minutes` instead of the whole funnel window, labelled
    ``within_minutes`` and published (and dated) ``W + early_minutes + window``: most checkouts
    that convert do so within minutes, so a conversion that doubles or halves shows up about
    50 minutes sooner. The detectors learn the early rate as a series of its own.

Companion pairs (`companion_minutes`, 10 by default; 0: none)
    Which planned event normally follows which is learnt from the traffic (`streams.companions`)
    and published like a funnel step pair, with ``funnel="(companion)"`` and no early records.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from detectors.records import WITHIN, WindowRecord
from streams.companions import COMPANION_MINUTES, Companions, cohort_record
from tracking_plan.model import Funnel, Plan
from tracking_plan.normalise import parse_timestamp

UNKNOWN = "unknown"
OTHER_UNPLANNED = "(other unplanned)"
DEFAULT_DIMENSIONS = ("source", "platform", "app_version")
PRUNE_EVERY = 10  # windows between two prunings of the funnel next-step times
EARLY_MINUTES = 10  # early conversion records: converted within this many minutes
# late events of windows closed this recently are revisions: a week (offline batches flushed
# the next morning, a phone back on the network after a weekend), inside the history's 35 days
LATE_HORIZON_SECONDS = 7 * 24 * 3600
BROKEN = "(broken)"  # the key of a call that could not be read
# the paths every tally carries (the platform's fallback, the app version), first and in order
BASE_PATHS = (("context", "os", "name"), ("context", "app", "version"))
_ALIASES = {"app_version": "context.app.version"}  # dimensions read at another path
_NOT_PATHS = ("source", "platform", "anonymousId", "userId")  # dimensions tallies hold otherwise
LABEL_CACHE_SIZE = 4096  # distinct (source, path labels) of tallies whose labels are kept


def _site(values: Any) -> tuple[str, str, str]:
    """(source, platform, app version) of an activity site from a snapshot (an older one has
    no app version: "unknown")."""
    values = [str(v) for v in values]
    return (values[0], values[1], values[2] if len(values) > 2 else UNKNOWN)


def _label(value: Any) -> str:
    if type(value) is str:  # the common case, first
        return value[:64] if value else UNKNOWN
    if value is None or value == "" or isinstance(value, dict | list):
        return UNKNOWN
    text = str(value)
    return text[:64]


def event_time(event: dict[str, Any], received_at: float) -> float:
    """The event's normalised `timestamp` in epoch seconds, else `received_at`."""
    ts = parse_timestamp(event.get("timestamp"))
    if ts is None or not math.isfinite(ts):
        return received_at
    return ts


class Tally(NamedTuple):
    """One event as the aggregator counts it, without the event (`streams.pipeline` builds
    them, `WindowAggregator.add_tallies` counts them). Ids are kept only when strings; `labels`
    holds the label of the scalar value at each of the paths the tallies are read with
    (`tally_paths`, `path_labels`)."""

    source: str
    key: str  # the event key; "(broken)" when the call could not be read
    planned: bool
    ts: float  # event time, else reception time (epoch seconds)
    codes: tuple[str, ...]  # its violation codes, sorted, each once
    quarantined: bool
    anonymous_id: str | None
    user_id: str | None
    labels: tuple[str, ...]
    repeated: bool = False  # repeats a business key within its horizon (`BatchProcessor`)


_new_tally = tuple.__new__  # builds a `Tally` 3x faster than its generated __new__


def event_tally(
    source: str,
    key: str,
    planned: bool,
    ts: float,
    codes: tuple[str, ...],
    quarantined: bool,
    event: Any,
    paths: tuple[tuple[str, ...], ...],
    repeated: bool = False,
) -> Tally:
    """The tally of `event` (its string ids, the labels at `paths`) with the outcome given;
    `repeated`: it repeats a business key (counted in `WindowRecord.repeats`)."""
    if type(event) is dict:
        anonymous = event.get("anonymousId")
        user = event.get("userId")
        labels = path_labels(event, paths)
    else:  # (not a call: nothing to read)
        anonymous = user = None
        labels = path_labels({}, paths)
    return _new_tally(  # type: ignore[no-any-return]
        Tally,
        (
            source,
            key,
            planned,
            ts,
            codes,
            quarantined,
            anonymous if type(anonymous) is str else None,
            user if type(user) is str else None,
            labels,
            repeated,
        ),
    )


def tally_paths(dimensions: Iterable[str]) -> tuple[tuple[str, ...], ...]:
    """The paths tallies carry for `dimensions`: `BASE_PATHS`, then the path of each dimension
    read from the event (a top-level name such as ``channel`` or a dotted path such as
    ``context.locale``; not source, platform or the ids, which tallies hold otherwise)."""
    extra = tuple(tuple(_ALIASES.get(d, d).split(".")) for d in dimensions if d not in _NOT_PATHS)
    return BASE_PATHS + tuple(dict.fromkeys(p for p in extra if p not in BASE_PATHS))


def path_labels(event: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> tuple[str, ...]:
    """The label of the scalar (str, int or float) value at each of `paths` (from `tally_paths`)
    in `event`; "unknown" where there is none."""
    context = event.get("context")  # the base paths, inline: they are read for every event
    if type(context) is dict:
        node = context.get("os")
        os_name = node.get("name") if type(node) is dict else None
        node = context.get("app")
        version = node.get("version") if type(node) is dict else None
    else:
        os_name = version = None
    labels = (
        (os_name[:64] or UNKNOWN) if type(os_name) is str else _scalar_label(os_name),
        (version[:64] or UNKNOWN) if type(version) is str else _scalar_label(version),
    )
    if len(paths) == 2:
        return labels
    extra = []
    for path in paths[2:]:
        node = event
        for part in path:
            if type(node) is not dict:
                node = None
                break
            node = node.get(part)
        extra.append(_scalar_label(node))
    return labels + tuple(extra)


def _scalar_label(value: Any) -> str:
    """The label of a str, int or float value; "unknown" for any other."""
    if type(value) is str or type(value) is int or type(value) is float:
        return _label(value)
    return UNKNOWN


class _Layout(NamedTuple):
    """Where a `WindowAggregator` finds its dimension values in tallies read at given paths."""

    os: int  # index of the label of context.os.name (the platform's fallback); -1: none
    app: int  # index of the label of context.app.version (a funnel cohort's); -1: none
    dims: tuple[tuple[str, int], ...]  # per dimension: its kind and, for a path, its index
    by_id: bool  # a dimension is anonymousId or userId


class _StepRef(NamedTuple):
    """One step of a funnel, as an event key finds it."""

    key: tuple[int, int]  # (funnel index, step index)
    opens: bool  # a step with a next one: users enter its cohort
    follows: bool  # a step after the first: when users do it is remembered
    horizon: float  # the funnel window, in seconds


@dataclass
class _Volume:
    count: int = 0
    users: set[str] = field(default_factory=set)
    violations: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    repeats: int = 0
    quarantined: int = 0


@dataclass
class _Late:
    """What arrived late for one series of a closed window (a revision's counts)."""

    count: int = 0
    violations: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    repeats: int = 0


@dataclass
class _Step:
    """Who did step i of a funnel in one window, per (source, platform, app_version) of that
    step: id -> step times.

    A user is keyed by their first id (``a:<anonymousId>``, else ``u:<userId>``); `aliases` keeps
    their other id so that a next step carrying only that one still matches.
    """

    users: dict[tuple[str, str, str], dict[str, list[float]]] = field(default_factory=dict)
    aliases: dict[str, set[str]] = field(default_factory=dict)


STATE_VERSION = 2  # 2: activity, revisions, companions, app_version in funnel cohorts


def _cohort(dims: list[str]) -> tuple[str, str, str]:
    """A funnel cohort key from a snapshot (version 1 had no app version)."""
    return (dims[0], dims[1], dims[2] if len(dims) > 2 else UNKNOWN)


class WindowAggregator:
    """Counts events into tumbling event-time windows; emits `WindowRecord`s per closed window."""

    def __init__(
        self,
        window_seconds: int = 60,
        allowed_lateness_seconds: int = 120,
        dimensions: Sequence[str] = DEFAULT_DIMENSIONS,
        funnels: Sequence[Funnel] = (),
        plan: Plan | None = None,
        max_unplanned_series: int = 200,
        early_minutes: int = EARLY_MINUTES,
        companion_minutes: int = COMPANION_MINUTES,
        late_horizon_seconds: int = LATE_HORIZON_SECONDS,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        if early_minutes < 0:
            raise ValueError("early_minutes must not be negative (0: no early conversion records)")
        if allowed_lateness_seconds < 0:
            raise ValueError("allowed_lateness_seconds must not be negative")
        if companion_minutes < 0:
            raise ValueError("companion_minutes must not be negative (0: no companion pairs)")
        if late_horizon_seconds < 0:
            raise ValueError("late_horizon_seconds must not be negative (0: no revisions)")
        self.window = int(window_seconds)
        self.lateness = float(allowed_lateness_seconds)
        self.dimensions = tuple(dimensions)
        self._paths = tally_paths(self.dimensions)  # what `add` reads from whole events
        self.funnels = tuple(funnels)
        self.early_minutes = int(early_minutes)
        self._tally_labels: dict[tuple[tuple[str, ...], ...], dict[Any, Any]] = {}
        self._layouts: dict[tuple[tuple[str, ...], ...], _Layout] = {}
        self.platforms = {n: s.platform for n, s in (plan.sources if plan else {}).items()}
        self.max_unplanned = max_unplanned_series
        self.watermark = -math.inf
        self.late_horizon = float(late_horizon_seconds)
        self.late_events: Counter[str] = Counter()  # by source: every late event
        self.revised_events: Counter[str] = Counter()  # by source: late, in a revision
        self.too_late_events: Counter[str] = Counter()  # by source: beyond the late horizon
        self.added = 0
        # window start -> (event key, planned, dims...) -> accumulators
        self._volumes: dict[int, dict[tuple[Any, ...], _Volume]] = {}
        self._unplanned_names: dict[int, set[str]] = {}
        # window start -> (source, platform) -> the users who sent any event there
        # window start -> (source, platform, app version) -> its users
        self._activity: dict[int, dict[tuple[str, str, str], set[str]]] = {}
        # (source, platform, app version) -> (window start, users) of the last closed windows
        self._recent_active: dict[tuple[str, str, str], list[tuple[int, set[str]]]] = {}
        self._activity_done = -math.inf  # the last window whose activity records are out
        # (event key, planned, dims...) -> (window start, users) of its last closed window: who
        # sent it in the window before, so that a record tells its arriving users apart
        self._last_users: dict[tuple[Any, ...], tuple[int, set[str]]] = {}
        # revision batch (the closed edge's window index when they came) -> window start ->
        # (event key, planned, dims...) -> what arrived late
        self._late: dict[int, dict[int, dict[tuple[Any, ...], _Late]]] = {}
        self._late_unplanned: dict[tuple[int, int], set[str]] = {}  # (batch, start) -> names
        # (funnel index, step index) -> window start -> step state
        self._steps: dict[tuple[int, int], dict[int, _Step]] = {}
        # (funnel index, step index) -> user id -> times that user did that step (i >= 1)
        self._next_times: dict[tuple[int, int], dict[str, list[float]]] = {}
        # (funnel index, step index) -> user id -> time of the user's last counted entry: a user
        # enters a step's cohort at most once per funnel horizon, so that one busy visitor
        # (ten products viewed in ten minutes) is one trial, not ten correlated ones
        self._entries: dict[tuple[int, int], dict[str, float]] = {}
        # (funnel index, step index) -> start of the last cohort window whose early records
        # are out (cohorts are published in time order)
        self._early_done: dict[tuple[int, int], float] = {}
        self._pruned_at: float | None = None
        self._step_index: dict[str, list[_StepRef]] = {}  # event key -> the steps it is
        for fi, funnel in enumerate(self.funnels):
            for si, name in enumerate(funnel.steps):
                ref = _StepRef(
                    (fi, si), si + 1 < len(funnel.steps), si > 0, funnel.window_minutes * 60
                )
                self._step_index.setdefault(name, []).append(ref)
        self.companion_minutes = int(companion_minutes)
        pairs = [
            (f.steps[i], f.steps[i + 1]) for f in self.funnels for i in range(len(f.steps) - 1)
        ]
        self.companions: Companions | None = None
        if self.companion_minutes:
            self.companions = Companions(self.companion_minutes, self.window, pairs)

    # ---------------------------------------------------------------- input

    @property
    def platforms(self) -> dict[str, str | None]:
        """Source -> platform (from the plan); assign a new dict to change it."""
        return self._platforms

    @platforms.setter
    def platforms(self, platforms: dict[str, str | None]) -> None:
        self._platforms = platforms
        self._tally_labels.clear()  # they hold platforms

    def add(
        self,
        event: dict[str, Any],
        source: str,
        violations: Iterable[str] = (),
        *,
        event_key: str,
        received_at: float,
        ts: float | None = None,
        planned: bool = True,
        quarantined: bool = False,
        repeated: bool = False,
    ) -> bool:
        """Count one whole event (for callers holding events rather than tallies: tests, tools).
        `violations` are its violation codes. Returns False if it was late.

        It is read as the pipeline reads it (`event_tally`): string ids only, labels at
        `tally_paths(self.dimensions)`. `ts` is its event time if already known (else
        `event_time(event, received_at)`). Quarantined events only raise their series'
        violation counts (and the watermark).
        """
        if ts is None or not math.isfinite(ts):
            ts = event_time(event, received_at)
        codes = tuple(sorted(set(violations)))
        tally = event_tally(
            source, event_key, planned, ts, codes, quarantined, event, self._paths, repeated
        )
        return self.add_tallies((tally,), self._paths) == 0

    def add_tallies(self, tallies: Iterable[Tally], paths: tuple[tuple[str, ...], ...]) -> int:
        """Count tallies whose labels were read at `paths` (`BatchProcessor.paths`) as `add`
        counts their events; the number that were late."""
        layout = self._tally_layout(paths)
        cached = not layout.by_id  # else the labels depend on the user: not worth a cache
        cache = self._tally_labels.setdefault(paths, {})
        count = self._count
        late = 0
        for (
            source, key, planned, ts, codes, quarantined, anonymous, user, labels, repeated,
        ) in tallies:  # fmt: skip
            if cached:
                hit = cache.get((source, labels))
                if hit is None:
                    if len(cache) >= LABEL_CACHE_SIZE:
                        cache.clear()
                    hit = cache[(source, labels)] = self._labels(layout, source, labels)
                dims, cohort, site = hit
            else:
                dims, cohort, site = self._labels(layout, source, labels, anonymous, user)
            if anonymous:
                ids: tuple[str, ...] = (
                    ("a:" + anonymous, "u:" + user) if user else ("a:" + anonymous,)
                )
            else:
                ids = ("u:" + user,) if user else ()
            if not count(
                source, key, planned, ts, codes or None, quarantined, dims, cohort, site,
                anonymous or user or None, ids, repeated,
            ):  # fmt: skip
                late += 1
        return late

    def _tally_layout(self, paths: tuple[tuple[str, ...], ...]) -> _Layout:
        """Where each dimension's label is found in tallies read at `paths`."""
        layout = self._layouts.get(paths)
        if layout is None:
            at = {".".join(path): i for i, path in enumerate(paths)}
            dims = []
            for dim in self.dimensions:
                if dim in _NOT_PATHS:
                    dims.append((dim, -1))
                else:
                    dims.append(("path", at.get(_ALIASES.get(dim, dim), -1)))  # -1: unknown
            by_id = any(kind in ("anonymousId", "userId") for kind, _ in dims)
            layout = self._layouts[paths] = _Layout(
                at.get("context.os.name", -1), at.get("context.app.version", -1), tuple(dims), by_id
            )
        return layout

    def _labels(
        self,
        layout: _Layout,
        source: str,
        labels: tuple[str, ...],
        anonymous: str | None = None,
        user: str | None = None,
    ) -> tuple[tuple[str, ...], tuple[str, str, str], tuple[str, str]]:
        """The dimension values of a tally's series, the (source, platform, app_version) of its
        funnel cohort and the (source, platform) of its activity."""
        platform = self._platforms.get(source) or (labels[layout.os] if layout.os >= 0 else UNKNOWN)
        values = []
        for kind, index in layout.dims:
            if kind == "path":
                values.append(labels[index] if index >= 0 else UNKNOWN)
            elif kind == "source":
                values.append(_label(source))
            elif kind == "platform":
                values.append(platform)
            else:
                values.append(_label(anonymous if kind == "anonymousId" else user))
        site = (_label(source), platform)
        version = labels[layout.app] if layout.app >= 0 else UNKNOWN
        return tuple(values), (*site, version), site

    def _count(
        self,
        source: str,
        event_key: str,
        planned: bool,
        ts: float,
        codes: Collection[str] | None,
        quarantined: bool,
        dims: tuple[str, ...],
        cohort: tuple[str, str, str],
        site: tuple[str, str],
        user: str | None,
        ids: tuple[str, ...],
        repeated: bool = False,
    ) -> bool:
        """Count one event at event time `ts` (see `add`): `codes` its violation codes (None
        without violation), `dims` its dimension values, `cohort` the (source, platform,
        app_version) of a funnel step, `site` the (source, platform) of its activity, `user`
        the id distinct users count on, `ids` its ids for the funnels."""
        start = int(ts // self.window) * self.window
        if start + self.window + self.lateness <= self.watermark:
            self._count_late(source, event_key, planned, start, codes, quarantined, dims, repeated)
            return False
        self.added += 1
        if ts > self.watermark:
            self.watermark = ts
        name = event_key
        if not planned:
            names = self._unplanned_names.setdefault(start, set())
            if name not in names and len(names) >= self.max_unplanned:
                name = OTHER_UNPLANNED
            else:
                names.add(name)
        key = (name, planned, *dims)
        window = self._volumes.get(start)
        if window is None:
            window = self._volumes[start] = {}
        acc = window.get(key)
        if acc is None:
            acc = window[key] = _Volume()
        if codes is not None:
            acc.violations += 1
            counts = acc.codes
            for code in codes:
                counts[code] = counts.get(code, 0) + 1
        if repeated:
            acc.repeats += 1
        activity = self._activity.get(start)
        if activity is None:
            activity = self._activity[start] = {}
        users = activity.get(cohort)  # (source, platform, app_version)
        if users is None:
            users = activity[cohort] = set()
        if user is not None:
            users.add(user)
        if quarantined:
            acc.quarantined += 1
            return True
        acc.count += 1
        if user is not None:
            acc.users.add(user)
        if planned and ids:
            if event_key in self._step_index:
                self._add_funnel_step(ids, cohort, event_key, ts, start)
            if self.companions is not None and event_key != BROKEN:
                self.companions.add(ids, event_key, ts, start, cohort)
        return True

    def _count_late(
        self,
        source: str,
        name: str,
        planned: bool,
        start: int,
        codes: Collection[str] | None,
        quarantined: bool,
        dims: tuple[str, ...],
        repeated: bool,
    ) -> None:
        """Count an event of a closed window: into the current revision batch if the window
        closed less than the late horizon ago, else as too late."""
        self.late_events[source] += 1
        if start + self.window + self.lateness + self.late_horizon <= self.watermark:
            self.too_late_events[source] += 1
            return
        self.revised_events[source] += 1
        index = int((self.watermark - self.lateness) // self.window)
        window = self._late.setdefault(index, {}).setdefault(start, {})
        if not planned:
            names = self._late_unplanned.setdefault((index, start), set())
            if name not in names and len(names) >= self.max_unplanned:
                name = OTHER_UNPLANNED
            else:
                names.add(name)
        key = (name, planned, *dims)
        acc = window.get(key)
        if acc is None:
            acc = window[key] = _Late()
        if codes is not None:
            acc.violations += 1
            acc.codes.update(codes)
        if repeated:
            acc.repeats += 1
        if not quarantined:
            acc.count += 1

    def _add_funnel_step(
        self, ids: tuple[str, ...], cohort: tuple[str, str], name: str, ts: float, start: int
    ) -> None:
        uid = ids[0]
        for key, opens, follows, horizon in self._step_index[name]:
            if opens:
                # a "from" step: a new entry into its cohort unless the user has a counted
                # entry within one funnel horizon (either side), and then in the denominator
                entries = self._entries.setdefault(key, {})
                last = entries.get(uid)
                if last is None or abs(ts - last) >= horizon:
                    entries[uid] = ts if last is None else max(ts, last)
                    windows = self._steps.setdefault(key, {})
                    step = windows.get(start)
                    if step is None:
                        step = windows[start] = _Step()
                    step.users.setdefault(cohort, {}).setdefault(uid, []).append(ts)
                    if len(ids) > 1:
                        step.aliases.setdefault(uid, set()).update(ids[1:])
            if follows:  # a "to" step: remember when each id did it
                times = self._next_times.setdefault(key, {})
                for other in ids:
                    times.setdefault(other, []).append(ts)

    # --------------------------------------------------------------- output

    def advance(self, watermark: float | None = None) -> list[WindowRecord]:
        """Raise the watermark (if given) and return the records of every newly closed window."""
        if watermark is not None and watermark > self.watermark:
            self.watermark = watermark
        limit = self.watermark - self.lateness
        return self._close(limit, limit)

    def _close(self, limit: float, funnel_limit: float) -> list[WindowRecord]:
        """Records of the volume windows ending by `limit` and of the funnel cohorts whose
        next-step windows all end by `funnel_limit`."""
        records: list[WindowRecord] = []
        for start in sorted(self._volumes):
            if start + self.window > limit:
                break
            records.extend(self._quiet_activity(start))
            records.extend(self._volume_records(start, self._volumes.pop(start)))
            records.extend(self._activity_records(start, self._activity.pop(start, {})))
            self._unplanned_names.pop(start, None)
        if limit < math.inf:  # the windows closed since, without any event here
            records.extend(self._quiet_activity(limit // self.window * self.window))
        records.extend(self._revision_records(limit))
        for (fi, si), windows in self._steps.items():
            starts = sorted(windows)  # for the early records, then the whole ones
            early = self._early_horizon(fi)
            if early is not None:
                done = self._early_done.get((fi, si), -math.inf)
                for start in starts:
                    if start <= done:
                        continue
                    if start + 2 * self.window + early > funnel_limit:
                        break
                    records.extend(self._conversion_records(fi, si, start, windows[start], early))
                    self._early_done[(fi, si)] = start
            horizon = self.funnels[fi].window_minutes * 60
            for start in starts:
                # every window that can hold a matching next step must be closed
                if start + 2 * self.window + horizon > funnel_limit:
                    break
                records.extend(self._conversion_records(fi, si, start, windows.pop(start)))
        if self.companions is not None:
            records.extend(self.companions.close(funnel_limit))
        boundary = limit // self.window if limit > -math.inf else None
        if boundary is not None and (  # every PRUNE_EVERY windows: memory stays bounded
            self._pruned_at is None or boundary - self._pruned_at >= PRUNE_EVERY
        ):
            self._pruned_at = boundary
            self._prune_next_times(limit)
            if self.companions is not None:
                self.companions.prune(limit, self.lateness)
        return records

    def flush_all(self) -> list[WindowRecord]:
        """End of input (a replay): close every window, the one holding the last event included,
        but publish only the funnel cohorts whose conversion horizon ends by then. Later cohorts
        are dropped: their users have not had the time to convert, so they would read as a
        conversion drop, dated after the end of the data."""
        records = self._close(math.inf, self.watermark + self.window)
        self._steps.clear()
        if self.companions is not None:
            self.companions.drop_pending()
        return records

    def _volume_records(
        self, start: int, series: dict[tuple[Any, ...], _Volume]
    ) -> list[WindowRecord]:
        out = []
        last, now = self._last_users, {}
        for key in sorted(series, key=repr):
            acc = series[key]
            name, planned, *dims = key
            labels = {"event": name, **dict(zip(self.dimensions, dims, strict=True))}
            begun, before = last.get(key, (None, ()))
            arrivals = len(acc.users - before) if begun == start - self.window else len(acc.users)
            if acc.users:
                now[key] = (start, acc.users)
            out.append(
                WindowRecord(
                    series=labels,
                    window_start=float(start),
                    window_end=float(start + self.window),
                    count=acc.count,
                    distinct_users=len(acc.users),
                    violations=acc.violations,
                    violation_codes=dict(sorted(acc.codes.items())),
                    planned=planned,
                    repeats=acc.repeats,
                    quarantined=acc.quarantined,
                    arrivals=arrivals,
                )
            )
        self._last_users = now  # the next window reads only this one's
        return out

    def _quiet_activity(self, start: float) -> list[WindowRecord]:
        """The activity records of the windows before `start` that had no event at all here,
        while sessions were running in the window before them (an outage of everything
        must still say that they went silent), each emitted once, in window order, before the
        windows after them are closed (a partition's records must not depend on when the
        others close theirs)."""
        last = max((kept[-1][0] for kept in self._recent_active.values() if kept), default=None)
        if last is None:
            return []
        first = max(last, self._activity_done) + self.window
        out = []
        for quiet in range(int(first), int(min(start, last + 2 * self.window)), self.window):
            out.extend(self._activity_records(quiet, {}))
        return out

    def _activity_records(
        self, start: int, sites: dict[tuple[str, str, str], set[str]]
    ) -> list[WindowRecord]:
        """One record per (source, platform, app version) with users in this window, or with
        running sessions before it: its users (`count`); the users of the window before it,
        sessions running (`denominator`), and how many of them sent something again in this one
        (`numerator`). The users of a window are then those going on and those arriving (new
        visits, or back after a pause), two parts nearly independent from one window to the next
        (`detectors.silence`)."""
        recent = self._recent_active
        self._activity_done = max(self._activity_done, start)
        out = []
        for site in sorted(set(sites) | set(recent)):
            users = sites.get(site, set())
            before = {begun: seen for begun, seen in recent.get(site, ())}
            running = before.get(start - self.window) or set()
            if users:  # the window after this one reads only this one's users
                recent[site] = [(start, users)]
            else:
                recent.pop(site, None)
            if site not in sites and not running:
                continue
            source, platform, version = site
            out.append(
                WindowRecord(
                    series={"source": source, "platform": platform, "app_version": version},
                    window_start=float(start),
                    window_end=float(start + self.window),
                    count=len(users),
                    distinct_users=len(users),
                    kind="activity",
                    numerator=len(users & running),
                    denominator=len(running),
                )
            )
        return out

    def _revision_records(self, limit: float) -> list[WindowRecord]:
        """The revision batches of the late events that came before the closed edge `limit`
        entered its window (all of them at the end of input), oldest first."""
        edge = limit // self.window if math.isfinite(limit) else limit
        out = []
        for batch in sorted(self._late):
            if batch >= edge:
                break
            windows = self._late.pop(batch)
            for start in sorted(windows):
                self._late_unplanned.pop((batch, start), None)
                series = windows[start]
                for key in sorted(series, key=repr):
                    acc = series[key]
                    name, planned, *dims = key
                    out.append(
                        WindowRecord(
                            series={"event": name, **dict(zip(self.dimensions, dims, strict=True))},
                            window_start=float(start),
                            window_end=float(start + self.window),
                            count=acc.count,
                            violations=acc.violations,
                            violation_codes=dict(sorted(acc.codes.items())),
                            planned=planned,
                            repeats=acc.repeats,
                            revision=True,
                        )
                    )
        return out

    def _early_horizon(self, fi: int) -> int | None:
        """The early horizon of funnel `fi` in seconds; None when off or not shorter than the
        funnel window (then the whole record is as soon)."""
        early = self.early_minutes * 60
        return early if 0 < early < self.funnels[fi].window_minutes * 60 else None

    def _conversion_records(
        self, fi: int, si: int, start: int, step: _Step, early: int | None = None
    ) -> list[WindowRecord]:
        """The cohort's conversion per (source, platform, app_version): within the funnel
        window, or within `early` seconds for the early records."""
        funnel = self.funnels[fi]
        horizon = funnel.window_minutes * 60 if early is None else early
        times = self._next_times.get((fi, si + 1), {})
        out = []
        for dims in sorted(step.users):
            users = step.users[dims]
            denominator = len(users)
            numerator = 0
            for uid, starts in users.items():
                candidates = list(times.get(uid, ()))
                for other in step.aliases.get(uid, ()):
                    candidates.extend(times.get(other, ()))
                if any(s <= t <= s + horizon for s in starts for t in candidates):
                    numerator += 1
            series = {
                "funnel": funnel.name,
                "from_event": funnel.steps[si],
                "to_event": funnel.steps[si + 1],
                "source": dims[0],
                "platform": dims[1],
                "app_version": dims[2],
            }
            if early is not None:
                series[WITHIN] = str(early // 60)
            out.append(cohort_record(series, start + horizon, self.window, numerator, denominator))
        return out

    def _prune_next_times(self, limit: float) -> None:
        """Forget step times no pending window can still match, and entries older than a
        horizon before the watermark."""
        for (fi, _si), entries in self._entries.items():
            cutoff = limit - self.lateness - self.funnels[fi].window_minutes * 60
            for uid in [u for u, t in entries.items() if t < cutoff]:
                del entries[uid]
        for (fi, _si), users in self._next_times.items():
            pending = [s for (f, _), w in self._steps.items() if f == fi for s in w]
            oldest = min(pending) if pending else limit - self.window
            cutoff = min(oldest, limit - self.window)
            for uid, times in list(users.items()):
                if times and min(times) >= cutoff:
                    continue  # nothing to forget: the common case
                kept = [t for t in times if t >= cutoff]
                if kept:
                    users[uid] = kept
                else:
                    del users[uid]

    # ---------------------------------------------------------------- state

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot of the open windows, the pending revisions and what the
        companion pairs learnt (restored by `load_state`), in a deterministic order."""
        return {
            "v": STATE_VERSION,
            "watermark": None if self.watermark == -math.inf else self.watermark,
            "added": self.added,
            "late": dict(self.late_events),
            "revised": dict(self.revised_events),
            "too_late": dict(self.too_late_events),
            "activity": [
                [start, [[*site, sorted(users)] for site, users in sites.items()]]
                for start, sites in self._activity.items()
            ],
            "recent_active": [
                [list(site), [[begun, sorted(seen)] for begun, seen in kept]]
                for site, kept in sorted(self._recent_active.items())
            ],
            "activity_done": None if self._activity_done == -math.inf else self._activity_done,
            "last_users": [
                [list(key), begun, sorted(users)]
                for key, (begun, users) in sorted(
                    self._last_users.items(), key=lambda kv: repr(kv[0])
                )
            ],
            "revisions": [
                [
                    batch,
                    [
                        [
                            start,
                            [
                                [
                                    list(key),
                                    acc.count,
                                    acc.violations,
                                    dict(acc.codes),
                                    acc.repeats,
                                ]
                                for key, acc in series.items()
                            ],
                        ]
                        for start, series in windows.items()
                    ],
                ]
                for batch, windows in self._late.items()
            ],
            "companions": None if self.companions is None else self.companions.to_state(),
            "volumes": [
                [
                    start,
                    [
                        [
                            list(key),
                            acc.count,
                            sorted(acc.users),
                            acc.violations,
                            dict(acc.codes),
                            acc.repeats,
                            acc.quarantined,
                        ]
                        for key, acc in series.items()
                    ],
                ]
                for start, series in self._volumes.items()
            ],
            "unplanned": [[start, sorted(names)] for start, names in self._unplanned_names.items()],
            "steps": [
                [
                    fi,
                    si,
                    start,
                    [[list(dims), users] for dims, users in step.users.items()],
                    {uid: sorted(a) for uid, a in step.aliases.items()},
                ]
                for (fi, si), windows in self._steps.items()
                for start, step in windows.items()
            ],
            "next": [[fi, si, users] for (fi, si), users in self._next_times.items()],
            "entries": [[fi, si, users] for (fi, si), users in self._entries.items()],
            "early": [[fi, si, start] for (fi, si), start in self._early_done.items()],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace this aggregator's windows with a snapshot from `to_state` (version 1 too:
        no activity, revisions or companions yet; its funnel cohorts get app_version
        "unknown")."""
        version = state.get("v")
        if version not in (1, STATE_VERSION):
            raise ValueError(f"unknown window state version {version!r}")
        wm = state["watermark"]
        self.watermark = -math.inf if wm is None else float(wm)
        self.added = int(state["added"])
        self.late_events = Counter(state["late"])
        self.revised_events = Counter(state.get("revised", {}))
        self.too_late_events = Counter(state.get("too_late", {}))
        self._activity = {
            int(start): {_site(site[:-1]): set(site[-1]) for site in sites}
            for start, sites in state.get("activity", [])
        }
        self._recent_active = {
            _site(site): [(int(begun), set(seen)) for begun, seen in kept]
            for site, kept in state.get("recent_active", [])
        }
        kept = state.get("last_users", [])  # (older snapshots: every user of the next arrives)
        self._last_users = {tuple(key): (int(begun), set(users)) for key, begun, users in kept}
        done = state.get("activity_done")
        self._activity_done = -math.inf if done is None else float(done)
        self._late, self._late_unplanned = {}, {}
        for batch, windows in state.get("revisions", []):
            slot = self._late[int(batch)] = {}
            for start, series in windows:
                slot[int(start)] = {
                    tuple(key): _Late(count, violations, Counter(codes), repeats)
                    for key, count, violations, codes, repeats in series
                }
                names = {k[0] for k, *_ in series if not k[1] and k[0] != OTHER_UNPLANNED}
                if names:
                    self._late_unplanned[(int(batch), int(start))] = names
        companions = state.get("companions")
        if self.companions is not None:
            if companions is not None:
                self.companions.load_state(companions)
            else:  # learning starts again (a v1 snapshot, or companions were off)
                self.companions = Companions(
                    self.companion_minutes, self.window, self.companions.excluded
                )
        self._volumes = {}
        for start, series in state["volumes"]:
            window = self._volumes[int(start)] = {}
            for key, count, users, violations, codes, *rest in series:  # old: fewer fields
                repeats = rest[0] if rest else 0
                shut_out = rest[1] if len(rest) > 1 else 0
                window[tuple(key)] = _Volume(
                    count, set(users), violations, Counter(codes), repeats, shut_out
                )
        self._unplanned_names = {int(s): set(names) for s, names in state["unplanned"]}
        self._steps = {}
        for fi, si, start, dims_users, aliases in state["steps"]:
            step = _Step(
                users={_cohort(dims): users for dims, users in dims_users},
                aliases={uid: set(a) for uid, a in aliases.items()},
            )
            self._steps.setdefault((fi, si), {})[int(start)] = step
        self._next_times = {(fi, si): users for fi, si, users in state["next"]}
        self._entries = {(fi, si): users for fi, si, users in state.get("entries", [])}
        if "early" in state:
            self._early_done = {(fi, si): float(start) for fi, si, start in state["early"]}
        else:  # a snapshot from before early records: the ones already due are not sent late
            limit = self.watermark - self.lateness
            self._early_done = {
                (fi, si): limit - 2 * self.window - early
                for fi, si in self._steps
                if (early := self._early_horizon(fi)) is not None
            }

    @property
    def open_windows(self) -> list[int]:
        """Starts of the windows still accepting events, oldest first."""
        return sorted(self._volumes)
