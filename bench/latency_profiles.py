"""The clairvoyant latency floor for the independent generator's profiles (`simulation`).

    .venv/bin/python bench/latency_bound.py --profile shop-5k [--seed 7] [--backtest DIR]

Like the floor of our own simulator (bench/latency_bound.py), it gives each incident to a test
that knows its exact start, its scope and its normal, and tests all the evidence since the
start each minute, one-sided, at p < 1e-3 and at p < 3.2e-5 (the engine's firing level).
Runs share their random numbers (`simulation.randomness`): the same seed generated without the
incident differs only inside the incident's scope (the tests of `simulation` check that), and
the normal of each piece of evidence is its mean over `--clean-seeds` runs without incidents.
Evidence is counted when the collector receives it (an offline batch counts when it arrives).

Evidence per incident class (several: the smallest p-value times their number, Bonferroni):
- release_stops_event: distinct users of the app version sending the event (Poisson, down);
- renamed_property: distinct users of the version sending the event with a plan violation
  (Poisson, up);
- double_firing: the event's calls from the source (Poisson, up) and the calls whose order id
  was already seen (Poisson, up: the website's reloads repeat some normally);
- sparse_event_stops: distinct users sending the event from the source (Poisson, down), and
  the users who opened the screen before it and then did not do it (each user's chance by
  their time since the screen, from the clean runs; Poisson-binomial, down);
- conversion_falls: the source's users who began a checkout and placed an order, by age
  (Poisson-binomial, down), as bench/latency_bound.py does for conversions;
- leaked_coupon, bot_flood: the event's (page's) calls in scope (Poisson, up);
- events_lost: distinct users sending anything (Poisson, down).

A normal of zero (violations, say) is taken as half an event over all the clean runs, so a
single event is not proof. With `--backtest DIR` (the output of `trackwatch backtest --profile
NAME` with the same seeds) the engine's latency goes beside the floor's, with the ratio, and
medians per incident class; a miss counts as the incident's duration.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.latency_bound import (
    LEVELS,
    Evidence,
    conversion_curve,
    conversion_pvalues,
    first_minute,
    poisson_pvalues,
)
from simulation.generator import generate
from simulation.incidents import CHECKOUT, PURCHASE, Incident
from simulation.profiles import Profile, Scenario, scenario
from tracking_plan.loader import load_plan
from tracking_plan.validator import compile_plan

FIRING = "score 0.75"  # the engine's firing level, compared with the engine
CLEAN_CONVERSION_HOURS = 24.0
FUNNEL_SECONDS = 3600.0
LOOKBACK = 2 * 3600.0  # order ids remembered from before a double firing starts
CONVERSION_CLASSES = {"conversion_falls", "sparse_event_stops"}
SCREEN_BEFORE = "Create Account"


@dataclass
class Counter:
    """One count evidence: per-minute increments, and the users already counted (if users)."""

    up: bool
    minutes: np.ndarray
    users: dict[str, str] | None = None  # either id of a counted user -> that user

    def add(self, at: float, body: dict[str, Any] | None = None) -> None:
        if self.users is not None and body is not None:
            anonymous, known = body.get("anonymousId"), body.get("userId")
            if (anonymous and anonymous in self.users) or (known and known in self.users):
                return
            user = str(anonymous or known)
            for i in (anonymous, known):
                if i:
                    self.users[i] = user
        self.minutes[int(at // 60)] += 1


@dataclass
class Cohort:
    """Conversion evidence: who entered (and when), who then did the next step (and when)."""

    first: dict[str, float] = field(default_factory=dict)
    done: dict[str, float] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def user(self, body: dict[str, Any]) -> str | None:
        anonymous, known = body.get("anonymousId"), body.get("userId")
        return self.ids.get(anonymous) or self.ids.get(known)  # type: ignore[arg-type]

    def enter(self, at: float, body: dict[str, Any]) -> None:
        if self.user(body) is not None:
            return
        anonymous, known = body.get("anonymousId"), body.get("userId")
        user = str(anonymous or known)
        for i in (anonymous, known):
            if i:
                self.ids[i] = user
        self.first[user] = at

    def convert(self, at: float, body: dict[str, Any]) -> None:
        user = self.user(body)
        if user is not None and user not in self.done and at >= self.first[user]:
            self.done[user] = at


class Watcher:
    """Gathers one incident's evidence from one run's envelopes (received_at order)."""

    def __init__(self, incident: Incident, validate: Callable[..., Any], clean: bool) -> None:
        self.incident = incident
        self.cls = incident.cls
        self.validate = validate
        self.start = incident.start
        lasts = incident.end - incident.start
        self.lasts = lasts
        span = lasts
        if self.cls in CONVERSION_CLASSES:
            span = CLEAN_CONVERSION_HOURS * 3600.0 if clean else lasts + FUNNEL_SECONDS
        self.span = span
        self.cohort_until = math.inf if clean else lasts
        size = math.ceil(span / 60.0)
        self.counts: dict[str, Counter] = {}
        self.cohorts: dict[str, Cohort] = {}
        cls = self.cls
        if cls in ("release_stops_event", "sparse_event_stops", "events_lost"):
            self.counts["users"] = Counter(False, np.zeros(size, np.int64), {})
        elif cls == "renamed_property":
            self.counts["users with violations"] = Counter(True, np.zeros(size, np.int64), {})
        elif cls in ("double_firing", "leaked_coupon", "bot_flood"):
            self.counts["events"] = Counter(True, np.zeros(size, np.int64))
        if cls == "double_firing":
            self.counts["repeated order ids"] = Counter(True, np.zeros(size, np.int64))
            self.orders: set[str] = set()
        if cls == "sparse_event_stops":
            self.cohorts[f"{SCREEN_BEFORE} then the event"] = Cohort()
        if cls == "conversion_falls":
            self.cohorts[f"{CHECKOUT} then {PURCHASE}"] = Cohort()
        self.first_ts = self.start - (LOOKBACK if cls == "double_firing" else 0.0)
        self.end_ts = self.start + span

    def add(self, envelope: dict[str, Any], ts: float) -> None:
        """Count one envelope received at `ts` (epoch seconds) if it is in scope."""
        body = envelope["body"]
        source = envelope["source"]
        incident, cls, at = self.incident, self.cls, ts - self.start
        settings = vars(incident)
        if cls == "double_firing":
            if source != settings["source"] or body.get("event") != settings["event"]:
                return
            order = (body.get("properties") or {}).get("order_id")
            if at >= 0:
                self.counts["events"].add(at)
                if order in self.orders:
                    self.counts["repeated order ids"].add(at)
            if order is not None:
                self.orders.add(order)
            return
        if cls == "events_lost":
            self.counts["users"].add(at, body)
            return
        if cls == "leaked_coupon":
            if body.get("event") == "Promo Code Redeemed":
                self.counts["events"].add(at)
            return
        if source != settings.get("source"):
            return
        if cls == "bot_flood":
            if body.get("type") == "page" and body.get("name") == settings["page"]:
                self.counts["events"].add(at)
            return
        event = body.get("event")
        if cls == "conversion_falls":
            cohort = self.cohorts[f"{CHECKOUT} then {PURCHASE}"]
            if event == CHECKOUT and at < self.cohort_until:
                cohort.enter(at, body)
            elif event == PURCHASE:
                cohort.convert(at, body)
            return
        if cls == "sparse_event_stops":
            cohort = self.cohorts[f"{SCREEN_BEFORE} then the event"]
            if event == settings["event"]:
                if at < self.lasts:
                    self.counts["users"].add(at, body)
                cohort.convert(at, body)
            elif body.get("name") == SCREEN_BEFORE and at < self.cohort_until:
                cohort.enter(at, body)
            return
        version = ((body.get("context") or {}).get("app") or {}).get("version")
        if event != settings["event"] or version != settings["app_version"]:
            return
        if cls == "release_stops_event":
            self.counts["users"].add(at, body)
        elif cls == "renamed_property" and self.validate(body, source).violations:
            self.counts["users with violations"].add(at, body)

    def evidence(self) -> dict[str, Evidence]:
        """Each piece of evidence: cumulative counts per minute, or a cohort."""
        out = {name: Evidence(np.cumsum(c.minutes)) for name, c in self.counts.items()}
        for name, cohort in self.cohorts.items():
            users = list(cohort.first)
            starts = np.array([cohort.first[u] for u in users], dtype=float)
            done = np.array([cohort.done.get(u, math.inf) for u in users], dtype=float)
            out[name] = Evidence(np.zeros(math.ceil(self.span / 60.0)), starts, done, self.span)
        return out

    def direction(self, name: str) -> bool:
        """Whether the evidence `name` rises (True) or falls during the incident."""
        if name in self.counts:
            return self.counts[name].up
        return False


def gather(
    run: Scenario,
    watched: list[Incident],
    seed: int,
    clean: bool,
    validate: Callable[..., Any],
    progress: Callable[[], None] = lambda: None,
) -> list[dict[str, Evidence]]:
    """Generate `run` for `seed` and fold it into each watched incident's evidence."""
    watchers = [Watcher(incident, validate, clean) for incident in watched]
    hour = ""
    for envelope in generate(run, seed):
        received = envelope["received_at"]
        if received[:13] != hour:
            hour = received[:13]
            progress()
        ts = datetime.fromisoformat(received).timestamp()
        for watcher in watchers:
            if watcher.first_ts <= ts < watcher.end_ts:
                watcher.add(envelope, ts)
    return [watcher.evidence() for watcher in watchers]


def pvalues(run: Evidence, clean: list[Evidence], up: bool, minutes: int) -> np.ndarray:
    """One evidence's p-value at the end of each of the first `minutes` minutes."""
    if run.starts is not None:
        curve = conversion_curve(clean, max(c.span for c in clean))
        values = list(conversion_pvalues(run, curve, up))
        return np.asarray(values[:minutes] + [1.0] * (minutes - len(values[:minutes])))
    expected = np.mean([c.units[:minutes] for c in clean], axis=0)
    expected = np.maximum(expected, 0.5 / len(clean))
    return poisson_pvalues(run.units[:minutes], expected, up)


def latencies(
    watcher: Watcher, runs: list[dict[str, Evidence]], clean: list[dict[str, Evidence]]
) -> list[dict[str, Any]]:
    """Per run: the floor's latency at each level (None: not within the incident) and the
    evidence that got there first."""
    minutes = math.ceil(watcher.lasts / 60.0)
    if watcher.cls == "conversion_falls":  # a conversion is known a funnel window later
        minutes = math.ceil((watcher.lasts + FUNNEL_SECONDS) / 60.0)
    found = []
    for run in runs:
        every = {
            name: pvalues(evidence, [c[name] for c in clean], watcher.direction(name), minutes)
            for name, evidence in run.items()
        }
        combined = np.minimum(1.0, len(every) * np.min(np.vstack(list(every.values())), axis=0))
        result: dict[str, Any] = {
            level: first_minute(combined, alpha) for level, alpha in LEVELS.items()
        }
        at = result[FIRING]
        if at is not None:
            result["by"] = min(every, key=lambda n: every[n][at - 1])
        found.append(result)
    return found


def floor_rows(
    profile: Profile,
    seeds: list[int],
    clean_seeds: int,
    days: float | None,
    users_per_day: int | None,
    console: Console,
) -> tuple[Scenario, list[tuple[Incident, list[dict[str, Any]]]]]:
    """Every watched incident of the profile with the floor's latencies for each seed."""
    run = scenario(profile, days=days, users_per_day=users_per_day)
    clean_run = scenario(profile, days=days, users_per_day=users_per_day, incidents=False)
    watched = [i for i in run.incidents if i.expect_alert]
    validate = compile_plan(load_plan(profile.plan_path())).validate
    jobs = [(s, True) for s in range(10_000, 10_000 + clean_seeds)] + [(s, False) for s in seeds]
    found: dict[tuple[int, bool], list[dict[str, Evidence]]] = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("generating", total=len(jobs) * math.ceil(run.days * 24))
        for seed, clean in jobs:
            found[seed, clean] = gather(
                clean_run if clean else run, watched, seed, clean, validate,
                lambda: progress.advance(task),
            )  # fmt: skip
    rows = []
    for k, incident in enumerate(watched):
        watcher = Watcher(incident, validate, False)
        clean = [evidence[k] for (_, is_clean), evidence in found.items() if is_clean]
        runs = [found[seed, False][k] for seed in seeds]
        rows.append((incident, latencies(watcher, runs, clean)))
    return run, rows


def show(
    console: Console,
    run: Scenario,
    rows: list[tuple[Incident, list[dict[str, Any]]]],
    seeds: list[int],
    engine: dict[int, dict[str, float | None]] | None,
) -> None:
    """Per incident: the floor (both levels), the engine and the ratio; then per class and
    overall medians (a miss counts as the incident's duration)."""
    title = (
        f"Clairvoyant latency floor, minutes: profile {run.profile.name}, "
        f"{run.users_per_day:,.0f} users/day, {run.days:g} days, seeds {' '.join(map(str, seeds))}"
    )
    table = Table(title=title)
    for column in ("incident", "class", *LEVELS, "first evidence"):
        table.add_column(column, overflow="fold")
    if engine is not None:
        table.add_column("engine")
        table.add_column("engine / floor")
    per_class: dict[str, dict[str, list[float]]] = {}
    for incident, found in rows:
        lasts = (incident.end - incident.start) / 60.0
        cells = [
            " ".join("-" if f[level] is None else f"{f[level]:g}" for f in found)
            for level in LEVELS
        ]
        cells.append(" ".join(str(f.get("by", "-")) for f in found))
        entry = per_class.setdefault(incident.cls, {"floor": [], "engine": [], "ratio": []})
        floors = [lasts if f[FIRING] is None else float(f[FIRING]) for f in found]
        entry["floor"] += floors
        if engine is not None:
            values = [engine.get(seed, {}).get(incident.name) for seed in seeds]
            mins = [lasts if v is None else float(v) for v in values]
            entry["engine"] += mins
            ratios = [e / max(f, 1.0) for e, f in zip(mins, floors, strict=True)]
            entry["ratio"] += ratios
            cells.append(" ".join("-" if v is None else f"{v:g}" for v in values))
            cells.append(
                " ".join(
                    "floor misses" if f[FIRING] is None else "miss" if v is None else f"{r:.1f}"
                    for f, v, r in zip(found, values, ratios, strict=True)
                )
            )
        table.add_row(incident.name, incident.cls, *cells)
    console.print(table)
    summary = Table(
        title=f"per incident class, medians (a miss = the incident's duration), {FIRING}"
    )
    for column in ("class", "floor", *(("engine", "engine / floor") if engine else ())):
        summary.add_column(column)
    every_floor, every_engine = [], []
    for cls, entry in sorted(per_class.items()):
        every_floor += entry["floor"]
        every_engine += entry["engine"]
        cells = [f"{statistics.median(entry['floor']):g}"]
        if engine is not None:
            cells += [
                f"{statistics.median(entry['engine']):g}",
                f"{statistics.median(entry['ratio']):.1f}",
            ]
        summary.add_row(cls, *cells)
    cells = [f"{statistics.median(every_floor):g}"]
    if engine is not None:
        ratio = statistics.median(every_engine) / max(statistics.median(every_floor), 1.0)
        cells += [f"{statistics.median(every_engine):g}", f"{ratio:.1f} (of the medians)"]
    summary.add_row("[bold]all[/]", *cells)
    console.print(summary)
    total = sum(len(f) for _, f in rows)
    floor_found = {
        (incident.name, seed)
        for incident, found in rows
        for seed, f in zip(seeds, found, strict=True)
        if f[FIRING] is not None
    }
    line = f"the floor at {FIRING} (p < {LEVELS[FIRING]:.1e}) finds {len(floor_found)} of {total}"
    if engine is not None:
        engine_found = {
            (incident.name, seed)
            for incident, _ in rows
            for seed in seeds
            if engine.get(seed, {}).get(incident.name) is not None
        }
        line += (
            f"; the engine finds {len(engine_found)} of {total}, "
            f"{len(engine_found & floor_found)} of the floor's {len(floor_found)}"
        )
    console.print(line)
