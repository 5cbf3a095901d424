"""Runtime helpers of the compiled validator: short value descriptions, JSON paths, fast
`Violation` construction, PII key detection and removal of stripped keys.

Everything here is total: it accepts any value (including non-JSON Python objects, huge or
deeply nested ones) and never raises.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from tracking_plan.violations import Code, Violation

GOT_MAX = 80  # `Violation.got` is at most this many characters
REDACTED = "<redacted>"
_KEY_MAX = 80  # longer keys are truncated in paths
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")
_MAX_INT_BITS = 200
_CONTAINERS = frozenset(
    (dict, list)
)  # str() of larger ints is slow (and limited by Python): describe by size

_PII_DETECTED = Code.PII_DETECTED.value
_new = object.__new__
_set_code = Violation.code.__set__  # type: ignore[attr-defined]
_set_path = Violation.path.__set__  # type: ignore[attr-defined]
_set_expected = Violation.expected.__set__  # type: ignore[attr-defined]
_set_got = Violation.got.__set__  # type: ignore[attr-defined]


def violation(code: str, path: str, expected: str, got: str) -> Violation:
    """`Violation(code, path, expected, got)`, about twice as fast as the frozen-dataclass
    constructor (which goes through `object.__setattr__` per field)."""
    v = _new(Violation)
    _set_code(v, code)
    _set_path(v, path)
    _set_expected(v, expected)
    _set_got(v, got)
    return v


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(value: object) -> str:
    """A short, printable, ASCII-escaped description of `value`: its JSON type and a clipped
    repr, at most `GOT_MAX` characters."""
    kind = type(value)  # the checks are exclusive: ordered by how common they are
    if kind is str:
        text = "string " + repr(value[:GOT_MAX])  # type: ignore[index]
        if len(text) <= GOT_MAX:
            return text
        return text[: GOT_MAX - 1] + "…"
    if kind is int:
        number: int = value  # type: ignore[assignment]
        if number.bit_length() > _MAX_INT_BITS:
            return f"integer of {number.bit_length()} bits"
        text = "integer " + str(number)
        return text if len(text) <= GOT_MAX else text[: GOT_MAX - 1] + "…"
    if kind is float:
        return "number " + repr(value)  # at most 24 characters
    if kind is list:
        return f"array of {len(value)} items"  # type: ignore[arg-type]
    if kind is dict:
        return f"object with {len(value)} keys"  # type: ignore[arg-type]
    if value is None:
        return "null"
    if kind is bool:
        return "boolean true" if value else "boolean false"
    return _clip(f"{kind.__name__} value", GOT_MAX)


def key_path(prefix: str, key: object) -> str:
    """`prefix.key`, or `prefix["odd key"]` (JSON-quoted, ASCII-escaped) for keys that are not
    plain identifiers; keys longer than 80 characters are clipped."""
    if type(key) is str:
        text: str = key  # type: ignore[assignment]
        if len(text) <= _KEY_MAX and _IDENT.fullmatch(text):
            return f"{prefix}.{text}"
        quoted = json.dumps(_clip(text, _KEY_MAX))
        return f"{prefix}[{quoted}]"
    return f"{prefix}[{_clip(repr(key), _KEY_MAX)}]"


def index_path(prefix: str, index: int) -> str:
    return f"{prefix}[{index}]"


def _squash(name: str) -> str:
    """`creditCardNumber`, `credit_card_number`, `Credit-Card Number` -> `creditcardnumber`."""
    return "".join(ch for ch in name.casefold() if ch.isalnum())


class PiiDetector:
    """Recognises PII property names (case, `_`, `-`, spaces and camelCase ignored) and finds
    them at any depth of a JSON value without recursion (10k-deep values are fine).

    Keys once judged harmless go to a bounded cache so that the usual case, a dict whose keys
    have all been seen before, is one `set.issuperset` call.
    """

    __slots__ = ("_pii", "_safe", "_safe_max", "names")

    def __init__(self, names: Iterable[str], safe_max: int = 50_000) -> None:
        self.names = tuple(names)
        self._pii = {_squash(n): n for n in self.names if _squash(n)}
        self._safe: set[Any] = set()
        self._safe_max = safe_max

    @property
    def active(self) -> bool:
        """Are there PII names to look for at all?"""
        return bool(self._pii)

    def safe_keys(self) -> set[Any]:
        """The live cache of keys judged harmless (for code that inlines `scan`'s fast path)."""
        return self._safe

    def is_pii(self, key: object) -> bool:
        if key in self._safe:
            return False
        if type(key) is str and len(key) <= 200 and _squash(key) in self._pii:  # type: ignore[arg-type]
            return True
        if len(self._safe) < self._safe_max:
            self._safe.add(key)
        return False

    def matched_name(self, key: str) -> str:
        return self._pii.get(_squash(key), key)

    def report(self, key: str, path: str, viol: list[Violation]) -> None:
        viol.append(
            violation(
                _PII_DETECTED,
                path,
                f"no PII (a property named like {self.matched_name(key)!r})",
                REDACTED,
            )
        )

    def scan(
        self,
        value: object,
        path: str,
        loc: tuple[Any, ...],
        viol: list[Violation],
        strip: list[tuple[str, tuple[Any, ...]]],
    ) -> None:
        """Report every PII key inside `value` (a dict or list found at `path` / `loc`)."""
        if not self._pii:
            return
        safe = self._safe
        if type(value) is list and _CONTAINERS.isdisjoint(map(type, value)):
            return  # scalars only: no keys at all
        # Fast path for the usual context: known keys, at most one level of nested objects whose
        # values are all scalars. Anything else takes the full walk below.
        if type(value) is dict and safe.issuperset(value):
            for child in value.values():
                kind = type(child)
                if kind is dict:
                    if not safe.issuperset(child) or not _CONTAINERS.isdisjoint(
                        map(type, child.values())
                    ):
                        break
                elif kind is list:
                    break
            else:
                return
        containers = _CONTAINERS
        # A frame is (container, parent frame, key in parent); paths are built only on a hit.
        stack: list[tuple[Any, Any, Any]] = [(value, None, None)]
        pop, push = stack.pop, stack.append
        while stack:
            frame = pop()
            node = frame[0]
            if type(node) is dict:
                if not safe.issuperset(node):
                    for key in node:
                        if self.is_pii(key):
                            hit_path, hit_loc = _frame_location(frame, path, loc)
                            self.report(key, key_path(hit_path, key), viol)
                            strip.append(("pii", (*hit_loc, key)))
                if not containers.isdisjoint(map(type, node.values())):
                    for key, child in node.items():
                        if type(child) in containers:
                            push((child, frame, key))
            elif not containers.isdisjoint(map(type, node)):
                for index, child in enumerate(node):
                    if type(child) in containers:
                        push((child, frame, index))


def _frame_location(
    frame: tuple[Any, Any, Any], path: str, loc: tuple[Any, ...]
) -> tuple[str, tuple[Any, ...]]:
    keys: list[Any] = []
    while frame[1] is not None:
        keys.append(frame[2])
        frame = frame[1]
    keys.reverse()
    for key in keys:
        path = index_path(path, key) if type(key) is int else key_path(path, key)
    return path, (*loc, *keys)


def strip_locations(event: dict[str, Any], locations: Iterable[tuple[Any, ...]]) -> None:
    """Remove the key at each location (a tuple of keys/indexes from the event root), copying
    every container on the way so that the caller's input is never modified."""
    for location in locations:
        parent: Any = event
        for step in location[:-1]:
            child = parent[step]
            child = dict(child) if type(child) is dict else list(child)
            parent[step] = child
            parent = child
        if type(parent) is dict:
            parent.pop(location[-1], None)
