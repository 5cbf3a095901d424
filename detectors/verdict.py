"""Is a metric odd because of tracking, or real? The verdict of `trackwatch explain`. Pure.

Input: `PeriodData`, the sums of the series of interest over the period asked about (shift 0)
and over the same hours of earlier periods (shift k: k periods of `step` seconds before; a
period of up to a day is compared with the same hours of earlier days): the asked event's own
series ("volume"), every event's sums per source, platform and app version ("total"; summed
from the volume cells when not given), active users ("activity") and conversions. Output: a
`Verdict`, one of tracking / real change / traffic quality / unclear, a paragraph, the evidence.

Expected = the trimmed mean of the earlier periods (the highest and lowest dropped from four
on): the same weekday when three or more are there, else days of the same kind (weekday or
weekend) when two or more are, else every earlier day. Spread = Poisson noise plus the
earlier periods' own variance. A move is a change of at least 15 % and 2.5 spreads, or none
where five or more were due. A new app version (no past) is compared with its peers.

The rules (each piece of evidence weighs 1, or 2 when it is close to proof):
- tracking: the share of events breaking the plan, or repeating a business key, rose beyond
  chance (repeats: as a good part of the excess); an app version sends fewer of the event
  (or none) than its peers, or than its source sent before, and was released just before;
  the event stopped while the step before went on (or the source's other events did; a hint
  only when it fell beyond chance on the other sources too);
  every source fell by more than 80 % at once, or the users active a minute before went
  silent mid-session (lost on the way); the event moved on one source only; a server event
  that mirrors it (the same users go on to it, usually as many), which no
  tracker sends, did not move;
- real change: an annotated campaign covers it; every source moved together (a sparse
  event: without the source that moved most, the others still moved beyond chance); the whole
  traffic moved with the funnel's conversions holding; as many more users, each as usual,
  with no more visitors; the mirroring server event, less what the other sources sent, moved
  by about as much (a likelihood ratio of the two stories);
- traffic quality: the excess came from visitors who did nothing else (the source's active
  users rose with it while its other events did not), or from few users sending many events;
- a funnel step that fell while the plan blocked its next event: the step counted again with
  the blocked events splits the fall between them (tracking) and the rest (real, when still
  beyond chance), each side 2 when it holds the larger part, else 1; the blocked events'
  other signs (their share breaking the plan, their version sending fewer) are that split's
  cause, said as context and not counted twice; the sources are compared, and the server
  read, with the blocked events counted in (a fall they account for leaves the server
  nothing to tell).
The verdict is the side with at least 2 and twice the weight of any other; else (or when
nothing moved and no strong tracking sign is there) unclear, with what more data would tell,
or, when there are signs both ways, the strongest of each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from detectors.evidence import (
    alert_matches,
    annotation_matches,
    blocked_recount,
    blocked_step_evidence,
    funnel_focus,
    is_server_scope,
    quality_evidence,
    server_evidence,
    sources_evidence,
    step_before,
    top_codes,
    version_cross,
    version_evidence,
    versions_blocked,
    whole_traffic_evidence,
)
from detectors.period_data import (
    ALL,
    SIDES,
    Z_MOVE,
    Cell,
    Evidence,
    Move,
    PeriodData,
    Scope,
    Side,
    Totals,
    beyond_chance,
    chosen_shifts,
    clock_text,
    compare,
    compare_rate,
    compare_total,
    n_text,
    pct_text,
    ratio_text,
    rest_of,
    source_totals,
)

__all__ = [
    "ALL",
    "Cell",
    "Evidence",
    "Move",
    "PeriodData",
    "Scope",
    "Totals",
    "Verdict",
    "chosen_shifts",
    "compare",
    "compare_rate",
    "explain_period",
]


@dataclass
class Verdict:
    verdict: Side
    paragraph: str
    evidence: list[Evidence]
    main: Move
    baseline: str  # how "expected" was made
    scores: dict[str, float]
    alerts: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        m = self.main
        return {
            "verdict": self.verdict,
            "paragraph": self.paragraph,
            "evidence": [
                {"side": e.side, "weight": e.weight, "text": e.text} for e in self.evidence
            ],
            "observed": m.observed,
            "expected": None if m.expected is None else round(m.expected, 2),
            "lower": None if m.expected is None else round(max(0.0, m.expected - 2 * m.spread), 2),
            "upper": None if m.expected is None else round(m.expected + 2 * m.spread, 2),
            "baseline": self.baseline,
            "scores": self.scores,
            "alerts": self.alerts,
        }


def explain_period(data: PeriodData, scope: Scope) -> Verdict:
    shifts, baseline = chosen_shifts(data)
    volume = [c for c in data.cells if c.kind == "volume"]
    conversions = [
        c for c in data.cells if c.kind == "conversion" and "within_minutes" not in c.labels
    ]
    activity = [c for c in data.cells if c.kind == "activity"]
    totals = source_totals(data.cells)
    ev: list[Evidence] = []

    def sel(pred: Callable[[dict[str, str]], bool], cells: list[Cell] = volume) -> list[Cell]:
        return [c for c in cells if pred(c.labels)]

    event = scope.event
    focus = funnel_focus(conversions, scope, shifts) if scope.funnel else None
    if focus is not None:  # a funnel: the step pair that moved most
        event = focus[0]
    if event is None:  # every event: the sums per source
        in_scope = sel(lambda labels: scope.matches(labels, with_event=False), totals)
    else:
        in_scope = sel(
            lambda labels: labels.get("event") == event and scope.matches(labels, with_event=False)
        )
    main = compare(in_scope, shifts)
    main_with_q = compare_total(in_scope, shifts)
    if focus is not None:
        event, main, step_text = focus
        ev.append(Evidence("context", 0, step_text))
    if (
        scope.app_version is not None
        and event is not None
        and scope.source is not None
        and (main.expected is None or main.expected < 1)
    ):  # a version new in the history: compared with its peers in the same period
        cross = version_cross(volume, totals, scope.source, scope.app_version, event, shifts)
        if cross is not None:
            main, main_with_q = cross, cross
            baseline = f"what the other versions of {scope.source} send for as much traffic"
    direction = main.direction or main_with_q.direction

    # ---- annotations and alerts: context first
    for note in data.annotations:
        if note.end > data.start and note.start < data.end and annotation_matches(note, scope):
            ev.append(
                Evidence(
                    "real change", 2, f"the announced campaign “{note.name}” covers this period"
                )
            )
    alerts = [a for a in data.alerts if alert_matches(a, scope, event)]

    # ---- tracking: the plan's own checks
    total = in_scope
    # a step that fell: were its events blocked? Then the blocked events are counted back
    # and the fall split between them and the rest; the signs of the same blocked events
    # (their share breaking the plan, their version sending fewer) are that split's cause,
    # said as context, not counted again, and the sources are compared with them counted in
    recount = blocked_recount(total, main, shifts) if focus is not None else None
    blocked = [] if recount is None else blocked_step_evidence(recount, main, event or "")
    if not blocked:
        recount = None  # nothing was counted back
    counted_back = set() if recount is None else versions_blocked(total, recount.usual)
    obs_all = sum(c.get(0).count + c.get(0).quarantined for c in total)
    obs_bad = sum(c.get(0).violations for c in total)
    base_all = sum(c.get(k).count + c.get(k).quarantined for c in total for k in shifts)
    base_bad = sum(c.get(k).violations for c in total for k in shifts)
    usual_bad = base_bad / base_all if base_all else 0.0
    # (violations beyond the blocked events, e.g. warn-only ones, are a sign of their own)
    others_bad = obs_bad - (0.0 if recount is None else recount.blocked)
    only_blocked = recount is not None and not beyond_chance(
        max(others_bad, 0.0), usual_bad * obs_all
    )
    if (
        ((obs_all >= 5 and obs_bad / obs_all >= 0.1) or (obs_bad >= 3 and obs_bad / obs_all >= 0.5))
        and obs_bad / obs_all > 2 * usual_bad + 0.05
        and beyond_chance(obs_bad, usual_bad * obs_all)
    ):
        codes = top_codes(total)
        ev.append(
            Evidence(
                "context" if only_blocked else "tracking",
                0 if only_blocked else 2,
                f"{pct_text(obs_bad / obs_all)} of these events break the tracking plan{codes} "
                f"(usually {pct_text(base_bad / base_all) if base_all else 'none'})",
            )
        )
    ev += blocked
    obs_rep = sum(c.get(0).repeats for c in total)
    base_rep = sum(c.get(k).repeats for c in total for k in shifts)
    usual_rep = base_rep / base_all if base_all else 0.0
    extra_rep = obs_rep - usual_rep * obs_all
    excess = main_with_q.observed - (main_with_q.expected or 0.0)
    if (
        obs_rep >= 5
        and extra_rep >= 0.3 * max(excess, 0.2 * obs_all)
        and beyond_chance(obs_rep, usual_rep * obs_all)
    ):
        ev.append(
            Evidence(
                "tracking",
                2,
                f"{pct_text(obs_rep / obs_all)} of these events repeat a business key already "
                f"received (usually {pct_text(usual_rep)}): the same purchase or action sent twice",
            )
        )

    # ---- versions: one version alone, or a new one lacking the event
    if scope.app_version is not None or direction:
        ev += version_evidence(data, scope, volume, totals, event, direction, shifts, counted_back)

    # ---- across sources: together, alone
    across = (
        sources_evidence(volume, event, scope, shifts, direction, recount is not None)
        if event is not None and direction
        else []
    )
    # ---- the event stopped while what leads to it went on (a hint only when it fell on the
    # other sources too: then its stop here may be the end of a fall everywhere)
    elsewhere = any(e.side == "real change" for e in across)
    stop_weight, stop_note = (1, " (but it fell on other sources too)") if elsewhere else (2, "")
    if (
        event is not None
        and main.expected is not None
        and main.observed <= 0.05 * main.expected
        and main.expected >= 5
    ):
        before = step_before(conversions, event, scope)
        if before is not None:
            ev.append(Evidence("tracking", stop_weight, before + stop_note))
        else:
            others = compare(
                rest_of(
                    totals, volume, event, lambda labels: scope.matches(labels, with_event=False)
                ),
                shifts,
            )
            if others.expected and others.direction >= 0:
                ev.append(
                    Evidence(
                        "tracking",
                        stop_weight,
                        f"{event} stopped (none, about {n_text(main.expected)} expected) while the "
                        f"other events of the same sources went on{stop_note}",
                    )
                )
    ev += across

    # ---- the server's view (no tracker feeds it), of the step as counted back when its next
    # events were blocked (the server counts them): a fall they account for leaves it nothing
    step = main if recount is None else recount.step
    reads = bool(direction) if recount is None else step.direction < 0
    if reads and not is_server_scope(volume, scope):
        ev += server_evidence(
            volume, conversions, scope, event, shifts, step, step=focus is not None
        )

    # ---- everything at once: lost on the way, or a real audience change
    if event is None and scope.funnel is None:  # (a collapse tells even on a noisy baseline)
        ev += whole_traffic_evidence(totals, activity, conversions, scope, shifts, direction)

    # ---- traffic quality
    if direction > 0 and event is not None:
        sent_twice = any("repeat a business key" in e.text for e in ev)
        ev += quality_evidence(volume, totals, activity, scope, event, shifts, main, sent_twice)

    scores = {side: sum(e.weight for e in ev if e.side == side) for side in SIDES}
    verdict: Side = "unclear"
    best = max(SIDES, key=lambda s: scores[s])
    rest = max(scores[s] for s in SIDES if s != best)
    if direction == 0 and not any(e.side == "tracking" and e.weight >= 2 for e in ev):
        verdict = "unclear"
    elif scores[best] >= 2 and scores[best] >= 2 * rest:
        verdict = best
    paragraph = _paragraph(verdict, scope, data, main, direction, baseline, ev, alerts, shifts)
    return Verdict(verdict, paragraph, ev, main, baseline, scores, alerts)


# ---------------------------------------------------------------------------- words


def _paragraph(
    verdict: Side,
    scope: Scope,
    data: PeriodData,
    main: Move,
    direction: int,
    baseline: str,
    ev: list[Evidence],
    alerts: list[dict[str, Any]],
    shifts: list[int],
) -> str:
    what = scope.describe()
    span = f"from {clock_text(data.start)} to {clock_text(data.end)}"
    if main.expected is None:
        level = f"{what} {span}: {n_text(main.observed)} (nothing to compare with: {baseline})"
    else:
        how = {1: "higher than", -1: "lower than", 0: "in line with"}[direction]
        if direction == 0 and abs(main.ratio - 1) >= 0.3:
            how = "not clearly apart from"  # far off, but so is the usual
        level = (
            f"{what} {span} was {how} expected: {n_text(main.observed)} vs about "
            f"{n_text(main.expected)} ({baseline})"
        )
    reasons = [e.text for e in sorted(ev, key=lambda e: -e.weight) if e.side == verdict][:2]
    if verdict == "tracking":
        head = "This looks like a tracking problem, not a real change"
    elif verdict == "real change":
        head = "This looks like a real change in what people do"
    elif verdict == "traffic quality":
        head = "This looks like low-quality traffic (bots or a few users), not more customers"
    else:
        head = "It is not clear yet whether this is tracking or real"
        reasons = [_more_data(main, data, shifts)]
        both = [_strongest(ev, side) for side in ("tracking", "real change")]
        if direction and all(both):  # signs both ways: say them, not "more data"
            head = "It is not clear whether this is tracking or real: there are signs of both"
            reasons = [f"for tracking, {both[0]}", f"for a real change, {both[1]}"]
    if not scope.event:  # an event's name is written as the plan spells it
        level = level[0].upper() + level[1:]
    text = f"{head}. {level}."
    if reasons:
        text += (
            " "
            + "; ".join(r[0].upper() + r[1:] if i == 0 else r for i, r in enumerate(reasons))
            + "."
        )
    against = [e for e in sorted(ev, key=lambda e: -e.weight) if e.side not in (verdict, "context")]
    if verdict != "unclear" and against:  # the strongest sign the other way, said too
        text += f" Against that: {against[0].text}."
    if alerts:
        text += f" {len(alerts)} alert{'s' if len(alerts) > 1 else ''} covered this period."
    return text


def _strongest(ev: list[Evidence], side: str) -> str | None:
    on_side = [e for e in ev if e.side == side and e.weight > 0]
    return max(on_side, key=lambda e: e.weight).text if on_side else None


def _more_data(main: Move, data: PeriodData, shifts: list[int]) -> str:
    if not shifts:
        return (
            "the history holds no earlier period to compare with; one more day of history "
            "(better a week) would tell"
        )
    z = abs(main.z)
    hours = (data.end - data.start) / 3600
    if z >= Z_MOVE:
        return (
            f"the change is clear ({ratio_text(main.ratio)} the usual) but not yet what caused "
            "it: over a period two to four times as long, the per-source and server counts "
            "would tell"
        )
    if z < 0.5:
        return (
            f"the metric moved within its usual range; nothing to explain over these {hours:.1f} h"
        )
    expected = main.expected or 0.0
    if main.spread**2 > 2 * max(expected, 1.0) and len(shifts) < 4:
        return (
            f"the {len(shifts)} earlier periods compared with differ a lot from each other, so "
            "even this move is within their range; a few more weeks of history would tell"
        )
    need = hours * ((Z_MOVE / z) ** 2 - 1)
    more = f"about {need:.0f} more hours" if need >= 1 else "less than an hour more"
    return (
        f"the move is within what chance gives over {hours:.1f} h; {more} at this level would tell"
    )
