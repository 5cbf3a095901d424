"""The traffic a series is part of, window by window: what a rise or a fall is judged against.

Two views of one window's records, both pure:
- the **mix** of each source by slice dimension (`traffic_mix`): its events per app version
  (say), so a series' deviation can be split by the versions its source ran
  (`detectors.attribution.mix_adjusted`); `source_mix` reads one series' source from it;
- the **context** of each volume series (`traffic_context`): the events of its scope (its
  source, or for an event's total all events) against what their models expected, and its own
  part, so a rise every event of a source shares is read as that source's traffic
  (`detectors.worth.carried`); `context_entry` takes the series' own part out.

    >>> from detectors.records import WindowRecord
    >>> recs = [WindowRecord({"event": "A", "source": "ios_app", "app_version": "2.0"}, 0, 60,
    ...                      count=3)]
    >>> source_mix({"event": "A", "source": "ios_app"}, "volume",
    ...            traffic_mix(recs, ("app_version",)), ("app_version",))
    {'app_version': {'2.0': 3.0}}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from detectors.records import WindowRecord
from detectors.rollup import MISSING, Rolled

# source -> slice dimension -> value -> [events of all kinds, set of event names]
Mix = dict[str, dict[str, dict[str, list]]]
# per scope of traffic: [events, expected]; per series key: its own (events, expected)
Context = tuple[dict[str, list[float]], dict[str, tuple[float, float]]]


def traffic_mix(records: Iterable[WindowRecord], dims: Iterable[str]) -> Mix:
    """source -> slice dimension -> value -> [events of all kinds, set of event names]."""
    dims = tuple(dims)
    mix: Mix = {}
    for rec in records:
        if rec.kind != "volume" or rec.count <= 0:
            continue
        per_source = mix.setdefault(str(rec.series.get("source", MISSING)), {})
        for dim in dims:
            value = rec.series.get(dim)
            if value is not None:
                slot = per_source.setdefault(dim, {}).setdefault(str(value), [0.0, set()])
                slot[0] += rec.count
                slot[1].add(rec.series.get("event"))
    return mix


def source_mix(
    series: Mapping[str, str], metric: str, mix: Mix, dims: Iterable[str]
) -> dict[str, dict[str, float]]:
    """dim -> value -> this window's traffic (all events) of the series' source, for the slice
    dimensions (volume series of one source only)."""
    if metric != "volume" or "source" not in series or not mix:
        return {}
    per_source = mix.get(series["source"], {})
    return {
        dim: {v: slot[0] for v, slot in per_source[dim].items()}
        for dim in dims
        if dim in per_source
    }


def scope(r: Rolled) -> str | None:
    """The traffic a volume series is part of: its source's events, or (an event's total) all
    events; None for other series."""
    if r.metric != "volume":
        return None
    if set(r.series) == {"event"}:
        return ""
    return r.series.get("source") if "event" in r.series else None


def traffic_context(rolled: Mapping[str, Rolled], expected: Mapping[str, float]) -> Context:
    """Scope -> this window's events over every event series there and what their models
    expected (`expected`: per series key, as of the window before); and each series' own part,
    to be taken out of its scope's."""
    scopes: dict[str, list[float]] = {}
    own: dict[str, tuple[float, float]] = {}
    for key, r in rolled.items():
        where = scope(r)
        if where is None or key not in expected:
            continue
        exp = expected[key]
        total = scopes.setdefault(where, [0.0, 0.0])
        total[0] += r.numerator
        total[1] += exp
        own[key] = (r.numerator, exp)
    return scopes, own


def context_entry(context: Context, r: Rolled) -> tuple[float, float, float]:
    """(the other series of its scope observed, and expected, its own expected), all 0 when
    the series has no scope or no expectation yet."""
    scopes, parts = context
    where, own = scope(r), parts.get(r.key)
    total = scopes.get(where) if where is not None else None
    if total is None or own is None:
        return 0.0, 0.0, 0.0
    return total[0] - own[0], total[1] - own[1], own[1]
