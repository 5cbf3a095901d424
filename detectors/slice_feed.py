"""What the slice tests (`detectors.slices`) observe, read off each closed window's records.

Per window, from the fine records (event × source × platform × app_version):
- `bad`: of an event's arrivals in a version, those breaking the plan (a repeated business key
  is not a breakage: `repeat` tells it);
- `repeat`: of an event's arrivals in a version, those repeating a business key;
- `pair`: the conversion records of the companion pairs the aggregator learnt from the traffic
  (a screen and the event that follows it), per version and for the whole source;
- `funnel`, `funnel_early`: the plan's funnel steps' conversion records, over the funnel window
  and within a few minutes (sooner), per version and for the whole source;
- `gone` (every `batch_windows` windows, summed: a slow test gains nothing from finer steps): an
  event's arrivals in a version against that version's active users (its activity records; a
  version without them: the distinct users of its events, summed).
Outages (active users all but silent) are the engine's silence test (`detectors.silence`).
Counts are in *units* (events divided by the event's usual events per user and window on that
source, `units`): a session sends its events together, users are the independent trials.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from detectors.records import WITHIN, WindowRecord
from detectors.slices import WHOLE, Observation

COMPANION = "(companion)"  # the funnel name of the pairs the aggregator learnt
DUPLICATE_KEY = "duplicate_key"  # the violation of a repeated business key (not a breakage)
UNKNOWN = "unknown"
EARLY = "@"  # between a step pair and the minutes of its early records: "A→B@10"


def pair_subject(from_event: str, to_event: str) -> str:
    return f"{from_event}→{to_event}"


def pair_steps(subject: str) -> tuple[str, str, str]:
    """A step pair's subject ("A→B", or "A→B@10" for its early records) as (first step, next
    step, minutes of the early records or "")."""
    pair, _, within = subject.partition(EARLY)
    from_event, _, to_event = pair.partition("→")
    return from_event, to_event, within


class SliceFeed:
    """Accumulates a batch of windows for the `gone` test; `add` gives each window's
    observations. State: the batch in progress (JSON-safe through `to_state`)."""

    def __init__(self, batch_windows: int = 10) -> None:
        self.batch_windows = max(1, int(batch_windows))
        self.windows = 0
        self.exposure: dict[str, float] = {}  # "source|version" -> active users
        self.users: dict[str, float] = {}  # "source|version" -> distinct users of its events
        self.sent: dict[str, float] = {}  # "event|source|version" -> units
        self.hushed: dict[str, float] = {}  # "event|source" annotated during the batch
        self.events: dict[str, list[str]] = {}  # source -> planned events seen on it (sorted)

    def add(
        self,
        records: Iterable[WindowRecord],
        arrivals: Callable[[WindowRecord], float],
        units: Callable[[str, str], float],
        quiet: Callable[[dict[str, str]], bool] = lambda series: False,
    ) -> list[Observation]:
        """The observations of one closed window. `arrivals`: a volume record's events sent;
        `units`: events per user of (event, source); `quiet`: series not to observe now
        (annotated)."""
        out: list[Observation] = []
        for rec in records:
            kind = rec.kind
            if kind == "volume":
                if rec.revision or not rec.planned:
                    continue
                self._volume(rec, arrivals(rec), units, quiet, out)
            elif kind == "activity":
                source = rec.series.get("source", UNKNOWN)
                version = rec.series.get("app_version", WHOLE)
                key = f"{source}|{version}"
                self.exposure[key] = self.exposure.get(key, 0.0) + rec.count
            elif kind == "conversion" and not quiet(rec.series):
                self._conversion(rec, out)
        self.windows += 1
        if self.windows >= self.batch_windows:
            out.extend(self._gone())
        return out

    def _volume(
        self,
        rec: WindowRecord,
        sent: float,
        units: Callable[[str, str], float],
        quiet: Callable[[dict[str, str]], bool],
        out: list[Observation],
    ) -> None:
        series = rec.series
        event, source = series.get("event"), series.get("source")
        if event is None or source is None or sent <= 0.0:
            return
        version = series.get("app_version", UNKNOWN)
        where = f"{source}|{version}"
        self.users[where] = self.users.get(where, 0.0) + rec.distinct_users
        known = self.events.get(source)
        if known is None:
            known = self.events[source] = []
        if event not in known:
            known.append(event)
            known.sort()
        if quiet(series):  # annotated: not observed in this batch at all
            self.hushed[f"{event}|{source}"] = 1.0
            return
        per_user = max(units(event, source), 1.0)
        trials = sent / per_user
        key = f"{event}|{where}"
        self.sent[key] = self.sent.get(key, 0.0) + trials
        bad = rec.violations - rec.violation_codes.get(DUPLICATE_KEY, 0)
        out.append(Observation("bad", event, source, version, max(bad, 0) / per_user, trials))
        repeats = getattr(rec, "repeats", 0)
        out.append(Observation("repeat", event, source, version, repeats / per_user, trials))

    @staticmethod
    def _conversion(rec: WindowRecord, out: list[Observation]) -> None:
        series = rec.series
        companion = series.get("funnel", "") == COMPANION
        early = WITHIN in series
        if companion and early:
            return
        subject = pair_subject(series.get("from_event", "?"), series.get("to_event", "?"))
        source = series.get("source", UNKNOWN)
        version = series.get("app_version", UNKNOWN)
        num, den = float(rec.numerator), float(rec.denominator)
        if den <= 0.0:
            return
        if companion:
            measure = "pair"
        elif early:  # the early records stand for the funnel's presence: they come first
            measure = "funnel_early"
            subject += f"{EARLY}{series[WITHIN]}"
        else:
            measure = "funnel"
        for value in (version, WHOLE):
            out.append(Observation(measure, subject, source, value, num, den))

    def _gone(self) -> list[Observation]:
        """The batch's `gone` observations: each planned event seen on a source, in each of its
        versions with activity."""
        versioned = {k: v for k, v in self.exposure.items() if not k.endswith(f"|{WHOLE}")}
        exposure = versioned or self.users
        out = []
        for where in sorted(exposure):
            active = exposure[where]
            if active <= 0.0:
                continue
            source, version = where.split("|", 1)
            if version == WHOLE:
                continue
            for event in self.events.get(source, ()):
                if f"{event}|{source}" in self.hushed:
                    continue
                sent = self.sent.get(f"{event}|{where}", 0.0)
                out.append(Observation("gone", event, source, version, sent, active))
        self.windows = 0
        self.exposure, self.users, self.sent, self.hushed = {}, {}, {}, {}
        return out

    def to_state(self) -> dict:
        return {
            "windows": self.windows,
            "exposure": dict(sorted(self.exposure.items())),
            "users": dict(sorted(self.users.items())),
            "sent": dict(sorted(self.sent.items())),
            "hushed": dict(sorted(self.hushed.items())),
            "events": {k: list(v) for k, v in sorted(self.events.items())},
        }

    @classmethod
    def from_state(cls, state: dict, batch_windows: int = 10) -> SliceFeed:
        feed = cls(batch_windows)
        feed.windows = int(state.get("windows", 0))
        feed.exposure = dict(state.get("exposure", {}))
        feed.users = dict(state.get("users", {}))
        feed.sent = dict(state.get("sent", {}))
        feed.hushed = dict(state.get("hushed", {}))
        feed.events = {k: list(v) for k, v in state.get("events", {}).items()}
        return feed
