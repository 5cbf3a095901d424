"""Companion pairs: which planned event normally follows which, learnt from the traffic (pure).

A plan's funnels name a few step pairs; most sparse events have an obvious companion the plan
does not name (the sign-up screen before ``Signed Up``, the payment step before the purchase).
`Companions` learns them from the events themselves and publishes, for each chosen pair (A, B),
the conversion records of a funnel step pair: of the users who did A in a window, how many did
B within `minutes` (series ``{"funnel": "(companion)", "from_event": A, "to_event": B, "source",
"platform", "app_version"}``, the cohort's being A's). An event that stops coming while its
companion still does is then a conversion that falls, which a rare event's own counts show late.

Entries
    A user *enters* A's cohort at most once per horizon H (= `minutes`; a later A within H of
    their last counted entry, either side, is no new entry), as in a funnel step's cohort. An
    entry at time s *converts* to B when the same user (matched on their first id, an
    ``anonymousId``'s when the event has one; a ``userId`` that comes alone is matched to the
    anonymousId it last came with, if within 2 H of then) did B at a time t with
    s <= t <= s + H, from any source. Only events forwarded to events.valid and in the plan
    count, never ``(broken)`` calls.

Learning and selection (deterministic)
    Entries are judged once no event within their horizon can still come (window W is judged
    when ``W.end + H + window + allowed lateness <= watermark``, like a funnel cohort), in
    window order. Every judged entry adds to the day's counts, per source of the entry: entries
    of A, and conversions of (A, B) for every B its user did within H. At each 00:00 UTC (event
    time: before judging the first window of the new day) the pairs are chosen from the counts
    of the last `LEARNING_DAYS` days (a small shop's sign-up screen gathers its support over
    days), provided those span at least `MIN_LEARNING_HOURS` (a stream that starts at 22:00
    learns until the next midnight but one). A pair qualifies on a source with at least
    `MIN_ENTRIES` entries of A, `MIN_CONVERSIONS` conversions and a share conversions / entries
    of at least `MIN_SHARE`; funnel step pairs (published already) and B = ``identify`` (or any
    A = ``identify``: it is sent with the event, not before it) never. For each B and source
    the qualifying A with the highest share is chosen (ties: more conversions, then A's name):
    the web's sign-up page and the apps' sign-up screen are different events before the same
    ``Signed Up``. A pair already chosen is kept while it still qualifies, so that its series
    stays put. The pairs chosen at a midnight publish the cohorts of the day that starts there
    (on the source they were chosen for): before the first choice there is no companion
    record.

Memory (bounded, stated)
    Per user whose latest event is within H + 2 windows + 2 × lateness of the closed edge (plus
    the 10 windows between two prunings): their planned events with times, at most
    `MAX_EVENTS` (the latest kept; the ones no entry can need go as the user sends more), and
    the time of their last entry per event. An alias for 2 H after its last event with both ids.
    Entries awaiting judgement: at most one per (user, event) per H, over H + 2 windows +
    lateness. Counts: at most (planned events)² pairs, whatever the traffic.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection
from typing import Any

from detectors.records import COMPANION, WindowRecord

COMPANION_MINUTES = 10
MIN_ENTRIES = 50  # entries of A over a learning day
MIN_CONVERSIONS = 20  # of those, converted to B
MIN_SHARE = 0.3  # conversions / entries
MIN_LEARNING_HOURS = 12  # a first learning day shorter than this goes on to the next midnight
LEARNING_DAYS = 3  # the pairs are chosen on the counts of the last days
MAX_EVENTS = 64  # recent events kept per user (the latest)
NEVER_COMPANION = ("identify", "(broken)")  # neither A nor B is ever one of these
DAY = 86_400

Cohort = tuple[str, str, str]  # (source, platform, app_version) of the entry


def cohort_record(
    series: dict[str, str], judged: float, window: int, numerator: int, denominator: int
) -> WindowRecord:
    """The conversion record of a cohort judged at `judged` (its window's start plus the
    horizon): dated one window later, like every funnel cohort's."""
    return WindowRecord(
        series=series,
        window_start=float(judged + window),
        window_end=float(judged + 2 * window),
        count=numerator,
        distinct_users=denominator,
        kind="conversion",
        numerator=numerator,
        denominator=denominator,
    )


class _User:
    """One user's recent events, flat (``[key, time, key, time, ...]``, in arrival order: few
    objects for the garbage collector to scan), event key -> time of their last entry, and
    their latest event time."""

    __slots__ = ("entries", "events", "last")

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.entries: dict[str, float] = {}
        self.last = -math.inf


class Companions:
    """Learns companion pairs and counts their cohorts (see the module docstring)."""

    def __init__(
        self,
        minutes: int = COMPANION_MINUTES,
        window_seconds: int = 60,
        excluded: Collection[tuple[str, str]] = (),
    ) -> None:
        """`excluded`: the funnel step pairs (A, B), never chosen (their records exist)."""
        if minutes <= 0:
            raise ValueError("companion minutes must be positive")
        self.horizon = float(minutes * 60)
        self.window = int(window_seconds)
        self.excluded = frozenset(excluded)
        self._users: dict[str, _User] = {}
        # "u:<userId>" -> (the user's first id, the latest time both came together)
        self._aliases: dict[str, tuple[str, float]] = {}
        # window -> its entries, flat: [uid, event key, time, cohort, uid, ...]
        self._pending: dict[int, list[Any]] = {}
        self._judged = -math.inf  # the end of the last window judged: entries to judge are later
        self.chosen: dict[tuple[str, str], str] = {}  # (B, source) -> A, sorted
        # (A, source) -> the Bs it is chosen for there
        self._followers: dict[tuple[str, str], tuple[str, ...]] = {}
        self.day: int | None = None  # the UTC day (epoch days) of the windows judged last
        self.learning_since: float | None = None  # first window judged into the counts
        # the counts of the days before the current one (the latest last), and the current's:
        # (A, source) -> judged entries; (A, B, source) -> converted entries
        self.past: list[tuple[Counter[tuple[str, str]], Counter[tuple[str, str, str]]]] = []
        self.entries: Counter[tuple[str, str]] = Counter()
        self.conversions: Counter[tuple[str, str, str]] = Counter()

    # ---------------------------------------------------------------- input

    def add(self, ids: tuple[str, ...], key: str, ts: float, start: int, cohort: Cohort) -> None:
        """A forwarded planned event `key` of the user with `ids` at event time `ts` (in the
        window starting at `start`), `cohort` its (source, platform, app_version)."""
        uid = ids[0]
        if len(ids) > 1:
            alias = self._aliases.get(ids[1])
            if alias is None or alias[0] != uid or ts > alias[1]:
                self._aliases[ids[1]] = (uid, ts)
        elif uid[0] == "u":  # a userId alone: the first id it came with, if recently
            alias = self._aliases.get(uid)
            if alias is not None and abs(ts - alias[1]) < 2 * self.horizon:
                uid = alias[0]
        user = self._users.get(uid)
        if user is None:
            user = self._users[uid] = _User()
        if ts > user.last:
            user.last = ts
        events = user.events
        judged = self._judged
        if events and events[1] < judged:  # no entry still to judge needs the oldest ones
            i, n = 3, len(events)
            while i < n and events[i] < judged:
                i += 2
            del events[: i - 1]
        events.append(key)
        events.append(ts)
        if len(events) > 2 * MAX_EVENTS:  # the latest are kept, however `close` is called
            oldest = min(range(1, len(events), 2), key=events.__getitem__)
            del events[oldest - 1 : oldest + 1]
        last = user.entries.get(key)
        if last is None or abs(ts - last) >= self.horizon:
            user.entries[key] = ts if last is None else max(ts, last)
            pending = self._pending.get(start)
            if pending is None:
                pending = self._pending[start] = []
            pending.extend((uid, key, ts, cohort))

    # --------------------------------------------------------------- output

    def close(self, limit: float) -> list[WindowRecord]:
        """Judge the entries of every window whose horizon has passed by `limit` (the watermark
        minus the allowed lateness); the records of the chosen pairs, dated like a funnel
        cohort's (`W + H + window`)."""
        records: list[WindowRecord] = []
        for start in sorted(self._pending):
            if start + 2 * self.window + self.horizon > limit:
                break
            records.extend(self._judge(start, self._pending.pop(start)))
            self._judged = float(start + self.window)
        return records

    def drop_pending(self) -> None:
        """End of input: forget the entries whose horizon has not passed (never judged)."""
        self._pending.clear()

    def _judge(self, start: int, entries: list[Any]) -> list[WindowRecord]:
        day = start // DAY
        if self.day is None or day > self.day:
            if self.day is not None:
                self._choose(day * DAY)
            self.day = day
        if self.learning_since is None:
            self.learning_since = float(start)
        counted: dict[tuple[str, str, Cohort], list[int]] = {}
        horizon = self.horizon
        followers = self._followers
        conversions = self.conversions
        users = self._users
        for i in range(0, len(entries), 4):
            uid, a, s, cohort = entries[i], entries[i + 1], entries[i + 2], entries[i + 3]
            source = cohort[0]
            self.entries[(a, source)] += 1
            user = users.get(uid)
            converted: list[str] = []
            if user is not None:
                end = s + horizon
                events = user.events
                for j in range(0, len(events), 2):  # arrival order: deterministic
                    b = events[j]
                    if b != a and s <= events[j + 1] <= end and b not in converted:
                        converted.append(b)
                        conversions[(a, b, source)] += 1
            for b in followers.get((a, source), ()):
                slot = counted.get((a, b, cohort))
                if slot is None:
                    slot = counted[(a, b, cohort)] = [0, 0]
                slot[0] += b in converted
                slot[1] += 1
        out = []
        for (a, b, cohort), (numerator, denominator) in sorted(counted.items()):
            series = {
                "funnel": COMPANION,
                "from_event": a,
                "to_event": b,
                "source": cohort[0],
                "platform": cohort[1],
                "app_version": cohort[2],
            }
            out.append(cohort_record(series, start + horizon, self.window, numerator, denominator))
        return out

    def _choose(self, midnight: float) -> None:
        """Choose the pairs from the counts of the last `LEARNING_DAYS` days (see the module
        docstring); a first day too short goes on learning."""
        since = self.learning_since
        if since is None or midnight - since < MIN_LEARNING_HOURS * 3600:
            return
        self.past = [*self.past, (self.entries, self.conversions)][-LEARNING_DAYS:]
        entries: Counter[tuple[str, str]] = Counter()
        conversions: Counter[tuple[str, str, str]] = Counter()
        for day_entries, day_conversions in self.past:
            entries.update(day_entries)
            conversions.update(day_conversions)
        qualified: dict[tuple[str, str], list[tuple[float, int, str]]] = {}
        for (a, b, source), n in conversions.items():
            if b in NEVER_COMPANION or a in NEVER_COMPANION or (a, b) in self.excluded:
                continue
            count = entries[(a, source)]
            if count >= MIN_ENTRIES and n >= MIN_CONVERSIONS and n >= MIN_SHARE * count:
                qualified.setdefault((b, source), []).append((n / count, n, a))
        chosen = {}
        for target in sorted(qualified):
            candidates = qualified[target]
            kept = self.chosen.get(target)
            if kept is not None and any(a == kept for _, _, a in candidates):
                chosen[target] = kept
            else:  # the highest share; then more conversions; then the name
                chosen[target] = min(candidates, key=lambda c: (-c[0], -c[1], c[2]))[2]
        self._set_chosen(chosen)
        self.entries = Counter()
        self.conversions = Counter()
        self.learning_since = None

    def _set_chosen(self, chosen: dict[tuple[str, str], str]) -> None:
        self.chosen = dict(sorted(chosen.items()))
        followers: dict[tuple[str, str], list[str]] = {}
        for (b, source), a in self.chosen.items():
            followers.setdefault((a, source), []).append(b)
        self._followers = {k: tuple(bs) for k, bs in followers.items()}

    def prune(self, limit: float, lateness: float) -> None:
        """Forget the users whose latest event is older than any window still to be judged can
        need (`limit`: the watermark minus the allowed lateness) and than any new event's
        horizon can reach back to, and the aliases no new event can use. (An active user's
        older times go as they send that event again, `add`.) What is forgotten changes no
        record: when `advance` prunes does not matter."""
        cutoff = min(limit - 2 * self.window - self.horizon, self._judged) - lateness
        users = self._users
        for uid in [u for u, user in users.items() if user.last < cutoff]:
            del users[uid]
        expired = limit - self.window - 2 * self.horizon  # (new events: after limit - window)
        for alias in [a for a, (_, t) in self._aliases.items() if t <= expired]:
            del self._aliases[alias]

    # ---------------------------------------------------------------- state

    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable, in a deterministic order (dicts keep their insertion order)."""
        return {
            "users": [[uid, u.events, u.entries] for uid, u in self._users.items()],
            "aliases": self._aliases,
            "pending": [[start, entries] for start, entries in self._pending.items()],
            "chosen": [[b, source, a] for (b, source), a in self.chosen.items()],
            "day": self.day,
            "since": self.learning_since,
            "entries": _entries_state(self.entries),
            "conversions": _conversions_state(self.conversions),
            "past": [[_entries_state(e), _conversions_state(c)] for e, c in self.past],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self._users = {}
        for uid, events, entries in state["users"]:
            user = self._users[uid] = _User()
            user.events = [float(v) if i % 2 else v for i, v in enumerate(events)]
            user.entries = {k: float(t) for k, t in entries.items()}
            user.last = max([*user.events[1::2], *user.entries.values()], default=-math.inf)
        self._aliases = {alias: (uid, float(t)) for alias, (uid, t) in state["aliases"].items()}
        self._pending = {}
        for start, entries in state["pending"]:
            flat = self._pending[int(start)] = list(entries)
            for i in range(0, len(flat), 4):
                flat[i + 2], flat[i + 3] = float(flat[i + 2]), tuple(flat[i + 3])
        chosen = state["chosen"]
        if isinstance(chosen, dict):  # a state from before the choice per source: learn again
            self._set_chosen({})
            self.day = state["day"]
            self.learning_since = None
            self.entries, self.conversions, self.past = Counter(), Counter(), []
            return
        self._set_chosen({(b, source): a for b, source, a in chosen})
        self.day = state["day"]
        since = state["since"]
        self.learning_since = None if since is None else float(since)
        self.entries = _entries_counter(state["entries"])
        self.conversions = _conversions_counter(state["conversions"])
        self.past = [
            (_entries_counter(e), _conversions_counter(c)) for e, c in state.get("past", [])
        ]


def _entries_state(counts: Counter[tuple[str, str]]) -> list[list[Any]]:
    return [[a, source, n] for (a, source), n in counts.items()]


def _conversions_state(counts: Counter[tuple[str, str, str]]) -> list[list[Any]]:
    return [[a, b, source, n] for (a, b, source), n in counts.items()]


def _entries_counter(rows: list[list[Any]]) -> Counter[tuple[str, str]]:
    return Counter({(a, source): n for a, source, n in rows})


def _conversions_counter(rows: list[list[Any]]) -> Counter[tuple[str, str, str]]:
    return Counter({(a, b, source): n for a, b, source, n in rows})
