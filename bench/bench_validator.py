"""Micro-benchmark: our compiled validator vs jsonschema-rs (and plain jsonschema) on the same
events, valid and invalid, in the same run.

    python bench/bench_validator.py --events 20000

Events are Segment track calls for the events of `examples/ecommerce.yaml`, generated at random
(seeded) from the plan: valid ones, and invalid ones with three mutations each (wrong type,
out-of-enum, broken pattern, out of range, missing required, unplanned property, bad timestamp).
The baselines validate the same events with an equivalent JSON Schema built from the plan (one
compiled schema per event, picked by event name like ours) and collect ALL errors
(`iter_errors`). Our validator additionally normalises the event (timestamps, currency,
defaults, clock skew) and scans context and properties for PII at any depth; the schemas check
PII names at the top level of `properties` only.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tracking_plan.loader import load_plan  # noqa: E402
from tracking_plan.model import EventSpec, Plan, PropertySpec, PropType  # noqa: E402
from tracking_plan.normalise import format_timestamp  # noqa: E402
from tracking_plan.normalise_currency_codes import CURRENCY_CODES  # noqa: E402
from tracking_plan.validator import compile_plan  # noqa: E402

RECEIVED_AT = 1_795_000_000.0  # 2026-11-19


# ------------------------------------------------------------------------------ event samples


class Sampler:
    """Random valid values for property specs (strings matching patterns come from pools that
    hypothesis' `from_regex` fills once)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._pools: dict[str, list[str]] = {}

    def pattern_value(self, pattern: str) -> str:
        pool = self._pools.get(pattern)
        if pool is None:
            from hypothesis import strategies as st
            from hypothesis.errors import NonInteractiveExampleWarning

            strategy = st.from_regex(pattern, fullmatch=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NonInteractiveExampleWarning)
                pool = self._pools[pattern] = [strategy.example() for _ in range(40)]
        return self.rng.choice(pool)

    def value(self, spec: PropertySpec, depth: int = 0) -> Any:
        rng = self.rng
        if spec.enum:
            return rng.choice(spec.enum)
        kind = spec.type
        if kind is PropType.STRING:
            if spec.format == "currency":
                return rng.choice(("EUR", "USD", "GBP", "eur", "CHF"))
            if spec.pattern:
                return self.pattern_value(spec.pattern)
            top = int(min(x for x in (spec.max_length, spec.maximum, 24) if x is not None))
            return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz -", k=rng.randint(1, top)))
        if kind in (PropType.NUMBER, PropType.INTEGER):
            low = spec.minimum if spec.minimum is not None else 0
            high = spec.maximum if spec.maximum is not None else low + 500
            if kind is PropType.INTEGER:
                return rng.randint(int(low), int(high))
            return round(rng.uniform(low, high), 2)
        if kind is PropType.BOOLEAN:
            return rng.random() < 0.5
        if kind is PropType.TIMESTAMP:
            return format_timestamp(RECEIVED_AT - rng.uniform(0, 86400 * 30))
        if kind is PropType.ARRAY:
            low = int(spec.minimum or 0)
            count = rng.randint(max(low, 1), max(low, 3))
            return [self.value(spec.items, depth + 1) if spec.items else "x" for _ in range(count)]
        if kind is PropType.OBJECT:
            return self.properties(spec.properties, depth + 1)
        return "any"

    def properties(self, specs: tuple[PropertySpec, ...], depth: int = 0) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for spec in specs:
            if spec.required or self.rng.random() < 0.6:
                out[spec.name] = self.value(spec, depth)
        return out

    def event(self, spec: EventSpec) -> dict[str, Any]:
        rng = self.rng
        sent = RECEIVED_AT - rng.uniform(0, 5)
        return {
            "type": "track",
            "event": spec.name,
            "messageId": f"m-{rng.getrandbits(64):x}",
            "anonymousId": f"a-{rng.getrandbits(48):x}",
            "userId": f"u{rng.randint(1, 10**6)}" if rng.random() < 0.5 else None,
            "context": {
                "library": {"name": "analytics.js", "version": "5.2.1"},
                "locale": "en-GB",
                "page": {"path": "/p", "url": "https://shop.example/p"},
            },
            "properties": self.properties(spec.properties),
            "timestamp": format_timestamp(sent - rng.uniform(0, 2)),
            "sentAt": format_timestamp(sent),
        }


def _mutations(spec: EventSpec) -> list[Callable[[dict[str, Any], random.Random], None]]:
    """Mutations that break one rule each, applicable to `spec`."""
    out: list[Callable[[dict[str, Any], random.Random], None]] = []
    props = {p.name: p for p in spec.properties}

    def unplanned(e: dict[str, Any], rng: random.Random) -> None:
        e["properties"][f"extra_{rng.randint(0, 99)}"] = rng.randint(0, 9)

    def bad_timestamp(e: dict[str, Any], rng: random.Random) -> None:
        e["timestamp"] = rng.choice(("yesterday", "1999-12-31T23:59:59Z", "2026-13-01T00:00:00Z"))

    out += [unplanned, bad_timestamp]
    for name, p in props.items():
        if p.required:
            out.append(lambda e, rng, n=name: e["properties"].pop(n, None))
        out.append(lambda e, rng, n=name: e["properties"].__setitem__(n, [rng.random()]))
        if p.enum:
            out.append(lambda e, rng, n=name: e["properties"].__setitem__(n, f"nope{rng.random()}"))
        if p.pattern:
            out.append(lambda e, rng, n=name: e["properties"].__setitem__(n, f"#{rng.random()}"))
        if p.minimum is not None and p.type in (PropType.NUMBER, PropType.INTEGER):
            out.append(lambda e, rng, n=name, m=p.minimum: e["properties"].__setitem__(n, m - 7))
    return out


Sample = tuple[str, float, dict[str, Any]]  # (source, received at, Segment call)


def make_events(plan: Plan, count: int, invalid: bool, seed: int) -> list[Sample]:
    rng = random.Random(seed)
    sampler = Sampler(rng)
    specs = [
        s for s in plan.events.values() if s.call.value == "track" and s.status != "deprecated"
    ]
    events = []
    for _ in range(count):
        spec = rng.choice(specs)
        event = sampler.event(spec)
        if invalid:
            for mutate in rng.sample(_mutations(spec), 3):
                mutate(event, rng)
        received = RECEIVED_AT + len(events) * 0.0137  # distinct, like a real stream
        events.append((rng.choice(spec.sources or ("web",)), received, event))
    return events


# ------------------------------------------------------------------------------ JSON Schema


def _property_schema(spec: PropertySpec) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    kind = spec.type
    if kind is PropType.TIMESTAMP:
        schema["anyOf"] = [{"type": "string", "format": "date-time"}, {"type": "number"}]
    elif kind is not PropType.ANY:
        schema["type"] = kind.value
    if spec.enum is not None:
        schema["enum"] = list(spec.enum)
    if spec.pattern is not None:
        schema["pattern"] = spec.pattern
    if spec.format == "currency":
        schema["enum"] = sorted(CURRENCY_CODES | {c.lower() for c in CURRENCY_CODES})
    if kind in (PropType.NUMBER, PropType.INTEGER):
        if spec.minimum is not None:
            schema["minimum"] = spec.minimum
        if spec.maximum is not None:
            schema["maximum"] = spec.maximum
    if kind is PropType.STRING and spec.max_length is not None:
        schema["maxLength"] = spec.max_length
    if kind is PropType.ARRAY:
        if spec.minimum is not None:
            schema["minItems"] = int(spec.minimum)
        if spec.maximum is not None:
            schema["maxItems"] = int(spec.maximum)
        if spec.items is not None:
            schema["items"] = _property_schema(spec.items)
    if kind is PropType.OBJECT and spec.properties:
        schema.update(_object_schema(spec.properties, spec.additional_properties, ()))
    if spec.nullable:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def _object_schema(
    specs: tuple[PropertySpec, ...], additional: bool, pii: tuple[str, ...]
) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {p.name: _property_schema(p) for p in specs},
        "required": [p.name for p in specs if p.required],
        "additionalProperties": additional,
    }
    if pii:
        schema["propertyNames"] = {"not": {"enum": list(pii)}}
    return schema


def event_schema(plan: Plan, spec: EventSpec) -> dict[str, Any]:
    """A JSON Schema (2020-12) checking what our validator checks, as far as it can say it."""
    time_schema = {"type": "string", "format": "date-time"}
    context: dict[str, Any] = {"type": "object"}
    for path in plan.required_context:  # "library.name" -> nested required objects
        node = context
        for part in path.split("."):
            node.setdefault("required", []).append(part)
            node = node.setdefault("properties", {}).setdefault(part, {})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["type", "event", "context"],
        "anyOf": [{"required": ["userId"]}, {"required": ["anonymousId"]}],
        "properties": {
            "type": {"const": "track"},
            "event": {"const": spec.name},
            "userId": {"type": ["string", "null"]},
            "anonymousId": {"type": "string"},
            "context": context,
            "timestamp": time_schema,
            "sentAt": time_schema,
            "properties": _object_schema(
                spec.properties, spec.allow_unplanned_properties, plan.pii
            ),
        },
    }


# ------------------------------------------------------------------------------ timing


Check = Callable[[str, float, dict[str, Any]], object]


def _time_once(fn: Check, events: list[Sample]) -> float:
    """CPU seconds per event for one pass (CPU time, not wall time: the machine may be shared,
    and time spent waiting for a core is nobody's cost)."""
    gc.collect()
    start = time.process_time()
    for source, received, event in events:
        fn(source, received, event)
    return (time.process_time() - start) / len(events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events of each kind")
    parser.add_argument("--plan", default=str(ROOT / "examples" / "ecommerce.yaml"))
    parser.add_argument("--repeat", type=int, default=5, help="timed passes (best is kept)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--jsonschema-events",
        type=int,
        default=2000,
        help="events for the slow pure-Python baseline",
    )
    args = parser.parse_args()

    plan = load_plan(args.plan)
    validator = compile_plan(plan)
    valid = make_events(plan, args.events, invalid=False, seed=args.seed)
    invalid = make_events(plan, args.events, invalid=True, seed=args.seed + 1)

    ours = validator.validate

    def check_ours(source: str, received: float, event: dict[str, Any]) -> object:
        return ours(event, source, received)

    outcomes = [ours(e, s, r).outcome for s, r, e in valid]
    bad_counts = [len(ours(e, s, r).violations) for s, r, e in invalid]
    assert all(o == "valid" for o in outcomes), "generated valid events must pass"
    assert all(n >= 1 for n in bad_counts), "mutated events must fail"

    specs = {n: s for n, s in plan.events.items() if s.call.value == "track"}
    schemas = {name: event_schema(plan, spec) for name, spec in specs.items()}
    baselines: dict[str, Check] = {}
    try:
        import jsonschema_rs

        rs = {n: jsonschema_rs.validator_for(s, validate_formats=True) for n, s in schemas.items()}

        def with_rs(source: str, received: float, event: dict[str, Any]) -> list[Any]:
            return list(rs[event["event"]].iter_errors(event))

        baselines["jsonschema-rs"] = with_rs
        rs_errors = [len(with_rs(s, r, e)) for s, r, e in invalid]
        rs_valid = sum(1 for s, r, e in valid if not with_rs(s, r, e))
    except ImportError:
        print("jsonschema-rs is not installed: pip install jsonschema-rs", file=sys.stderr)
    try:
        import jsonschema

        py = {
            n: jsonschema.Draft202012Validator(s, format_checker=jsonschema.FormatChecker())
            for n, s in schemas.items()
        }

        def with_jsonschema(source: str, received: float, event: dict[str, Any]) -> object:
            return list(py[event["event"]].iter_errors(event))

        baselines["jsonschema"] = with_jsonschema
    except ImportError:
        pass

    print(f"plan {plan.name!r} {plan.version}, {args.events} valid + {args.events} invalid events,")
    print(
        f"invalid: {statistics.mean(bad_counts):.2f} violations/event (ours)"
        + (
            f", {statistics.mean(rs_errors):.2f} errors/event (jsonschema-rs);"
            f" jsonschema-rs accepts {rs_valid}/{len(valid)} of the valid ones"
            if "jsonschema-rs" in baselines
            else ""
        )
    )
    print(
        f"{'validator':<16}{'kind':<9}{'µs/event':>10}{'median':>9}{'events/s':>12}"
        f"{'ours/this':>11}"
    )
    # Passes are interleaved (ours, jsonschema-rs, ours, ...) and the best pass of each is kept,
    # so that a busy moment of the machine cannot favour one side; the median of the passes
    # shows how noisy the machine was.
    passes: dict[tuple[str, str], list[float]] = {}
    contenders = {"ours": check_ours, **baselines}
    for round_number in range(args.repeat):
        for kind, events in (("valid", valid), ("invalid", invalid)):
            for name, fn in contenders.items():
                if name == "jsonschema" and round_number > 0:
                    continue  # slow: one pass on a sample is enough
                sample = events[: args.jsonschema_events] if name == "jsonschema" else events
                passes.setdefault((name, kind), []).append(_time_once(fn, sample))
    for kind in ("valid", "invalid"):
        mine = min(passes[("ours", kind)])
        for name in ("ours", *baselines):
            seconds, median = min(passes[(name, kind)]), statistics.median(passes[(name, kind)])
            print(
                f"{name:<16}{kind:<9}{seconds * 1e6:>10.2f}{median * 1e6:>9.2f}"
                f"{1 / seconds:>12,.0f}{mine / seconds:>11.2f}"
            )
    print("ours/this < 1 means ours is faster. Goal: ≤ 5 µs/event, faster than jsonschema-rs.")


if __name__ == "__main__":
    main()
