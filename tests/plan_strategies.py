"""Hypothesis strategies for whole plans (valid by construction), shared by the plan tests."""

from __future__ import annotations

import unicodedata

from hypothesis import strategies as st

from tracking_plan.model import (
    MAX_UNIQUE_SECONDS,
    EventSpec,
    Mode,
    Plan,
    PropertySpec,
    PropType,
    Status,
    UniqueKey,
)

_NAME = st.text(min_size=1, max_size=12).filter(
    lambda s: (
        s == s.strip()
        and s.strip()
        and not any(
            unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for c in s
        )
    )
)
_LEAF = st.builds(
    lambda name, kind, required, nullable, description: PropertySpec(
        name=name, type=kind, required=required, nullable=nullable, description=description
    ),
    _NAME,
    st.sampled_from(list(PropType)),
    st.booleans(),
    st.booleans(),
    st.text(max_size=20).filter(lambda s: "\x00" not in s),
)
_STRING_ENUM = st.builds(
    lambda name, values, pattern: PropertySpec(
        name=name, type=PropType.STRING, enum=tuple(values), pattern=pattern
    ),
    _NAME,
    st.lists(st.sampled_from(["yes", "no", "1.0", "null", "~", "a b", "é", "'q'", "#x"]),
             min_size=1, max_size=4, unique=True),
    st.sampled_from([None, ".*", "^[a-z]+$"]),
)  # fmt: skip
_RANGED = st.builds(
    lambda name, low, span, default: PropertySpec(
        name=name, type=PropType.NUMBER, minimum=low, maximum=low + span,
        default=low + span / 2 if default else None, has_default=default,
    ),
    _NAME,
    st.integers(-1000, 1000),
    st.integers(0, 1000),
    st.booleans(),
)  # fmt: skip
_WITHIN = st.one_of(
    st.integers(1, MAX_UNIQUE_SECONDS), st.sampled_from([60, 3600, 86_400, MAX_UNIQUE_SECONDS])
).map(float)
_KEY_MODE = st.sampled_from([Mode.FLAG, Mode.BLOCK])
_KEYED = st.builds(
    lambda name, kind, required, within, mode: PropertySpec(
        name=name, type=kind, required=required,
        unique=UniqueKey((name,), within, mode),
    ),
    _NAME,
    st.sampled_from([PropType.STRING, PropType.INTEGER]),
    st.booleans(),
    _WITHIN,
    _KEY_MODE,
)  # fmt: skip
_PROP = st.one_of(_LEAF, _STRING_ENUM, _RANGED, _KEYED)


@st.composite
def plans(draw) -> Plan:
    """A plan of 1-5 events with random properties (leaf types, string enums, ranges, business
    keys) and, sometimes, an event-level business key."""
    events = {}
    for name in draw(st.lists(_NAME, min_size=1, max_size=5, unique=True)):
        props = draw(st.lists(_PROP, max_size=5, unique_by=lambda p: p.name))
        keyable = [  # what an event-level (composite) key may list
            p.name
            for p in props
            if p.type in (PropType.STRING, PropType.INTEGER) and not p.has_default
        ]
        unique = None
        if keyable and draw(st.booleans()):
            names = draw(st.lists(st.sampled_from(keyable), min_size=1, max_size=3, unique=True))
            alone = {p.name: p.unique for p in props}
            if len(names) > 1 or alone[names[0]] is None:
                unique = UniqueKey(tuple(names), draw(_WITHIN), draw(_KEY_MODE))
        events[name] = EventSpec(
            name=name,
            description=draw(st.text(max_size=15).filter(lambda s: "\x00" not in s)),
            status=draw(st.sampled_from(list(Status))),
            mode=draw(st.sampled_from([None, *Mode])),
            properties=tuple(props),
            unique=unique,
        )
    return Plan(name=draw(_NAME), version=draw(_NAME), events=events)
