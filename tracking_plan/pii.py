"""Masking personal data before an event is stored anywhere (pure: the collector calls it on each
call before it writes to Kafka).

Two kinds of personal data come from the plan:

- names the plan forbids (`pii: [email, phone, ...]`): such a key must never arrive, at any depth
  of a call (properties, traits, context, anywhere). Its value is replaced by ``"<redacted>"``:
  the validator still sees the key and reports `pii_detected` at its path, so the quarantine
  shows what was wrong, never the value.
- properties the plan declares personal (`pii: true` on a property of an event, page, screen,
  the identify traits or the group traits): allowed, but only as a keyed hash. With a key (the
  collector's `TRACKWATCH_PII_KEY`) the value becomes ``"hmac:<32 hex digits>"``, HMAC-SHA256 of
  the value under that key, so the same e-mail gives the same token in every event and joins
  still work; without a key it is ``"<redacted>"`` too. The validator does not check a token
  any further (type, pattern, format, enum): it cannot see the value any more.

Identify traits sent in `context.traits` (as rudder-sdk-python does) are masked like `traits`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator
from typing import Any

import orjson

from tracking_plan.model import CallType, Plan, PropertySpec, event_key
from tracking_plan.validator_support import REDACTED, PiiDetector
from tracking_plan.violations import Violation

TOKEN_PREFIX = "hmac:"
_TOKEN = re.compile(r"hmac:[0-9a-f]{32}")
_ITEMS = 0  # in a declared path: every item of an array

Path = tuple[str | int, ...]


def is_pii_token(value: object) -> bool:
    """Is `value` what `PiiMasker` leaves in place of a personal value?"""
    return type(value) is str and (value == REDACTED or _TOKEN.fullmatch(value) is not None)  # type: ignore[arg-type]


def pii_token(value: Any, key: bytes | None) -> str:
    """The token of `value`: HMAC-SHA256 under `key` (first 128 bits, hex), or the redaction
    mark without a key. Strings are hashed as UTF-8, anything else as sorted-key JSON (so the
    number 12 and the string "12" give the same token, as SDKs that stringify ids expect)."""
    if key is None:
        return REDACTED
    if type(value) is str:
        data = value.encode("utf-8", "surrogatepass")
    else:
        try:
            data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
        except TypeError:  # nested deeper than orjson writes
            data = repr(value).encode("utf-8", "surrogatepass")
    return TOKEN_PREFIX + hmac.new(key, data, hashlib.sha256).hexdigest()[:32]


def _declared(props: tuple[PropertySpec, ...], prefix: Path) -> Iterator[Path]:
    """Paths (inside the call's properties/traits) of every property marked `pii: true`;
    `_ITEMS` stands for every item of an array."""
    for prop in props:
        here = (*prefix, prop.name)
        if prop.pii:
            yield here
            continue
        yield from _declared(prop.properties, here)
        if prop.items is not None:
            if prop.items.pii:
                yield (*here, _ITEMS)
            else:
                yield from _declared(prop.items.properties, (*here, _ITEMS))


def _call_key(body: dict[str, Any]) -> str | None:
    """The plan key of a call (`tracking_plan.model.event_key`), None if it has none."""
    call = body.get("type")
    if call == "track" or (call is None and "event" in body):
        name = body.get("event")
        return name if type(name) is str and name else None
    if call in ("page", "screen"):
        name = body.get("name")
        return event_key(call, name if type(name) is str and name else None)
    if call in ("identify", "group", "alias"):
        return str(call)
    return None


class PiiMasker:
    """Replaces the plan's personal values in a call, in place (see the module docstring)."""

    def __init__(self, plan: Plan, key: bytes | None = None) -> None:
        self.key = key
        self.detector = PiiDetector(plan.pii)
        self.declared: dict[str, tuple[tuple[str, ...], tuple[Path, ...]]] = {}
        for name, spec in plan.events.items():
            paths = tuple(_declared(spec.properties, ()))
            if not paths:
                continue
            if spec.call is CallType.IDENTIFY:
                containers: tuple[str, ...] = ("traits", "context.traits")
            elif spec.call is CallType.GROUP:
                containers = ("traits",)
            else:
                containers = ("properties",)
            self.declared[name] = (containers, paths)

    @property
    def active(self) -> bool:
        """Does the plan name any personal data at all?"""
        return self.detector.active or bool(self.declared)

    def mask(self, body: dict[str, Any]) -> int:
        """Mask `body` in place; the number of values replaced."""
        masked = 0
        if self.detector.active:
            found: list[Violation] = []
            where: list[tuple[str, tuple[Any, ...]]] = []
            self.detector.scan(body, "$", (), found, where)
            for _, location in where:
                masked += _replace(body, location, lambda _value: REDACTED)
        if self.declared:
            key = _call_key(body)
            entry = self.declared.get(key) if key is not None else None
            if entry is not None:
                containers, paths = entry
                for container in containers:
                    node: Any = body
                    for part in container.split("."):
                        node = node.get(part) if type(node) is dict else None
                    if type(node) is dict:
                        for path in paths:
                            masked += self._mask_path(node, path)
        return masked

    def _mask_path(self, node: Any, path: Path) -> int:
        """Tokenise the values at `path` below `node` (a dict); the number replaced."""
        *head, last = path
        parents = [node]
        for part in head:
            nxt = []
            for parent in parents:
                if part == _ITEMS and type(parent) is list:
                    nxt += [item for item in parent if type(item) is dict or type(item) is list]
                elif type(parent) is dict:
                    child = parent.get(part)
                    if type(child) is dict or type(child) is list:
                        nxt.append(child)
            parents = nxt
        count = 0
        for parent in parents:
            if last == _ITEMS and type(parent) is list:
                for index, item in enumerate(parent):
                    if item is not None and not is_pii_token(item):
                        parent[index] = pii_token(item, self.key)
                        count += 1
            elif type(parent) is dict and last in parent:
                value = parent[last]
                if value is not None and not is_pii_token(value):
                    parent[last] = pii_token(value, self.key)
                    count += 1
        return count


def _replace(root: Any, location: tuple[Any, ...], make: Any) -> int:
    """Set the value at `location` (keys and indexes from `root`) to `make(value)`; 0 or 1."""
    node = root
    for step in location[:-1]:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return 0
    last = location[-1]
    if type(node) is dict and last in node:
        value = node[last]
        if value is None or value == REDACTED:
            return 0
        node[last] = make(value)
        return 1
    return 0


__all__ = ["TOKEN_PREFIX", "PiiMasker", "is_pii_token", "pii_token"]
