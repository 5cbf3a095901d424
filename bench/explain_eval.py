"""How often `trackwatch explain` gives the right verdict on the backtest profiles' incidents.

For each run folder (a profile and seed: `labels.json` from `trackwatch simulate --profile`, and
a history file filled from its replay: `trackwatch history load --db F --windows W --alerts A
--annotations annotations.yaml`), every labelled incident (the announced campaign included) is
explained over its own period and scope, and the verdict is scored against its class's label:

    release_stops_event, double_firing, renamed_property, sparse_event_stops, events_lost
                                 -> tracking (the events are lost, doubled or broken on the way)
    bot_flood                    -> traffic quality (scrapers, not customers)
    leaked_coupon                -> real change (real customers really redeem a leaked code:
                                    more redemptions from as many more users, no tracking fault)
    conversion_falls             -> real change (the generator makes fewer checkouts turn into
                                    orders: the server's Payment Captured falls with them)
    campaign                     -> real change (announced: must not be called tracking)

Right, unclear (acceptable, not right) or wrong. Usage:
    python bench/explain_eval.py --run LABELS.json=HISTORY.sqlite [--run ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import random
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.records import epoch_seconds
from detectors.verdict import Scope
from streams.history_query import QueryError, explain
from tracking_plan.loader import load_plan

LABEL = {
    "release_stops_event": "tracking",
    "double_firing": "tracking",
    "renamed_property": "tracking",
    "sparse_event_stops": "tracking",
    "events_lost": "tracking",
    "bot_flood": "traffic quality",
    "leaked_coupon": "real change",
    "conversion_falls": "real change",
    "campaign": "real change",
}


def funnel_of(plan, a: str, b: str) -> str | None:
    for funnel in plan.funnels:
        steps = list(funnel.steps)
        for x, y in itertools.pairwise(steps):
            if (x, y) == (a, b):
                return funnel.name
    return None


def scope_of(incident: dict, plan) -> Scope:
    s = incident.get("series") or {}
    funnel = None
    event = s.get("event")
    if "from_event" in s:
        funnel = funnel_of(plan, s["from_event"], s["to_event"])
        event = None if funnel else s["to_event"]
    return Scope(event, s.get("source"), s.get("platform"), s.get("app_version"), funnel)


def overlapping(incident: dict, incidents: list[dict]) -> list[str]:
    """The other incidents active at the same time on the same source (or everywhere): two
    causes at once, where the verdict may rightly name the other."""
    a, b = epoch_seconds(incident["start"]), epoch_seconds(incident["end"])
    source = (incident.get("series") or {}).get("source")
    out = []
    for other in incidents:
        if other is incident or other["class"] == "campaign":
            continue
        c, d = epoch_seconds(other["start"]), epoch_seconds(other["end"])
        theirs = (other.get("series") or {}).get("source")
        if c < b and a < d and (source is None or theirs is None or theirs == source):
            out.append(other["class"])
    return out


def quiet_periods(db: sqlite3.Connection, labels: dict, name: str, n: int) -> list[dict]:
    """`n` random periods (1 to 6 h, after the first 3 days) that no incident or campaign
    touches within an hour, each on a random planned event and one of its sources: nothing
    happened, so the right answer is "unclear" (in line with expected)."""
    rng = random.Random(f"{name}-quiet")
    spans = [
        (epoch_seconds(i["start"]) - 3600, epoch_seconds(i["end"]) + 3600)
        for i in labels["incidents"]
    ]
    first, last = epoch_seconds(labels["start"]) + 3 * 86400, epoch_seconds(labels["end"])
    pairs = db.execute(
        "SELECT DISTINCT event, source FROM series WHERE kind = 'volume' AND planned = 1 "
        "AND event NOT LIKE '(%' ORDER BY 1, 2"
    ).fetchall()
    out = []
    while len(out) < n:
        length = rng.choice((1, 2, 3, 6)) * 3600
        start = rng.randrange(int(first), int(last - length), 600)
        if any(a < start + length and start < b for a, b in spans):
            continue
        event, source = rng.choice(pairs)
        scope = Scope(event=event, source=source)
        try:
            verdict = explain(db, scope, start, start + length)
        except QueryError:
            continue
        out.append(
            {
                "run": name,
                "scope": f"{event} on {source}",
                "from": iso(start),
                "to": iso(start + length),
                "got": verdict.verdict,
                "paragraph": verdict.paragraph,
            }
        )
    return out


def iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(moment))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", action="append", required=True, help="LABELS.json=HISTORY.sqlite")
    parser.add_argument("--plan", default="examples/shop.yaml")
    parser.add_argument("--json", help="write every case to this file")
    parser.add_argument(
        "--quiet", type=int, default=0, help="also this many random quiet periods per run"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    plan = load_plan(args.plan)
    cases = []
    quiet: list[dict] = []
    for run in args.run:
        labels_path, db_path = run.split("=", 1)
        labels = orjson.loads(Path(labels_path).read_bytes())
        name = f"{labels['profile']}-{labels['seed']}"
        db = sqlite3.connect(f"file:{Path(db_path).resolve()}?mode=ro", uri=True)
        for incident in labels["incidents"]:
            scope = scope_of(incident, plan)
            t0 = time.perf_counter()
            verdict = explain(db, scope, incident["start"], incident["end"])
            took = time.perf_counter() - t0
            want = LABEL[incident["class"]]
            others = overlapping(incident, labels["incidents"])
            got = verdict.verdict
            outcome = "right" if got == want else ("unclear" if got == "unclear" else "wrong")
            cases.append(
                {
                    "run": name,
                    "class": incident["class"],
                    "name": incident["name"],
                    "want": want,
                    "got": got,
                    "outcome": outcome,
                    "seconds": round(took, 3),
                    "scores": verdict.scores,
                    "paragraph": verdict.paragraph,
                    "overlaps": others,
                    "evidence": [e.text + f" [{e.side}]" for e in verdict.evidence],
                }
            )
            mark = {"right": "ok", "unclear": "??", "wrong": "XX"}[outcome]
            also = f"  (overlaps: {', '.join(others)})" if others else ""
            print(
                f"{mark} {name:22} {incident['class']:20} want {want:15} got {got:15} "
                f"{took:.2f}s{also}"
            )
            if args.verbose and outcome != "right":
                print("   ", verdict.paragraph)
                for e in verdict.evidence:
                    print(f"     - [{e.side} {e.weight:g}] {e.text}")
        quiet.extend(quiet_periods(db, labels, name, args.quiet))
        db.close()
    if quiet:
        calls = Counter(c["got"] for c in quiet)
        print(
            f"\nquiet periods (nothing labelled within an hour): {len(quiet)}, "
            f"verdicts {dict(calls)}"
        )
        for c in quiet:
            if c["got"] != "unclear" and args.verbose:
                print(f"   {c['run']} {c['scope']} {c['from']}..{c['to']}: {c['got']}")
                print("     ", c["paragraph"])
    runs = sorted({c["run"] for c in cases})
    print()
    for run in [*runs, "all"]:
        mine = [c for c in cases if run in ("all", c["run"])]
        right = sum(c["outcome"] == "right" for c in mine)
        unclear = sum(c["outcome"] == "unclear" for c in mine)
        wrong = sum(c["outcome"] == "wrong" for c in mine)
        alone = [c for c in mine if not c["overlaps"]]
        right_alone = sum(c["outcome"] == "right" for c in alone)
        print(
            f"{run:22} right {right}/{len(mine)} ({100 * right / len(mine):.0f} %), "
            f"unclear {unclear}, wrong {wrong}; without overlapping incidents: right "
            f"{right_alone}/{len(alone)}"
        )
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(cases, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
