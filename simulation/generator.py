"""The traffic of a scenario for a seed: envelopes in the order a collector writes them.

Sessions are generated in the order they start (each from its own random stream); their calls
are delivered (sent, received, batched), changed by the incidents, and held in a heap until no
session still to come can send anything received earlier. Out comes one envelope per call,
``{"source", "received_at", "body"}`` (see `streams.envelope`), in `received_at` order; what
would be received after the scenario's end is not recorded.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from typing import Any

from simulation.apps import PLATFORMS, version_at
from simulation.delivery import deliver_session
from simulation.incidents import Effects
from simulation.journeys import Call, Catalog, Journey
from simulation.people import Person, device_of, new_person
from simulation.population import Population
from simulation.profiles import Scenario
from simulation.randomness import key, stream, unit
from simulation.timestamps import iso

Envelope = dict[str, Any]
VISITOR_SPREAD = 20 * 60.0  # a campaign's extra visitors arrive within this after a session


class Generator:
    """One run: a scenario and a seed."""

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        self.profile = scenario.profile
        self.seed = seed
        self.population = Population(
            seed,
            scenario.users_per_day,
            self.profile.platform_mix,
            self.profile.rhythm,
            self.profile.first,
            self.profile.new_share,
        )
        self.catalog = Catalog()
        self.effects = Effects(list(scenario.incidents), seed)
        self.people: dict[int, Person] = {}
        self.visitors: dict[int, str] = {}  # a campaign's visitor -> the campaign
        self.sessions: list[tuple[float, int, int, int, int, int]] = []  # a heap
        self.out: list[tuple[float, int, Call]] = []  # a heap by reception
        self.pushed = 0

    def envelopes(self) -> Iterator[Envelope]:
        end = self.scenario.end
        day = 0
        while True:
            clock_start = self.population.day_start(day)
            if clock_start >= end:
                break
            sessions = self.population.day(day)
            for ts, user, k, platform in zip(
                sessions.ts.tolist(), sessions.user.tolist(), sessions.k.tolist(),
                sessions.platform.tolist(), strict=True,
            ):  # fmt: skip
                if ts < end:
                    self._push_session(ts, user, day, k, platform)
            day_end = min(self.population.day_start(day + 1), end)
            while self.sessions and self.sessions[0][0] < day_end:
                ts, _, user, day_of, k, platform = heapq.heappop(self.sessions)
                self._session(ts, user, day_of, k, platform)
                yield from self._ready(ts)
            day += 1
        yield from self._ready(end)

    # ------------------------------------------------------------------------------ sessions

    def _push_session(self, ts: float, user: int, day: int, k: int, platform: int) -> None:
        self.pushed += 1
        heapq.heappush(self.sessions, (ts, self.pushed, user, day, k, platform))

    def _person(self, user: int, now: float) -> Person:
        person = self.people.get(user)
        if person is None:
            born = float(self.population.born[user]) if user >= 0 else now
            person = new_person(self.seed, user, self.profile.behaviour.locales, born, now)
            if user >= 0:
                self.people[user] = person
        return person

    def _session(self, ts: float, user: int, day: int, k: int, platform_index: int) -> None:
        seed = self.seed
        platform = PLATFORMS[platform_index]
        visitor = user < 0  # a campaign's visitor: one session, remembered nowhere
        session_key = key(seed, "session", user, day, k)
        rng = random.Random(session_key)
        person = self._person(user, ts)
        device = device_of(seed, person, platform)
        release = None
        fresh = False
        if platform != "web":
            main = not visitor and self.population.platform[user] == platform_index
            installed = float(self.population.born[user]) if main else ts - 30 * 86400.0
            release = version_at(
                self.scenario.releases.get(platform, []), key(user, platform), seed, installed, ts
            )
            if release is None:
                return  # no version of the app exists yet
            fresh = main and installed >= self.scenario.start
        campaign = self.visitors.pop(user, None) if visitor else None
        journey = Journey(
            rng=rng,
            person=person,
            device=device,
            release=release,
            start=ts,
            behaviour=self.profile.behaviour,
            catalog=self.catalog,
            effects=self.effects,
            fresh_install=fresh,
            campaign=campaign,
        )
        calls = journey.run()
        app = platform != "web"
        offline = app and unit(seed, session_key, 31) < self.profile.offline
        killed = app and unit(seed, session_key, 32) < self.profile.killed
        calls = deliver_session(calls, seed, session_key, offline, killed)
        for call in self.effects.apply(calls):
            if call.received is not None and call.received < self.scenario.end:
                self.pushed += 1
                heapq.heappush(self.out, (call.received, self.pushed, call))
        if not visitor:
            self._campaign_visitors(ts, session_key, platform_index)

    def _campaign_visitors(self, ts: float, session_key: int, platform_index: int) -> None:
        platform = PLATFORMS[platform_index]
        for incident in self.scenario.incidents:
            extra = incident.extra_sessions(platform, ts)
            if extra <= 0:
                continue
            rng = stream(self.seed, "visitors", incident.name, session_key)
            for n in range(_poisson(rng, extra)):
                visitor = -1 - (key(incident.name, session_key, n) >> 2)
                at = ts + VISITOR_SPREAD * rng.random()
                if at < self.scenario.end:
                    self.visitors[visitor] = incident.name
                    self._push_session(at, visitor, 0, 0, platform_index)

    # ------------------------------------------------------------------------------ output

    def _ready(self, horizon: float) -> Iterator[Envelope]:
        """Envelopes received before `horizon` (nothing still to come can precede them)."""
        out = self.out
        while out and out[0][0] < horizon:
            received, _, call = heapq.heappop(out)
            body = call.body
            body["sentAt"] = iso(call.sent + call.skew)
            yield {"source": call.source, "received_at": iso(received), "body": body}


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method; means here are small)."""
    limit, product, count = pow(2.718281828459045, -mean), rng.random(), 0
    while product > limit:
        product *= rng.random()
        count += 1
    return count


def generate(scenario: Scenario, seed: int) -> Iterator[Envelope]:
    """The envelopes of `scenario` for `seed`, in `received_at` order (the same seed gives the
    same envelopes)."""
    return Generator(scenario, seed).envelopes()
