"""How soon could any detector find the backtest's incidents? A clairvoyant bound per incident.

    .venv/bin/python bench/latency_bound.py [--users-per-day 5000] [--seed 7 --seed 8 ...]
    .venv/bin/python bench/latency_bound.py --profile shop-5k [--seed 7] [--backtest DIR]

(`--profile`: the independent generator's profiles, see bench/latency_profiles.py; what
follows is the default profile, our own simulator.)

`trackwatch backtest` measures how late the engine finds each incident. This asks what the
traffic itself allows. The backtest's own runs are simulated again (same seeds, same schedule:
the same calls), and `--clean-seeds` runs without any incident (same releases). A clairvoyant
test then knows what no detector knows: each incident's exact start, its scope (source, app
version, event) and the normal mean of its evidence (the clean runs' mean). At every minute it
weighs all the evidence since the start, one-sided:

- drop, disappeared, new_event, violation_surge: distinct users in scope (sending anything;
  sending the event; sending it; sending it with a plan violation) — users are the independent
  unit, a session's events are not independent of each other; Poisson tail;
- spike: events of the event in scope (the bots' extra copies are events, not new users);
  Poisson tail, which treats clustered events as independent: generous again;
- conversion_up/down: the users in scope who did `from_event` since the start, and how many of
  them did `to_event` (from any source) by then; each user's normal chance of having converted
  by their age in the cohort comes from a day of clean runs; Poisson-binomial tail.

Its latency is the first minute whose p-value is below α, for α = 1e-3 (score 0.5: 30 times
laxer than the engine) and 3.2e-5 (score 0.75, the engine's default firing level). It tests one
hypothesis per incident, where the engine watches thousands of series with no hint of when or
where, so over many incidents it is a floor under any detector held to that false-alarm level,
not a target. On one run another statistic (the last few minutes alone, say) can cross sooner
by chance, and so does a detector that fires too easily and pays for it in false alerts:
compare medians, not single incidents. If the floor's median is above a latency goal, no tuning
of the engine can meet that goal on that traffic.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors.intervals import pvalue_from_score  # noqa: E402
from streams.backtest_run import START  # noqa: E402
from streams.simulator.incidents import Incident, load_incidents  # noqa: E402
from streams.simulator.traffic import default_releases, shipped_releases, simulate  # noqa: E402
from tracking_plan.loader import load_plan  # noqa: E402
from tracking_plan.validator import compile_plan  # noqa: E402

LEVELS = {"score 0.5": pvalue_from_score(0.5), "score 0.75": pvalue_from_score(0.75)}
UP = {"spike", "new_event", "violation_surge", "conversion_up"}
VERSIONED = {"disappeared", "new_event", "violation_surge"}
CONVERSIONS = {"conversion_up", "conversion_down"}


@dataclass
class Evidence:
    """What one run shows of one incident. Volume kinds: `units`, the cumulative count (users or
    events) at the end of each minute since the incident's start. Conversions: for each user of
    the cohort, when they did `from_event` (`starts`) and then `to_event` (`done`, inf if not),
    in seconds since the start, over `span` seconds."""

    units: np.ndarray
    starts: np.ndarray | None = None
    done: np.ndarray | None = None
    span: float = 0.0


def first_minute(pvalues: Iterable[float], alpha: float) -> int | None:
    """Minutes from the start to the end of the first minute whose p-value is below `alpha`."""
    for minute, p in enumerate(pvalues):
        if p < alpha:
            return minute + 1
    return None


def poisson_pvalues(observed: np.ndarray, expected: np.ndarray, up: bool) -> np.ndarray:
    """One-sided Poisson tail of each cumulative count against its expected mean."""
    if up:
        return stats.poisson.sf(observed - 1, expected)
    return stats.poisson.cdf(observed, expected)


def poisson_binomial_tail(shares: np.ndarray, hits: int, up: bool) -> float:
    """P(at least / at most `hits` successes) among independent trials of these `shares`."""
    pmf = np.ones(1)
    for share in shares:
        pmf = np.convolve(pmf, (1.0 - share, share))
    return float(pmf[hits:].sum() if up else pmf[: hits + 1].sum())


CURVE_STEP = 10.0  # seconds between the points of a conversion curve


def conversion_curve(clean: list[Evidence], seconds: float) -> np.ndarray:
    """Chance that a cohort's user did `to_event` within e seconds of `from_event`, for e in
    steps of `CURVE_STEP` up to `seconds`, from the clean runs' users observed that long (with
    half a pseudo-count, so no age is ever impossible)."""
    grid = np.arange(0.0, seconds + CURVE_STEP, CURVE_STEP)
    observed = np.zeros(len(grid))
    converted = np.zeros(len(grid))
    for run in clean:
        assert run.starts is not None and run.done is not None
        for start, done in zip(run.starts, run.done, strict=True):
            seen = grid <= run.span - start
            observed += seen
            converted += seen & (done - start <= grid)
    return (converted + 0.5) / (observed + 1.0)


def conversion_pvalues(run: Evidence, curve: np.ndarray, up: bool) -> Iterator[float]:
    """Each minute, the conversions so far of the cohort against what its users' ages in it
    predict."""
    assert run.starts is not None and run.done is not None
    for minute in range(len(run.units)):
        now = (minute + 1) * 60.0
        members = run.starts <= now
        ages = ((now - run.starts[members]) // CURVE_STEP).astype(int)
        hits = int((run.done[members] <= now).sum())
        yield poisson_binomial_tail(curve[np.minimum(ages, len(curve) - 1)], hits, up)


def scope_of(incident: Incident) -> Callable[[dict[str, Any]], bool]:
    """Whether an envelope is in the incident's scope (source, app version, event)."""
    source = incident.params.get("source")
    version = incident.params.get("app_version") if incident.kind in VERSIONED else None
    event = incident.params.get("event") if incident.kind != "drop" else None
    if incident.kind in CONVERSIONS:
        event = incident.params["from_event"]

    def inside(envelope: dict[str, Any]) -> bool:
        body = envelope["body"]
        if source and envelope["source"] != source:
            return False
        if event and body.get("event") != event:
            return False
        if version:
            app = (body.get("context") or {}).get("app") or {}
            return app.get("version") == version
        return True

    return inside


class Collector:
    """Gathers one incident's evidence from envelopes in `received_at` order, over `span`
    seconds from its start (conversions: the cohort is who did `from_event` in the first
    `cohort_until` seconds)."""

    def __init__(
        self, incident: Incident, validate: Any, span: float, cohort_until: float = math.inf
    ) -> None:
        self.kind = incident.kind
        self.validate = validate
        self.start = incident.start.timestamp()
        self.end = self.start + span
        self.span = span
        self.cohort_until = cohort_until
        self.units = np.zeros(math.ceil(span / 60), dtype=np.int64)
        self.inside = scope_of(incident)
        self.first: dict[str, float] = {}  # user -> when first counted (a cohort: did from_event)
        self.ids: dict[str, str] = {}  # either id of a counted user -> that user
        self.done: dict[str, float] = {}
        self.to_event = incident.params.get("to_event") if self.kind in CONVERSIONS else None

    def add(self, envelope: dict[str, Any], ts: float) -> None:
        """Count one envelope received at `ts` (epoch seconds) inside the span."""
        body = envelope["body"]
        at = ts - self.start
        anonymous, known = body.get("anonymousId"), body.get("userId")
        if self.to_event is not None and body.get("event") == self.to_event:
            user = self.ids.get(anonymous) or self.ids.get(known)  # type: ignore[arg-type]
            if user is not None and user not in self.done:
                self.done[user] = at  # a user converts once
            return
        if not self.inside(envelope):
            return
        if self.kind == "spike":
            self.units[int(at // 60)] += 1
            return
        if (
            self.kind == "violation_surge"
            and not self.validate(body, envelope["source"]).violations
        ):
            return
        user = self.ids.get(anonymous) or self.ids.get(known)  # type: ignore[arg-type]
        if user is None and (anonymous or known):
            user = str(anonymous or known)
            self.ids.update({i: user for i in (anonymous, known) if i})
            self.first[user] = at
            self.units[int(at // 60)] += 1

    def evidence(self) -> Evidence:
        """The cumulative evidence at the end of each minute."""
        units = np.cumsum(self.units)
        if self.to_event is None:
            return Evidence(units)
        cohort = [u for u, at in self.first.items() if at < self.cohort_until]
        starts = np.array([self.first[u] for u in cohort], dtype=float)
        ends = np.array([self.done.get(u, math.inf) for u in cohort], dtype=float)
        return Evidence(units, starts, ends, self.span)


def latencies(
    runs: list[Evidence], clean: list[Evidence], kind: str
) -> list[dict[str, int | None]]:
    """The clairvoyant test's latency in each run at each level of `LEVELS` (None: not within
    the window); the normal is learnt from the `clean` runs once for all of them."""
    up = kind in UP
    if not runs:
        return []
    if runs[0].starts is not None:
        curve = conversion_curve(clean, runs[0].span)
        every = [list(conversion_pvalues(run, curve, up)) for run in runs]
    else:
        minutes = len(runs[0].units)
        expected = np.mean([c.units[:minutes] for c in clean], axis=0)
        every = [poisson_pvalues(run.units, expected, up) for run in runs]
    return [{name: first_minute(p, alpha) for name, alpha in LEVELS.items()} for p in every]


CLEAN_CONVERSION_HOURS = 24.0  # the clean runs of a conversion learn its timing over a day


def funnel_seconds(plan: Any, incident: Incident) -> float:
    """The plan's funnel window after the incident's `from_event` step (an hour if none)."""
    pair = (incident.params["from_event"], incident.params["to_event"])
    for funnel in plan.funnels:
        if pair in zip(funnel.steps, funnel.steps[1:], strict=False):
            return funnel.window_minutes * 60.0
    return 3600.0


def collector(incident: Incident, clean: bool, setting: dict[str, Any]) -> Collector:
    """What to watch of one incident: its window; for a conversion, the incident's checkouts
    for one funnel window more (they convert after it), or a day of clean checkouts. Never past
    the end of the run."""
    lasts = (incident.end - incident.start).total_seconds()
    span = lasts
    if incident.kind in CONVERSIONS:
        more = (
            CLEAN_CONVERSION_HOURS * 3600
            if clean
            else lasts + funnel_seconds(setting["plan"], incident)
        )
        span = max(lasts, more)
    run_end = setting["start"].timestamp() + setting["days"] * 86400
    span = min(span, run_end - incident.start.timestamp())
    cohort = lasts if incident.kind in CONVERSIONS and not clean else math.inf
    return Collector(incident, setting["validate"], span, cohort_until=cohort)


def gather(
    seed: int,
    clean: bool,
    setting: dict[str, Any],
    progress: Callable[[], None] = lambda: None,
) -> list[Evidence]:
    """Simulate one run (with `setting["schedule"]`, as `trackwatch backtest` does for that
    seed, or clean) and fold it into the evidence of each incident of `setting["watched"]`.
    `progress` is called once per simulated hour."""
    schedule: list[Incident] = setting["schedule"]
    collectors = [collector(incident, clean, setting) for incident in setting["watched"]]
    shipped = shipped_releases(setting["plan"], schedule)
    envelopes = simulate(
        setting["plan"],
        setting["start"],
        setting["days"],
        setting["users_per_day"],
        seed,
        [] if clean else schedule,
        releases=[*setting["releases"], *shipped],
    )
    hour = ""
    for envelope in envelopes:
        received = envelope["received_at"]
        if received[:13] != hour:
            hour = received[:13]
            progress()
        ts = datetime.fromisoformat(received).timestamp()
        for watcher in collectors:
            if watcher.start <= ts < watcher.end:
                watcher.add(envelope, ts)
    return [watcher.evidence() for watcher in collectors]


def make_setting(
    plan: Any, schedule: list[Incident], start: datetime, days: float, users_per_day: int
) -> dict[str, Any]:
    """Everything a run needs; `watched` are the incidents that expect an alert."""
    return {
        "plan": plan,
        "schedule": schedule,
        "watched": [i for i in schedule if i.expect_alert],
        "start": start,
        "days": days,
        "users_per_day": users_per_day,
        "validate": compile_plan(plan).validate,
        "releases": default_releases(start, days),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profile",
        default="ecommerce",
        help="ecommerce (our simulator, default) or a profile of the independent generator "
        "(simulation.profiles; see bench/latency_profiles.py)",
    )
    parser.add_argument("--users-per-day", type=int, help="default: 5000, or the profile's")
    parser.add_argument(
        "--seed", type=int, action="append", help="repeatable; default 7 8 9 11, profiles: 7"
    )
    parser.add_argument(
        "--clean-seeds", type=int, help="runs for the normal; default 8, profiles: 4"
    )
    parser.add_argument("--plan", type=Path, help="ecommerce only; default examples/ecommerce.yaml")
    parser.add_argument(
        "--schedule", type=Path, help="ecommerce only; default examples/incidents.yaml"
    )
    parser.add_argument("--days", type=float, help="default: 14, or the profile's")
    parser.add_argument(
        "--backtest",
        type=Path,
        help="out dir of `trackwatch backtest` with the same seeds: its latencies side by side",
    )
    args = parser.parse_args(argv)
    for name in ("users_per_day", "clean_seeds", "days"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.profile != "ecommerce":
        return profile_main(parser, args)
    args.users_per_day = args.users_per_day or 5000
    args.clean_seeds = args.clean_seeds or 8
    args.days = args.days or 14.0
    args.plan = args.plan or ROOT / "examples" / "ecommerce.yaml"
    args.schedule = args.schedule or ROOT / "examples" / "incidents.yaml"
    seeds = args.seed or [7, 8, 9, 11]
    end = START.timestamp() + args.days * 86400
    try:
        engine = engine_latencies(args.backtest, seeds) if args.backtest else None
        plan = load_plan(args.plan)
        schedule = load_incidents(args.schedule, START, plan)
    except (OSError, ValueError) as exc:  # PlanError and IncidentError are ValueErrors
        parser.error(str(exc))
    schedule = [i for i in schedule if i.start.timestamp() < end]
    setting = make_setting(plan, schedule, START, args.days, args.users_per_day)
    console = Console()
    runs = [(seed, True) for seed in range(10_000, 10_000 + args.clean_seeds)]
    runs += [(seed, False) for seed in seeds]
    found: dict[tuple[int, bool], list[Evidence]] = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("simulating", total=len(runs) * math.ceil(args.days * 24))
        for seed, clean in runs:
            found[seed, clean] = gather(seed, clean, setting, lambda: progress.advance(task))
    rows = []
    for k, incident in enumerate(setting["watched"]):
        clean = [evidence[k] for (_, is_clean), evidence in found.items() if is_clean]
        with_incidents = [found[seed, False][k] for seed in seeds]
        rows.append((incident, latencies(with_incidents, clean, incident.kind)))
    show(console, rows, seeds, args.users_per_day, engine)
    return 0


def profile_main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The floor for a profile of the independent generator (bench/latency_profiles.py)."""
    from bench import latency_profiles
    from simulation.profiles import ProfileError, get_profile

    if args.plan is not None or args.schedule is not None:
        parser.error("--plan and --schedule apply to the ecommerce profile only")
    seeds = args.seed or [7]
    try:
        profile = get_profile(args.profile)
        engine = engine_latencies(args.backtest, seeds) if args.backtest else None
        console = Console()
        run, rows = latency_profiles.floor_rows(
            profile, seeds, args.clean_seeds or 4, args.days, args.users_per_day, console
        )
    except (OSError, ValueError, ProfileError) as exc:
        parser.error(str(exc))
    latency_profiles.show(console, run, rows, seeds, engine)
    return 0


def engine_latencies(out_dir: Path, seeds: list[int]) -> dict[int, dict[str, float | None]]:
    """Per seed, each incident's latency in `trackwatch backtest`'s summary (None: missed)."""
    found: dict[int, dict[str, float | None]] = {}
    for seed in seeds:
        path = out_dir / f"seed-{seed}" / "summary.json"
        try:
            summary = orjson.loads(path.read_bytes())
            found[seed] = dict(summary["latency_minutes"])
            found[seed].update({name: None for name in summary["missed"]})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"--backtest: cannot read {path}: {exc}") from exc
    return found


def show(
    console: Console,
    rows: list,
    seeds: list[int],
    users_per_day: int,
    engine: dict[int, dict[str, float | None]] | None = None,
) -> None:
    """The per-incident table and the median floor over every incident and seed (and the
    engine's latencies in the backtest, when given)."""
    table = Table(title=f"Clairvoyant latency floor, minutes ({users_per_day:,} users/day)")
    table.add_column("incident")
    table.add_column("kind")
    names = [*LEVELS, *(["engine"] if engine else [])]
    for name in names:
        table.add_column(f"{name}, seeds {' '.join(map(str, seeds))}", justify="right")
    every: dict[str, list[float]] = {name: [] for name in names}
    for incident, found in rows:
        cells = []
        for name in names:
            if name == "engine":
                values = [engine[seed].get(incident.name) for seed in seeds]  # type: ignore[index]
            else:
                values = [f[name] for f in found]
            every[name] += [math.inf if v is None else float(v) for v in values]
            cells.append(" ".join("-" if v is None else f"{v:g}" for v in values))
        table.add_row(incident.name, incident.kind, *cells)
    console.print(table)
    for name, values in every.items():
        what = (
            "the engine in the backtest" if name == "engine" else f"{name} (p < {LEVELS[name]:.1e})"
        )
        console.print(
            f"{what}: median {statistics.median(values):g} min; "
            f"{sum(v <= 10 for v in values)} of {len(values)} within 10 min; "
            f"{sum(math.isinf(v) for v in values)} not found"
        )


if __name__ == "__main__":
    sys.exit(main())
