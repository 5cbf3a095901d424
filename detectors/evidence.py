"""The evidence rules of `trackwatch explain` (pure): each looks at one kind of sign and says
which side it points to (tracking, real change, traffic quality) and how strongly. See
`detectors.verdict` for the rules in words and how they add up."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from detectors.annotations import Annotation
from detectors.intervals import nb_cdf, nb_sf
from detectors.period_data import (
    RELEASE_WINDOW,
    Cell,
    Evidence,
    Move,
    PeriodData,
    Scope,
    beyond_chance,
    clock_text,
    compare,
    compare_rate,
    compare_total,
    n_text,
    pct_text,
    ratio_text,
    rest_of,
    signed_text,
)


def funnel_focus(
    conversions: list[Cell], scope: Scope, shifts: list[int]
) -> tuple[str, Move, str] | None:
    cells = [
        c
        for c in conversions
        if c.labels.get("funnel") == scope.funnel and scope.matches(c.labels, with_event=False)
    ]
    pairs: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        pairs.setdefault((c.labels.get("from_event", ""), c.labels.get("to_event", "")), []).append(
            c
        )
    best: tuple[float, str, Move, str] | None = None
    for (a, b), group in pairs.items():
        move = compare_rate(group, shifts, "numerator", "denominator")
        if move.expected is None:
            continue
        den = sum(c.get(0).denominator for c in group)
        text = (
            f"the step from {a} to {b}: {n_text(move.observed)} of {n_text(den)} users went on "
            f"(about {n_text(move.expected)} usually, "
            f"{pct_text(move.observed / den) if den else '–'} vs "
            f"{pct_text(move.expected / den) if den else '–'})"
        )
        if best is None or abs(move.z) > best[0]:
            best = (abs(move.z), b, move, text)
    return None if best is None else (best[1], best[2], best[3])


def annotation_matches(note: Annotation, scope: Scope) -> bool:
    if note.events and scope.event is not None and scope.event not in note.events:
        return False
    return not (note.sources and scope.source is not None and scope.source not in note.sources)


def alert_matches(alert: dict[str, Any], scope: Scope, event: str | None) -> bool:
    series = alert.get("series") or {}
    names = {series.get("event"), series.get("from_event"), series.get("to_event")}
    if event is not None and series and event not in names:
        return False
    for key in ("source", "platform", "app_version"):
        wanted = getattr(scope, key)
        if wanted is not None and series.get(key) not in (None, wanted):
            return False
    return True


def top_codes(cells: list[Cell]) -> str:
    from detectors.explain import CODE_PHRASES

    codes: dict[str, int] = {}
    for c in cells:
        for code, n in c.codes.items():
            codes[code] = codes.get(code, 0) + n
    if not codes:
        return ""
    top = max(codes, key=lambda k: codes[k])
    return f", mostly for {CODE_PHRASES.get(top, top)}"


def version_cross(
    volume: list[Cell],
    totals: list[Cell],
    source: str,
    version: str,
    event: str,
    shifts: list[int] | None = None,
) -> Move | None:
    """`event` on one app version of `source` in the period against what its other versions
    send for the same amount of other events (a cross-section: no history needed); when they
    are too few to tell (every user updated within hours), against what the source sent for
    as many other events in the earlier periods `shifts`."""
    per: dict[str, list[float]] = {}
    for c in totals:
        if c.labels.get("source") == source:
            per.setdefault(c.labels.get("app_version", ""), [0.0, 0.0])[1] += c.get(0).count
    for c in volume:
        if c.labels.get("source") == source and c.labels.get("event") == event:
            row = per.setdefault(c.labels.get("app_version", ""), [0.0, 0.0])
            row[0] += c.get(0).count
            row[1] -= c.get(0).count  # the totals hold it: other events only
    versions = [v for v in per if v not in ("", "unknown")]
    if version not in versions or len(versions) < 2:
        return None
    mine, base = per[version]
    peers_e = sum(per[w][0] for w in versions if w != version)
    peers_b = sum(per[w][1] for w in versions if w != version)
    if peers_e < 10 and shifts:  # peers too quiet to compare with: the source's past
        peers_e = sum(
            c.get(k).count
            for c in volume
            if c.labels.get("source") == source and c.labels.get("event") == event
            for k in shifts
        )
        peers_b = (
            sum(c.get(k).count for c in totals if c.labels.get("source") == source for k in shifts)
            - peers_e
        )
    if peers_b <= 0 or base <= 0 or peers_e < 10:
        return None
    expected = base * peers_e / peers_b
    # counting noise, the peers' own (a rate from few events is loose) and 20 % for versions
    # being used a little differently
    var = max(expected, 1.0) + expected**2 / max(peers_e, 1.0) + (0.2 * expected) ** 2
    return Move(mine, expected, math.sqrt(var), 0)


def _sources_of(volume: list[Cell], scope: Scope, event: str) -> list[str]:
    if scope.source is not None:
        return [scope.source]
    found = {c.labels.get("source") for c in volume if c.labels.get("event") == event}
    return sorted(s for s in found if s and scope.matches({"source": s}, with_event=False))


def version_evidence(
    data: PeriodData,
    scope: Scope,
    volume: list[Cell],
    totals: list[Cell],
    event: str | None,
    direction: int = 0,
    data_shifts: list[int] | None = None,
    counted_back: set[tuple[str, str]] | None = None,
) -> list[Evidence]:
    """An app version that sends the event unlike its peers (and was released just before).
    `counted_back`: (source, version) whose blocked events a funnel step already counted back
    (`versions_blocked`): their shortfall is said as context only."""
    if event is None:
        return []
    out: list[Evidence] = []
    for source in _sources_of(volume, scope, event):
        versions = sorted(
            {c.labels.get("app_version", "") for c in totals if c.labels.get("source") == source}
        )
        for v in versions:
            if scope.app_version is not None and v != scope.app_version:
                continue
            move = version_cross(volume, totals, source, v, event, data_shifts)
            if move is None or move.expected is None or move.expected < 5:
                continue
            if move.direction == 0 or abs(move.observed - move.expected) < 0.3 * move.expected:
                continue
            if move.direction > 0:
                continue  # a version sending more (a new feature, its update events) is no
                # sign of broken tracking by itself; sending twice shows in the repeats
            if scope.app_version is None and move.direction != direction:
                continue  # a version going the other way does not explain the change
            mine, expected = move.observed, move.expected
            how = f"sends no {event}" if mine == 0 else f"sends only {n_text(mine)} {event}"
            known = (source, v) in (counted_back or set())
            out.append(
                Evidence(
                    "context" if known else "tracking",
                    0 if known else 2,
                    f"app version {v} on {source} {how} where about {n_text(expected)} were due "
                    "for its share of the traffic",
                )
            )
            first = data.first_seen.get((source, v))
            if first is not None and data.start - RELEASE_WINDOW <= first <= data.end:
                out.append(
                    Evidence(
                        "context" if known else "tracking",
                        0 if known else 1,
                        f"app version {v} on {source} was released just before (first seen "
                        f"{clock_text(first)})",
                    )
                )
    return out


def step_before(conversions: list[Cell], event: str, scope: Scope) -> str | None:
    """A step leading to `event` (a funnel step or a learnt companion) that went on while
    the users who did it no longer sent `event`."""
    for c_group in _group_pairs(
        conversions,
        lambda labels: labels.get("to_event") == event and scope.matches(labels, with_event=False),
    ).values():
        den = sum(c.get(0).denominator for c in c_group)
        num = sum(c.get(0).numerator for c in c_group)
        if den >= 10 and num <= 0.05 * den:
            before = c_group[0].labels.get("from_event", "the step before")
            sent = "none" if num == 0 else n_text(num)
            return (
                f"{n_text(den)} users did {before} but {sent} of them sent {event} next: "
                "the step before went on"
            )
    return None


@dataclass(frozen=True)
class Recount:
    """A funnel step counted again with the next events the plan blocked (`blocked_recount`)."""

    step: Move  # as counted: the users who went on, had the blocked events arrived
    blocked: float  # the next event's events blocked in the period ...
    arrived: float  # ... of those that arrived
    usual: float  # the share usually blocked


def blocked_recount(cells: list[Cell], step: Move, shifts: list[int]) -> Recount | None:
    """A funnel step that fell while the plan blocked (quarantined) more of its next event than
    usual: blocked events never reach the funnel, so the step is counted again as if they had
    arrived (the users who went on scaled up by the share blocked beyond usual; one event per
    user, as a step's next event mostly is). None when the step did not fall or no more was
    blocked than usual (beyond chance, and three at least, as the plan-breaking rule asks of a
    small period)."""
    if step.expected is None or step.observed >= step.expected:
        return None
    blocked = sum(c.get(0).quarantined for c in cells)
    arrived = blocked + sum(c.get(0).count for c in cells)
    base_blocked = sum(c.get(k).quarantined for c in cells for k in shifts)
    base_arrived = base_blocked + sum(c.get(k).count for c in cells for k in shifts)
    usual = base_blocked / base_arrived if base_arrived else 0.0
    if arrived <= 0 or blocked < 3 or not beyond_chance(blocked, usual * arrived):
        return None
    extra = (blocked / arrived - usual) / (1.0 - usual) if usual < 1 else 0.0
    if extra <= 0 or extra >= 1:
        return None
    counted = Move(step.observed / (1.0 - extra), step.expected, step.spread, step.days)
    return Recount(counted, blocked, arrived, usual)


def versions_blocked(cells: list[Cell], usual: float) -> set[tuple[str, str]]:
    """(source, version) whose events the plan blocked beyond `usual` (the scope's share that
    `blocked_recount` counts against: a release broken since its first day is among them)."""
    out = set()
    for c in cells:
        now = c.get(0)
        if now.quarantined > 0 and beyond_chance(
            now.quarantined, usual * (now.count + now.quarantined)
        ):
            out.add((c.labels.get("source", ""), c.labels.get("app_version", "")))
    return out


def blocked_step_evidence(recount: Recount, step: Move, event: str) -> list[Evidence]:
    """The fall of a step counted again (`blocked_recount`) splits in two: the part the blocked
    events account for (tracking) and what is still missing once they are counted (real, when
    beyond chance). Each side weighs 2 when it holds the larger part of the fall (at an even
    split, neither does), else 1; so a release that blocks a few orders while checkout really
    converts less is not told as tracking alone. Nothing when the recount adds nobody (no user
    went on: the blocked events cannot be spread over them)."""
    assert step.expected is not None
    counted, blocked, arrived = recount.step, recount.blocked, recount.arrived
    fall = step.expected - step.observed
    explained = min(counted.observed, step.expected) - step.observed
    if explained <= 0.0:
        return []
    share = round(explained / fall, 6)  # of the fall, the blocked events' part (rounded: an
    # even split must not be decided by floating point)
    what = (
        f"counting the {n_text(blocked)} {event} events the tracking plan blocked "
        f"({pct_text(blocked / arrived)} of them, usually {pct_text(recount.usual)}), about "
        f"{n_text(counted.observed)} users would have gone on where about "
        f"{n_text(step.expected)} usually do"
    )
    if counted.direction >= 0:  # the rest is within chance: the blocked events are the cause
        if share >= 0.5:
            return [Evidence("tracking", 2, f"{what}: the blocked events account for the fall")]
        return [
            Evidence(
                "tracking",
                1,
                f"{what}: the blocked events account for {pct_text(share)} of the fall; the "
                "rest is within chance",
            )
        ]
    return [
        Evidence(
            "tracking",
            2 if share > 0.5 else 1,
            f"{what}: the blocked events account for {pct_text(share)} of the fall",
        ),
        Evidence(
            "real change",
            2 if share < 0.5 else 1,
            f"even counting them, the step fell: {pct_text(1 - share)} of the fall is not the "
            "tracking's, so that part looks real",
        ),
    ]


def _group_pairs(
    cells: list[Cell], pred: Callable[[dict[str, str]], bool]
) -> dict[tuple[str, str], list[Cell]]:
    out: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        if pred(c.labels):
            out.setdefault(
                (c.labels.get("from_event", ""), c.labels.get("to_event", "")), []
            ).append(c)
    return out


def sources_evidence(
    volume: list[Cell],
    event: str,
    scope: Scope,
    shifts: list[int],
    direction: int,
    with_blocked: bool = False,
) -> list[Evidence]:
    """Whether `event` moved on every source together (real) or on one alone (tracking).
    `with_blocked`: the events the plan blocked are counted too (a funnel step's fall already
    split between its blocked events and the rest)."""
    measure = compare_total if with_blocked else compare
    sources = sorted(
        {c.labels.get("source", "") for c in volume if c.labels.get("event") == event} - {""}
    )
    if len(sources) < 2:
        return []
    moves = {
        s: measure(
            [c for c in volume if c.labels.get("event") == event and c.labels.get("source") == s],
            shifts,
        )
        for s in sources
    }
    sizable = {s: m for s, m in moves.items() if m.expected is not None and m.expected >= 0.5}
    overall = measure([c for c in volume if c.labels.get("event") == event], shifts)
    rel = abs(overall.ratio - 1) if overall.expected else 0.0
    if len(sizable) < 2:  # a sparse event: its sources together
        rest = not_one_source_alone(volume, event, moves, shifts, direction, rel, with_blocked)
        return [] if rest is None else [rest]
    # together: each source at least 1.5 spreads the same way (the total is significant) and
    # by at least half the event's relative change over every source; alone: the others moved
    # by less than half of it
    same = [
        s
        for s, m in sizable.items()
        if m.z * direction >= 1.5 and (m.ratio - 1) * direction >= 0.5 * rel
    ]
    still = [
        s
        for s, m in sizable.items()
        if s not in same and m.direction != direction and abs(m.ratio - 1) < 0.5 * rel
    ]
    if len(same) == len(sizable):
        return [
            Evidence(
                "real change", 1, f"{event} moved the same way on every source ({', '.join(same)})"
            )
        ]
    rest = not_one_source_alone(volume, event, moves, shifts, direction, rel, with_blocked)
    if rest is not None:
        return [rest]
    if scope.source is not None and scope.source in same and len(same) == 1 and still:
        return [
            Evidence(
                "tracking",
                1,
                f"{event} moved on {scope.source} only; {', '.join(still)} stayed as usual",
            )
        ]
    return []


ALONE_P = 0.067  # beyond chance: as unlikely as 1.5 spreads one way, as `same` asks each source


def not_one_source_alone(
    volume: list[Cell],
    event: str,
    moves: dict[str, Move],
    shifts: list[int],
    direction: int,
    rel: float,
    with_blocked: bool = False,
) -> Evidence | None:
    """The move is not one source's: without the source that moved most, the others together
    still moved the same way beyond chance (a fault of one tracker stays on its source). For
    sparse events, whose sources each see a handful: the others' count is tested against what
    their earlier periods predict for one period (a Poisson rate known from those periods only,
    with Jeffreys' prior: a negative binomial), not against a spread floored at one event.
    `with_blocked`: the events the plan blocked are counted too (as in `moves`)."""
    if direction == 0 or len(moves) < 2 or not shifts:
        return None
    top = max(moves, key=lambda s: direction * (moves[s].observed - (moves[s].expected or 0.0)))
    others = [s for s in moves if s != top]
    cells = [
        c for c in volume if c.labels.get("event") == event and c.labels.get("source") in others
    ]

    def sent(k: int) -> float:
        return sum(c.get(k).count + (c.get(k).quarantined if with_blocked else 0) for c in cells)

    now = sent(0)
    scale = getattr(shifts, "scale", 1.0)
    before = scale * sum(sent(k) for k in shifts)
    mean = before / len(shifts)
    if (now / mean - 1 if mean else math.inf) * direction < 0.5 * rel:
        return None
    p = _predictive_tail(now, before, len(shifts) / scale, direction)
    # and beyond the earlier periods' own swings, as `same` asks of each source
    measure = compare_total if with_blocked else compare
    if p > ALONE_P or measure(cells, shifts).z * direction < 1.5:
        return None
    return Evidence(
        "real change",
        1,
        f"{event} moved on more than one source: without {top}, "
        f"{', '.join(others)} sent {n_text(now)} where about {n_text(mean)} were usual "
        f"(chance gives as {'many' if direction > 0 else 'few'} {100 * p:.1f} % of times)",
    )


def _predictive_tail(now: float, before: float, periods: float, direction: int) -> float:
    """P(a period's count >= now) (direction > 0) or <= now (< 0), for a Poisson count whose
    rate is known from `before` events over `periods` earlier periods (Jeffreys' prior): a
    negative binomial with r = before + 1/2 (mean r / periods, phi = 1 / r)."""
    r, k = before + 0.5, math.floor(now)
    if direction > 0:
        return nb_sf(k, r / periods, 1.0 / r)
    return nb_cdf(k, r / periods, 1.0 / r)


def is_server_scope(volume: list[Cell], scope: Scope) -> bool:
    return scope.platform == "server" or any(
        c.labels.get("platform") == "server" and c.labels.get("source") == scope.source
        for c in volume
    )


def mirrors(conversions: list[Cell], event: str, name: str, shifts: list[int]) -> bool:
    """Whether server event `name` follows `event` for the same users: a conversion between
    them (a learnt companion pair, or a funnel step) that at least half of the users took in
    the earlier periods (orders, then their captured payments)."""
    pair = [
        c
        for c in conversions
        if {c.labels.get("from_event"), c.labels.get("to_event")} == {event, name}
    ]
    num = sum(c.get(k).numerator for c in pair for k in shifts)
    den = sum(c.get(k).denominator for c in pair for k in shifts)
    return den >= 10 and num >= 0.5 * den


def server_evidence(
    volume: list[Cell],
    conversions: list[Cell],
    scope: Scope,
    event: str | None,
    shifts: list[int],
    main: Move,
    step: bool = False,
) -> list[Evidence]:
    """A server event (platform "server": no tracker feeds it) that mirrors `event` (the same
    users go on to it, and usually as many, within 30 %, over every source: the same business
    fact, such as orders and captured payments), read for the scope alone: the server's count
    over the usual ratio, less what the event's other sources sent in the period, is what the
    scope really did. Two stories: it did what its trackers sent (real), or what was expected
    (the trackers lost or added the difference: tracking). Their likelihoods: the first only
    has the mirror's own slack (how far the server strayed from the event's total in the
    earlier periods), the second that and the uncertainty of the expectation. A ratio of 2 is
    a hint (weight 1), 20 close to proof (weight 2). `main`: the event's move in the scope, or
    (`step`) the funnel step's, whose expectation is the usual rate of the users who got there.
    Nothing when the server cannot tell the two apart."""
    if event is None or main.expected is None:
        return []
    mine = [
        c
        for c in volume
        if c.labels.get("event") == event and scope.matches(c.labels, with_event=False)
    ]
    own = compare(mine, shifts)
    if not step and own.expected is not None:  # the server counts events, not a step's users
        main = own
    if main.expected is None:
        return []
    every = [c for c in volume if c.labels.get("event") == event]
    usual_all = compare(every, shifts).expected

    def arrived(cells: list[Cell], k: int) -> float:
        return sum(c.get(k).count + c.get(k).quarantined for c in cells)

    server = [c for c in volume if c.labels.get("platform") == "server"]
    for name in sorted({c.labels.get("event", "") for c in server}):
        theirs = [c for c in server if c.labels.get("event") == name]
        move = compare(theirs, shifts)
        if move.expected is None or not usual_all or not 0.7 <= move.expected / usual_all <= 1.3:
            continue
        if not mirrors(conversions, event, name, shifts):
            continue
        base_all = sum(arrived(every, k) for k in shifts)
        if base_all <= 0:
            continue
        ratio = sum(c.get(k).count for c in theirs for k in shifts) / base_all
        if ratio <= 0:
            continue
        slack = [sum(c.get(k).count for c in theirs) / ratio - arrived(every, k) for k in shifts]
        mean = sum(slack) / len(slack)
        slack_var = (
            sum((x - mean) ** 2 for x in slack) / (len(slack) - 1) if len(slack) >= 2 else 0.0
        )
        slack_var = max(slack_var, 1.0)
        done = move.observed / ratio - (arrived(every, 0) - arrived(mine, 0))  # the scope's
        sent = arrived(mine, 0)
        diff = main.observed - main.expected
        due = sent - diff  # what the scope would have sent, had nothing changed
        wide = slack_var + main.spread**2
        log_lr = (  # log of P(server | real) / P(server | tracking)
            -((done - sent) ** 2) / (2 * slack_var)
            + (done - due) ** 2 / (2 * wide)
            + 0.5 * math.log(wide / slack_var)
        )
        weight = 2 if abs(log_lr) >= math.log(20) else (1 if abs(log_lr) >= math.log(2) else 0)
        z_same, z_none = (done - sent) / math.sqrt(wide), (done - due) / math.sqrt(wide)
        sdiff = move.observed - move.expected
        if weight and log_lr > 0 and abs(z_same) < 1.5:
            return [
                Evidence(
                    "real change",
                    weight,
                    f"the server's {name}, which no tracker sends, moved with it: it counts "
                    f"about {n_text(done)} for {scope.describe_where()} where the trackers sent "
                    f"{n_text(sent)} and {n_text(due)} were due ({signed_text(sdiff)} in all): "
                    "the change is in the business, not in the tracking",
                )
            ]
        if weight and log_lr < 0 and abs(z_none) < 1.5:
            return [
                Evidence(
                    "tracking",
                    weight,
                    f"the server's {name}, which no tracker sends, did not move with it: it "
                    f"counts about {n_text(done)} for {scope.describe_where()}, close to the "
                    f"usual (about {n_text(due)}), where the trackers sent {n_text(sent)}: the "
                    "server did not see it",
                )
            ]
    return []


def whole_traffic_evidence(
    volume: list[Cell],
    activity: list[Cell],
    conversions: list[Cell],
    scope: Scope,
    shifts: list[int],
    direction: int,
) -> list[Evidence]:
    out: list[Evidence] = []
    sources = sorted({c.labels.get("source", "") for c in volume if scope.matches(c.labels)} - {""})
    moves = {
        s: compare([c for c in volume if c.labels.get("source") == s], shifts) for s in sources
    }
    sizable = {s: m for s, m in moves.items() if m.expected and m.expected >= 20}
    together = (
        direction != 0
        and len(sizable) >= 2
        and all(m.direction == direction for m in sizable.values())
    )
    running = [c for c in activity if scope.matches(c.labels, with_event=False)]
    keep = compare_rate(running, shifts, "numerator", "denominator")
    funnel = [
        c
        for c in conversions
        if scope.matches(c.labels, with_event=False) and c.labels.get("funnel") != "(companion)"
    ]
    conv = compare_rate(funnel, shifts, "numerator", "denominator")
    lost = keep.direction < 0 and keep.expected and keep.observed < 0.7 * keep.expected
    if (  # each source at least 20 events due: no chance brings them all under a fifth
        direction <= 0
        and len(sizable) >= 2
        and all(m.observed < 0.2 * m.expected for m in sizable.values())
    ):
        out.append(
            Evidence(
                "tracking",
                2,
                "every source fell by more than 80 % at once ("
                + ", ".join(
                    f"{s} {n_text(m.observed)} vs about {n_text(m.expected)}"
                    for s, m in sizable.items()
                )
                + "): audiences do not vanish together within minutes; the collection lost them",
            )
        )
        together = False
    if lost:
        before = max(1.0, sum(c.get(0).denominator for c in running))
        out.append(
            Evidence(
                "tracking",
                2,
                "users active a minute before went silent mid-session: "
                f"{pct_text(keep.observed / before)} sent anything again (usually "
                f"{pct_text((keep.expected or 0.0) / before)}): events are lost on the way",
            )
        )
    if together and not lost:
        out.append(
            Evidence(
                "real change",
                1,
                "every source moved together "
                f"({', '.join(f'{s} {ratio_text(m.ratio)}' for s, m in sizable.items())})",
            )
        )
    den = sum(c.get(0).denominator for c in funnel)
    if conv.expected and direction and den >= 20:
        if conv.direction == 0:
            out.append(
                Evidence(
                    "real change",
                    1,
                    "the funnel's conversions held: more (or fewer) people, behaving as usual",
                )
            )
        elif conv.direction < 0 and direction < 0:
            out.append(
                Evidence(
                    "tracking",
                    1,
                    "users' next funnel steps went missing too (conversions fell with the volume)",
                )
            )
    return out


def quality_evidence(
    volume: list[Cell],
    totals: list[Cell],
    activity: list[Cell],
    scope: Scope,
    event: str,
    shifts: list[int],
    main: Move,
    sent_twice: bool = False,
) -> list[Evidence]:
    """Excess events from visitors who did nothing else, or from few users."""
    out: list[Evidence] = []
    cells = [c for c in volume if scope.matches(c.labels)]
    users = compare(cells, shifts, "users")
    if main.expected is None or users.expected is None:
        return out
    excess = main.observed - main.expected
    excess_users = users.observed - users.expected
    sources = {c.labels.get("source") for c in cells}
    others = compare(
        rest_of(
            totals,
            volume,
            event,
            lambda labels: (
                labels.get("source") in sources and scope.matches(labels, with_event=False)
            ),
        ),
        shifts,
    )
    active = compare(
        [
            c
            for c in activity
            if c.labels.get("source") in sources and scope.matches(c.labels, with_event=False)
        ],
        shifts,
    )
    if (
        excess_users > 0
        and active.direction > 0
        and active.expected is not None
        and active.observed - active.expected >= 0.5 * excess_users
        and excess >= 10
        and (others.expected or 0) > 0
        and others.direction <= 0
        and others.ratio - 1 <= 0.25 * (main.ratio - 1)  # the rest did not follow
    ):
        out.append(
            Evidence(
                "traffic quality",
                2,
                f"the extra {event} came from {n_text(active.observed - active.expected)} more "
                "active user-minutes who sent nothing else (the other events stayed at "
                f"{ratio_text(others.ratio)})",
            )
        )
    # events per user-minute, now and usually (a sparse event's usual is a ratio of two small
    # expectations, not of one floored at a whole user)
    per_user_now = main.observed / max(users.observed, 1.0)
    per_user_usual = main.expected / users.expected if users.expected > 0 else 1.0
    if (
        excess > 0
        and not sent_twice  # the same users' repeated keys: told as tracking already
        and per_user_now > 2 * per_user_usual
        and excess_users < 0.25 * excess
    ):
        out.append(
            Evidence(
                "traffic quality",
                1,
                f"few users sent most of the excess: {per_user_now:.1f} events per user a minute "
                f"(usually {per_user_usual:.1f})",
            )
        )
    if (
        main.direction > 0
        and per_user_now <= 1.3 * per_user_usual
        and active.direction <= 0
        and users.direction > 0
    ):
        out.append(
            Evidence(
                "real change",
                1,
                f"as many more users sent it ({n_text(users.observed)} user-minutes vs about "
                f"{n_text(users.expected)}), each as often as usual, while no more visitors came: "
                "the usual visitors doing more of it",
            )
        )
    return out
