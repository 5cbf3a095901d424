"""The tracking plan as plain data: what the loader builds and the validator compiles.

A plan is immutable once loaded. Everything here is pure data with no I/O; see
`tracking_plan.loader` for reading YAML files and `tracking_plan.validator` for checking events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Mode(StrEnum):
    """What happens to an event that breaks the plan."""

    BLOCK = "block"  # invalid -> quarantine only
    FLAG = "flag"  # forward to events.valid with its violations attached
    OMIT = "omit"  # strip unplanned properties (recording that), quarantine other violations


class Status(StrEnum):
    ACTIVE = "active"
    DRAFT = "draft"
    DEPRECATED = "deprecated"


class PropType(StrEnum):
    STRING = "string"
    NUMBER = "number"  # int or float, never bool
    INTEGER = "integer"  # int (or a float with no fractional part), never bool
    BOOLEAN = "boolean"
    OBJECT = "object"
    ARRAY = "array"
    TIMESTAMP = "timestamp"  # ISO-8601 string or epoch seconds/milliseconds; normalised to UTC
    ANY = "any"


class Identity(StrEnum):
    """Which identifier every event must carry."""

    USER_ID = "userId"
    ANONYMOUS_ID = "anonymousId"
    ANY = "any"  # at least one of userId / anonymousId


class CallType(StrEnum):
    TRACK = "track"
    PAGE = "page"
    SCREEN = "screen"
    IDENTIFY = "identify"
    GROUP = "group"  # a user joins a group (groupId); its properties are the group's traits
    ALIAS = "alias"  # a user's previous id (previousId) is tied to its new one (userId)


# Which sets of the Segment spec's standard fields a plan knows without planning them
# (`tracking_plan.builtins`): standard page and screen properties, reserved user and group traits.
BUILTIN_SETS = ("page", "screen", "identify", "group")


@dataclass(frozen=True)
class UniqueKey:
    """A business key: the event's value(s) of `properties` must not repeat within
    `within_seconds` under another messageId (the same messageId is a retry, dropped before).

    Declared on a top-level string/integer property (`order_id: {type: string, unique: 24h}`,
    `properties` = that one name) or on the event for a composite key
    (`unique: {keys: [order_id, line], within: 24h}`). A repeat is a `duplicate_key` violation;
    `mode` says what it does: `flag` (the default) forwards the event with it, `block`
    quarantines the event (see docs/tracking-plan.md, "Business keys").
    """

    properties: tuple[str, ...]
    within_seconds: float
    mode: Mode = Mode.FLAG  # FLAG or BLOCK
    line: int | None = None


@dataclass(frozen=True)
class PropertySpec:
    """One property (or array item / nested object field) of an event."""

    name: str
    type: PropType = PropType.ANY
    required: bool = False
    nullable: bool = False
    description: str = ""
    enum: tuple[Any, ...] | None = None
    pattern: str | None = None
    minimum: float | None = None  # numbers: value; strings: length; arrays: item count
    maximum: float | None = None
    max_length: int | None = None  # strings only
    format: str | None = None  # "currency" (ISO 4217 code), "email", "uri", "date-time"
    default: Any = None
    has_default: bool = False
    items: PropertySpec | None = None  # arrays: schema of each item
    properties: tuple[PropertySpec, ...] = ()  # objects: nested fields
    additional_properties: bool = True  # objects: are unlisted nested fields allowed?
    pii: bool = False
    unique: UniqueKey | None = None  # top-level string/integer properties of an event only
    line: int | None = None  # where it was declared in the plan file, for messages


@dataclass(frozen=True)
class EventSpec:
    """One planned event: a `track` name, a named page/screen, the identify traits, the group
    traits or the alias call."""

    name: str
    call: CallType = CallType.TRACK
    description: str = ""
    owner: str = ""
    status: Status = Status.ACTIVE
    sources: tuple[str, ...] = ()  # empty: every source
    mode: Mode | None = None  # None: fall back to the source's, then the plan's default
    properties: tuple[PropertySpec, ...] = ()
    allow_unplanned_properties: bool = False
    unique: UniqueKey | None = None  # the event-level (composite) business key, if any
    line: int | None = None

    def business_keys(self) -> tuple[UniqueKey, ...]:
        """Every business key of the event: its properties' (in plan order), then its own."""
        keys = tuple(p.unique for p in self.properties if p.unique is not None)
        return (*keys, self.unique) if self.unique is not None else keys


@dataclass(frozen=True)
class SourceSpec:
    """A sender of events (web, ios, android, server), its platform and its default mode."""

    name: str
    platform: str = ""
    mode: Mode | None = None
    description: str = ""
    line: int | None = None


@dataclass(frozen=True)
class Funnel:
    """Ordered steps whose step-to-step conversion rates the detectors watch."""

    name: str
    steps: tuple[str, ...]
    window_minutes: int = 60  # a user converts if the next step follows within this time
    line: int | None = None


@dataclass(frozen=True)
class Plan:
    """A whole tracking plan."""

    name: str
    version: str
    default_mode: Mode = Mode.BLOCK
    identity: Identity = Identity.ANY
    required_context: tuple[str, ...] = ()  # dotted paths under `context`, e.g. "app.version"
    pii: tuple[str, ...] = ()  # property names that must never arrive, at any depth
    sources: dict[str, SourceSpec] = field(default_factory=dict)
    events: dict[str, EventSpec] = field(default_factory=dict)  # key: (call-prefixed) event name
    funnels: tuple[Funnel, ...] = ()
    path: str | None = None  # the file it was loaded from, if any
    builtins: frozenset[str] = frozenset(BUILTIN_SETS)  # standard fields known without planning

    def mode_for(self, event: EventSpec | None, source: str | None) -> Mode:
        """The effective mode: event's, else the source's, else the plan default."""
        if event is not None and event.mode is not None:
            return event.mode
        spec = self.sources.get(source or "")
        if spec is not None and spec.mode is not None:
            return spec.mode
        return self.default_mode


def event_key(call: CallType | str, name: str | None) -> str:
    """The key of `Plan.events` for a call: the event name for `track`, else `"<call>:<name>"`.

    Identify, group and alias calls have no name: their keys are `"identify"`, `"group"` and
    `"alias"`. Unnamed page/screen calls use `"page"` / `"screen"`.
    """
    call = CallType(call)
    if call is CallType.TRACK:
        return name or ""
    return f"{call.value}:{name}" if name else call.value


_DURATION = re.compile(r"([1-9][0-9]{0,6})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
MAX_UNIQUE_SECONDS = 30 * 86_400  # the longest horizon a business key may have


def parse_duration(text: str) -> float | None:
    """Seconds of a duration written `<whole number><unit>` with unit s, m, h or d (`24h`,
    `30m`, `7d`); None when `text` is not one."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        return None
    return float(int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def format_duration(seconds: float) -> str:
    """The shortest plan text of a duration in seconds (`parse_duration` reads it back): whole
    days from 2 days on, else hours, minutes or seconds (86400 -> "24h", 604800 -> "7d")."""
    whole = int(seconds)
    if whole != seconds or whole <= 0:
        return f"{seconds:g}s"
    if whole % 86_400 == 0 and whole >= 2 * 86_400:
        return f"{whole // 86_400}d"
    for unit, size in (("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def unnamed_view(call: CallType, line: int | None = None) -> EventSpec:
    """What a plan's `pages:` (`screens:`) section implies for page (screen) calls without a
    name, such as the bare `analytics.page()` of analytics.js on every page load: planned, with
    the built-in properties only (`builtins`), in the plan's and source's mode."""
    kind = "page" if call is CallType.PAGE else "screen"
    return EventSpec(
        name="",
        call=call,
        description=f"{kind} calls without a name (implied by `{kind}s:`): built-in properties",
        line=line,
    )


def is_unnamed_view(event: EventSpec) -> bool:
    """The entry `unnamed_view` made (a planned page or screen always has a name)."""
    return event.call in (CallType.PAGE, CallType.SCREEN) and not event.name
