"""The Segment spec's standard fields, known to every plan without planning them.

Trackers add some properties by themselves: analytics.js sends the page's path, referrer, search,
title and url (and its name and category when given) with every `page` call; `identify` and
`group` calls carry the spec's reserved traits (email, name, plan, ...). A plan that does not list
them would flag each one as `unplanned_property` on every call. So, unless the plan turns a set
off (`builtins:` in the plan file), the validator adds these optional properties to every page,
screen, identify and group spec it compiles. A property the plan declares itself, under the same
name, replaces the built-in one (a stricter type, `required`, an enum, `pii: true`...). The
plan's PII names (`pii:`) win over both: such a property is never accepted.

Types follow the spec where it fixes one and SDKs keep to it; dates and ids are `any` because
SDKs send them as strings or numbers (plan them as `timestamp` or `string` to check them).
"""

from __future__ import annotations

from dataclasses import replace

from tracking_plan.model import CallType, EventSpec, Plan, PropertySpec, PropType

_S, _A, _O, _N = PropType.STRING, PropType.ANY, PropType.OBJECT, PropType.NUMBER


def _specs(*fields: tuple[str, PropType, str]) -> tuple[PropertySpec, ...]:
    return tuple(
        PropertySpec(name=name, type=kind, description=f"built-in: {text}")
        for name, kind, text in fields
    )


_PAGE = _specs(
    ("name", _S, "the page's name, when the call gives one"),
    ("category", _S, "the page's category, when the call gives one"),
    ("path", _S, "the path part of the page's URL"),
    ("referrer", _S, "the full URL of the previous page"),
    ("search", _S, "the query-string part of the page's URL"),
    ("title", _S, "the document's title"),
    ("url", _S, "the page's full (canonical) URL"),
    ("keywords", PropType.ARRAY, "words describing the page's content"),
)
_PAGE = tuple(
    replace(p, items=PropertySpec(name="item", type=_S)) if p.name == "keywords" else p
    for p in _PAGE
)
_SCREEN = _specs(
    ("name", _S, "the screen's name, when the call gives one"),
    ("category", _S, "the screen's category, when the call gives one"),
)
_USER_TRAITS = _specs(
    ("address", _O, "postal address: street, city, state, postalCode, country"),
    ("age", _N, "the user's age"),
    ("avatar", _S, "URL of a picture of the user"),
    ("birthday", _A, "the user's date of birth"),
    ("company", _O, "the user's company: name, id, industry, employee_count, plan"),
    ("createdAt", _A, "when the user's account was created"),
    ("description", _S, "a description of the user"),
    ("email", _S, "the user's e-mail address"),
    ("firstName", _S, "the user's first name"),
    ("gender", _S, "the user's gender"),
    ("id", _A, "the user's id in your database"),
    ("lastName", _S, "the user's last name"),
    ("name", _S, "the user's full name"),
    ("phone", _S, "the user's phone number"),
    ("title", _S, "the user's job title"),
    ("username", _S, "the user's user name"),
    ("website", _S, "the user's web site"),
)
_GROUP_TRAITS = _specs(
    ("address", _O, "postal address: street, city, state, postalCode, country"),
    ("avatar", _S, "URL of the group's picture"),
    ("createdAt", _A, "when the group's account was created"),
    ("description", _S, "a description of the group"),
    ("email", _S, "the group's e-mail address"),
    ("employees", _A, "the number of employees (SDKs send a string or a number)"),
    ("id", _A, "the group's id in your database"),
    ("industry", _S, "the group's industry"),
    ("name", _S, "the group's name"),
    ("phone", _S, "the group's phone number"),
    ("plan", _S, "the group's plan"),
    ("website", _S, "the group's web site"),
)

# built-in set name -> (the call it applies to, its properties)
BUILTINS: dict[str, tuple[CallType, tuple[PropertySpec, ...]]] = {
    "page": (CallType.PAGE, _PAGE),
    "screen": (CallType.SCREEN, _SCREEN),
    "identify": (CallType.IDENTIFY, _USER_TRAITS),
    "group": (CallType.GROUP, _GROUP_TRAITS),
}


def builtin_properties(call: CallType, enabled: frozenset[str]) -> tuple[PropertySpec, ...]:
    """The built-in properties of `call` when its set is in `enabled` (else none)."""
    for name, (applies_to, props) in BUILTINS.items():
        if applies_to is call and name in enabled:
            return props
    return ()


def with_builtins(spec: EventSpec, plan: Plan) -> EventSpec:
    """`spec` with the built-in properties of its call added after its own ones (a property the
    plan declares under the same name keeps the plan's definition)."""
    extra = builtin_properties(spec.call, plan.builtins)
    own = {p.name for p in spec.properties}
    added = tuple(p for p in extra if p.name not in own)
    return replace(spec, properties=spec.properties + added) if added else spec


__all__ = ["BUILTINS", "builtin_properties", "with_builtins"]
