"""Read a YAML tracking plan into a `Plan`, reporting every mistake with file, line, column and fix.

The plan is parsed with PyYAML into a node tree (which keeps line/column marks) and checked by
hand, so that one run reports ALL problems, not only the first. Hostile files are refused early:
more than `MAX_PLAN_BYTES`, nesting deeper than `MAX_DEPTH`, non-UTF-8 bytes, YAML aliases (the
"billion laughs" expansion), custom tags, several documents in one file.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from tracking_plan.model import (
    BUILTIN_SETS,
    MAX_UNIQUE_SECONDS,
    CallType,
    EventSpec,
    Funnel,
    Identity,
    Mode,
    Plan,
    PropertySpec,
    PropType,
    SourceSpec,
    Status,
    UniqueKey,
    event_key,
    format_duration,
    parse_duration,
)

MAX_PLAN_BYTES = 5 * 1024 * 1024
MAX_DEPTH = 32
FORMATS = ("currency", "email", "uri", "date-time")

_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_SCALAR_TAGS = {
    _STR_TAG,
    _NULL_TAG,
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp",
}


@dataclass(frozen=True)
class PlanProblem:
    """One mistake in a plan file: where (1-based line and column), what, and how to fix it."""

    file: str
    line: int | None
    column: int | None
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.column or 1}"
        return f"{where}: {self.message}" + (f" ({self.hint})" if self.hint else "")


class PlanError(ValueError):
    """A plan could not be loaded; `problems` lists every mistake found."""

    def __init__(self, problems: list[PlanProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# ----------------------------------------------------------------------------------- YAML layer


class _Refused(yaml.MarkedYAMLError):
    """A YAML construct that plan files do not allow (alias, too deep)."""


class _PlanYamlLoader(yaml.SafeLoader):
    """SafeLoader that composes nodes only, refusing aliases and bounding the nesting depth."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:  # type: ignore[override]
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise _Refused(
                problem="YAML aliases (*name) are not allowed in plan files",
                problem_mark=event.start_mark,
                note="write the repeated part out in full",
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()
                raise _Refused(
                    problem=f"nesting deeper than {MAX_DEPTH} levels",
                    problem_mark=event.start_mark,
                    note="flatten the structure; plans never need this depth",
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_FAST_LOADER = getattr(yaml, "CSafeLoader", None)  # libyaml, when PyYAML was built with it


def _fast_compose(text: str) -> Node | None:
    """Compose with libyaml (about 20x faster), or None when the text needs the careful path.

    Anything unusual (a syntax error, an alias, deep nesting, odd characters) returns None so that
    `_PlanYamlLoader` reports it with its exact message and position.
    """
    if _FAST_LOADER is None:
        return None
    try:
        depth = 0
        for event in yaml.parse(text, Loader=_FAST_LOADER):
            if isinstance(event, MappingStartEvent | SequenceStartEvent):
                depth += 1
                if depth >= MAX_DEPTH:
                    return None
            elif isinstance(event, MappingEndEvent | SequenceEndEvent):
                depth -= 1
            elif isinstance(event, AliasEvent):
                return None
        loader = _FAST_LOADER(text)
        try:
            return loader.get_single_node()
        finally:
            loader.dispose()
    except (yaml.YAMLError, UnicodeError, ValueError):
        return None


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _yaml_problem(file: str, text: str, exc: yaml.YAMLError) -> PlanProblem:
    if isinstance(exc, yaml.reader.ReaderError):
        line, col = _line_col(text, exc.position)
        char = exc.character
        code = f"U+{char:04X}" if isinstance(char, int) else repr(char)
        return PlanProblem(
            file, line, col, f"character {code} is not allowed in YAML", "remove that character"
        )
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        message = (
            " ".join(str(part) for part in (exc.context, exc.problem) if part) or "invalid YAML"
        )
        if isinstance(exc, _Refused):
            hint = exc.note or ""
        else:
            hint = "fix the YAML syntax: indentation, quotes, colons"
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        return PlanProblem(file, line, col, printable(message), hint)
    return PlanProblem(
        file, None, None, printable(str(exc)) or "invalid YAML", "fix the YAML syntax"
    )


def _compose(file: str, text: str) -> Node:
    if len(text) > MAX_PLAN_BYTES:
        raise PlanError(
            [
                PlanProblem(
                    file,
                    1,
                    1,
                    f"plan is too large ({len(text)} characters; the limit is {MAX_PLAN_BYTES})",
                    "split it or remove generated content",
                )
            ]
        )
    node = _fast_compose(text)
    loader = None
    try:
        if node is None:
            loader = _PlanYamlLoader(text)
            node = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise PlanError([_yaml_problem(file, text, exc)]) from None
    except RecursionError:  # defensive: the depth bound should prevent this
        raise PlanError(
            [PlanProblem(file, 1, 1, "plan is nested too deeply", "flatten it")]
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL_TAG):
        raise PlanError(
            [
                PlanProblem(
                    file, 1, 1, "plan file is empty", "start with `plan: <name>` and `version:`"
                )
            ]
        )
    return node


# ----------------------------------------------------------------------------------- helpers


_INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def printable(text: str, limit: int = 80) -> str:
    """`text` safe to print: invisible/control characters escaped, long text shortened."""
    out = []
    for ch in text[:limit]:
        if unicodedata.category(ch) in _INVISIBLE:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return "".join(out) + ("…" if len(text) > limit else "")


def _invisible_char(text: str) -> str | None:
    for ch in text:
        if unicodedata.category(ch) in _INVISIBLE:
            label = unicodedata.name(ch, "") or "(a control character)"
            return f"U+{ord(ch):04X} {label}"
    return None


def _suggest(word: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean `{match[0]}`?" if match else ""


def _choices_hint(word: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    suggestion = _suggest(word, choices)
    allowed = "use one of: " + ", ".join(choices)
    return f"{suggestion} {allowed}" if suggestion else allowed


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == _NULL_TAG:
        return "empty"
    return f"`{printable(node.value, 40)}`"


def _as_json(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.UTC)
        return value.isoformat()
    if isinstance(value, _dt.date):
        return value.isoformat()
    return value


@dataclass
class _Ctx:
    file: str
    problems: list[PlanProblem] = field(default_factory=list)
    key_lines: dict[int, int] = field(default_factory=dict)  # id(value node) -> line of its key

    def add(self, node: Node, message: str, hint: str = "") -> None:
        self.problems.append(
            PlanProblem(
                self.file, node.start_mark.line + 1, node.start_mark.column + 1, message, hint
            )
        )

    # -- structure ----------------------------------------------------------------------

    def entries(self, node: Node, what: str) -> list[tuple[str, Node, Node]] | None:
        """The (key, key node, value node) of a mapping; reports non-text and duplicate keys."""
        if not isinstance(node, MappingNode):
            self.add(
                node,
                f"{what} must be a mapping (key: value), found {_kind(node)}",
                "indent its entries as `key: value` lines, or write {} for none",
            )
            return None
        if node.tag != _MAP_TAG:
            self.add(node, f"YAML tag {printable(node.tag)} is not allowed", "remove the tag")
            return None
        seen: dict[str, int] = {}
        out: list[tuple[str, Node, Node]] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _NULL_TAG:
                self.add(
                    key_node,
                    f"keys of {what} must be text, found {_kind(key_node)}",
                    "write a plain name before the colon",
                )
                continue
            key = key_node.value
            if key in seen:
                self.add(
                    key_node,
                    f"duplicate key `{printable(key)}` in {what} (first at line {seen[key]})",
                    "remove or rename one; YAML would silently keep only the last",
                )
                continue
            seen[key] = key_node.start_mark.line + 1
            out.append((key, key_node, value_node))
        return out

    def fields(self, node: Node, what: str, allowed: Iterable[str]) -> dict[str, Node] | None:
        """A mapping with a fixed set of keys; reports unknown keys with a suggestion."""
        allowed = list(allowed)
        entries = self.entries(node, what)
        if entries is None:
            return None
        out: dict[str, Node] = {}
        for key, key_node, value_node in entries:
            if key not in allowed:
                self.add(
                    key_node,
                    f"unknown key `{printable(key)}` in {what}",
                    _choices_hint(key, allowed),
                )
                continue
            out[key] = value_node
            self.key_lines[id(value_node)] = key_node.start_mark.line + 1
        return out

    def items(self, node: Node, what: str) -> list[Node] | None:
        if not isinstance(node, SequenceNode):
            self.add(node, f"{what} must be a list, found {_kind(node)}", "write e.g. [a, b]")
            return None
        if node.tag != _SEQ_TAG:
            self.add(node, f"YAML tag {printable(node.tag)} is not allowed", "remove the tag")
            return None
        return list(node.value)

    # -- scalars --------------------------------------------------------------------------

    def scalar(self, node: Node, what: str) -> tuple[bool, Any]:
        """The typed value of a scalar node (null, bool, int, float, str; dates as ISO text)."""
        if not isinstance(node, ScalarNode):
            self.add(node, f"{what} must be a single value, found {_kind(node)}", "write one value")
            return False, None
        if node.tag not in _SCALAR_TAGS:
            self.add(
                node, f"YAML tag {printable(node.tag)} is not allowed in {what}", "remove the tag"
            )
            return False, None
        try:
            value = _SCALAR_CONSTRUCTOR.yaml_constructors[node.tag](_SCALAR_CONSTRUCTOR, node)
        except (yaml.YAMLError, ValueError, OverflowError, TypeError) as exc:
            self.add(
                node,
                f"{what}: cannot read `{printable(node.value, 40)}` ({printable(str(exc), 60)})",
                "write a plain number, true/false or quoted text",
            )
            return False, None
        if isinstance(value, float) and not math.isfinite(value):
            self.add(
                node, f"{what} must be a finite number, found {node.value}", "write e.g. 0 or 9.99"
            )
            return False, None
        return True, _as_json(value)

    def text(self, node: Node, what: str, *, name: bool = False) -> str | None:
        """Text as written (no YAML 1.1 surprises: `no` stays "no"); None if empty or invalid."""
        if not isinstance(node, ScalarNode):
            self.add(node, f"{what} must be text, found {_kind(node)}", "write plain text")
            return None
        if node.tag not in _SCALAR_TAGS:
            self.add(
                node, f"YAML tag {printable(node.tag)} is not allowed in {what}", "remove the tag"
            )
            return None
        if node.tag == _NULL_TAG and node.value in ("", "~", "null", "Null", "NULL"):
            return None
        if name:
            self.check_name(node, node.value, what)
        return node.value

    def check_name(self, node: Node, value: str, what: str) -> bool:
        if not value.strip():
            self.add(node, f"{what} is empty", "give it a name")
            return False
        bad = _invisible_char(value)
        if bad:
            self.add(
                node, f"{what} `{printable(value)}` contains invisible character {bad}", "remove it"
            )
            return False
        if value != value.strip():
            self.add(
                node, f"{what} `{printable(value)}` has leading or trailing spaces", "remove them"
            )
            return False
        return True

    def boolean(self, node: Node, what: str) -> bool | None:
        ok, value = self.scalar(node, what)
        if ok and not isinstance(value, bool):
            self.add(
                node, f"{what} must be true or false, found {_kind(node)}", "write true or false"
            )
            return None
        return value if ok else None

    def number(self, node: Node, what: str) -> float | int | None:
        ok, value = self.scalar(node, what)
        if ok and (isinstance(value, bool) or not isinstance(value, int | float)):
            self.add(node, f"{what} must be a number, found {_kind(node)}", "write e.g. 0 or 9.99")
            return None
        return value if ok else None

    def integer(self, node: Node, what: str, minimum: int = 0) -> int | None:
        ok, value = self.scalar(node, what)
        if not ok:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.add(
                node,
                f"{what} must be a whole number ≥ {minimum}, found {_kind(node)}",
                f"write e.g. {max(minimum, 1)}",
            )
            return None
        return value

    def choice(self, node: Node, what: str, enum: type) -> Any:
        value = self.text(node, what)
        if value is None:
            if isinstance(node, ScalarNode) and node.tag == _NULL_TAG:
                self.add(node, f"{what} is empty", _choices_hint("", [e.value for e in enum]))
            return None
        try:
            return enum(value)
        except ValueError:
            self.add(
                node,
                f"{what} is `{printable(value)}`, which is not valid",
                _choices_hint(value, [e.value for e in enum]),
            )
            return None

    def text_list(self, node: Node, what: str, *, name: bool = True) -> list[tuple[str, Node]]:
        nodes = self.items(node, what)
        if nodes is None:
            return []
        out = []
        for item in nodes:
            value = self.text(item, f"an entry of {what}", name=name)
            if value is None:
                if isinstance(item, ScalarNode) and item.tag == _NULL_TAG:
                    self.add(item, f"empty entry in {what}", "remove it")
                continue
            out.append((value, item))
        return out

    def value(self, node: Node, what: str) -> tuple[bool, Any]:
        """Any JSON-like value (for defaults): mappings, lists and scalars."""
        if isinstance(node, MappingNode):
            entries = self.entries(node, what)
            if entries is None:
                return False, None
            out: dict[str, Any] = {}
            good = True
            for key, _, child in entries:
                ok, out[key] = self.value(child, what)
                good = good and ok
            return good, out
        if isinstance(node, SequenceNode):
            nodes = self.items(node, what)
            if nodes is None:
                return False, None
            results = [self.value(child, what) for child in nodes]
            return all(ok for ok, _ in results), [v for _, v in results]
        return self.scalar(node, what)


# Only its (stateless) scalar constructors are used, called directly so that nothing is cached.
_SCALAR_CONSTRUCTOR = yaml.SafeLoader("")


# ----------------------------------------------------------------------------------- values


def type_accepts(kind: PropType, value: Any) -> bool:
    """Whether `value` (parsed JSON/YAML) has the plan type `kind` (bools are never numbers)."""
    if kind is PropType.ANY:
        return True
    if kind is PropType.STRING:
        return isinstance(value, str)
    if kind is PropType.BOOLEAN:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is PropType.NUMBER:
        return isinstance(value, int | float)
    if kind is PropType.INTEGER:
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind is PropType.OBJECT:
        return isinstance(value, dict)
    if kind is PropType.ARRAY:
        return isinstance(value, list)
    if kind is PropType.TIMESTAMP:
        return isinstance(value, str | int | float)
    return False


def value_problems(spec: PropertySpec, value: Any) -> list[str]:
    """Why `value` breaks `spec` (type, enum, pattern, range, length, nested fields); [] if fine.

    A small checker used for plan defaults; the event validator is `tracking_plan.validator`.
    Patterns match anywhere in the text (`re.search`), as in JSON Schema: anchor with ^...$.
    """
    if value is None:
        return [] if spec.nullable else ["is null but the property is not nullable"]
    if not type_accepts(spec.type, value):
        return [f"is not of type {spec.type.value}"]
    out = []
    if spec.enum is not None and value not in spec.enum:
        out.append(f"is not one of {list(spec.enum)}")
    if spec.pattern is not None and isinstance(value, str):
        try:
            if not re.search(spec.pattern, value):
                out.append(f"does not match pattern {spec.pattern}")
        except re.error:
            pass  # reported where the pattern is declared
    size = len(value) if isinstance(value, str | list) else value
    if isinstance(size, int | float) and not isinstance(size, bool):
        unit = " (length)" if isinstance(value, str | list) else ""
        if spec.minimum is not None and size < spec.minimum:
            out.append(f"is below min {spec.minimum}{unit}")
        if spec.maximum is not None and size > spec.maximum:
            out.append(f"is above max {spec.maximum}{unit}")
    if spec.max_length is not None and isinstance(value, str) and len(value) > spec.max_length:
        out.append(f"is longer than max_length {spec.max_length}")
    if isinstance(value, dict):
        for child in spec.properties:
            if child.name in value:
                out += [f"{child.name} {p}" for p in value_problems(child, value[child.name])]
            elif child.required:
                out.append(f"lacks required field {child.name}")
        if not spec.additional_properties:
            known = {c.name for c in spec.properties}
            out += [f"has unplanned field {k}" for k in value if k not in known]
    if isinstance(value, list) and spec.items is not None:
        for i, item in enumerate(value):
            out += [f"[{i}] {p}" for p in value_problems(spec.items, item)]
    return out


# ----------------------------------------------------------------------------------- plan parts

PROPERTY_KEYS = (
    "type",
    "required",
    "nullable",
    "enum",
    "pattern",
    "min",
    "max",
    "max_length",
    "format",
    "default",
    "items",
    "properties",
    "additional_properties",
    "description",
    "pii",
    "unique",
)
EVENT_KEYS = (
    "description",
    "owner",
    "status",
    "sources",
    "mode",
    "properties",
    "allow_unplanned_properties",
    "unique",
)
TOP_KEYS = (
    "plan",
    "version",
    "defaults",
    "context",
    "pii",
    "sources",
    "funnels",
    "events",
    "pages",
    "screens",
    "traits",
    "group",
    "alias",
    "builtins",
)
ALIAS_KEYS = ("description", "owner", "status", "sources", "mode")  # alias calls: no properties
SOURCE_KEYS = ("platform", "mode", "description")
PROPERTY_KEY_KEYS = ("within", "mode")  # `unique: {within: 24h, mode: block}` on a property
EVENT_KEY_KEYS = ("keys", "within", "mode")  # `unique: {keys: [a, b], within: 24h}` on an event
KEY_TYPES = (PropType.STRING, PropType.INTEGER)  # the types a business key property may have
_DURATION_HINT = "write a whole number and a unit (s, m, h or d), e.g. 24h"
FUNNEL_KEYS = ("name", "steps", "window_minutes")
_RANGE_TYPES = (PropType.NUMBER, PropType.INTEGER, PropType.STRING, PropType.ARRAY, PropType.ANY)
_ENUM_TYPES = (
    PropType.STRING,
    PropType.NUMBER,
    PropType.INTEGER,
    PropType.BOOLEAN,
    PropType.ANY,
)


def _property(
    ctx: _Ctx, name: str, node: Node, where: str, line: int | None = None, *, top: bool = False
) -> PropertySpec | None:
    """One property; `line` is where its name is written (defaults to its value's line); `top`:
    a top-level property of an event (the only place a business key may be declared)."""
    what = f"property `{printable(name)}` of {where}"
    line = line or node.start_mark.line + 1
    if isinstance(node, ScalarNode) and node.tag != _NULL_TAG:  # shorthand: `name: string`
        kind = ctx.choice(node, f"type of {what}", PropType)
        if kind is None:
            return None
        return PropertySpec(name=name, type=kind, line=line)
    if isinstance(node, ScalarNode):  # `name:` with nothing: any value
        return PropertySpec(name=name, line=line)
    fields = ctx.fields(node, what, PROPERTY_KEYS)
    if fields is None:
        return None
    n_before = len(ctx.problems)
    spec: dict[str, Any] = {"name": name, "line": line}
    kind = PropType.ANY
    if "type" in fields:
        kind = ctx.choice(fields["type"], f"type of {what}", PropType) or PropType.ANY
    spec["type"] = kind
    for key in ("required", "nullable", "pii", "additional_properties"):
        if key in fields:
            value = ctx.boolean(fields[key], f"`{key}` of {what}")
            if value is not None:
                spec[key] = value
    if "description" in fields:
        spec["description"] = ctx.text(fields["description"], f"description of {what}") or ""

    if "enum" in fields:
        enum_node = fields["enum"]
        if kind not in _ENUM_TYPES:
            ctx.add(enum_node, f"enum is not supported for type {kind.value} ({what})", "remove it")
        else:
            values = _enum(ctx, enum_node, kind, bool(spec.get("nullable")), what)
            if values is not None:
                spec["enum"] = values

    if "pattern" in fields:
        pattern_node = fields["pattern"]
        pattern = ctx.text(pattern_node, f"pattern of {what}")
        if kind not in (PropType.STRING, PropType.ANY):
            ctx.add(
                pattern_node,
                f"pattern only applies to strings, {what} is {kind.value}",
                "remove it or set type: string",
            )
        elif pattern is not None:
            try:
                re.compile(pattern)
                spec["pattern"] = pattern
            except (re.error, RecursionError, OverflowError) as exc:
                ctx.add(
                    pattern_node,
                    f"invalid regular expression for {what}: {printable(str(exc), 60)}",
                    "fix the pattern: Python `re` syntax, quoted in YAML",
                )

    for key, attr in (("min", "minimum"), ("max", "maximum")):
        if key in fields:
            if kind not in _RANGE_TYPES:
                ctx.add(
                    fields[key],
                    f"`{key}` does not apply to type {kind.value} ({what})",
                    "remove it",
                )
                continue
            value = ctx.number(fields[key], f"`{key}` of {what}")
            if value is not None:
                spec[attr] = value
    low, high = spec.get("minimum"), spec.get("maximum")
    if low is not None and high is not None and low > high:
        ctx.add(fields["min"], f"min {low} is greater than max {high} ({what})", "swap them")
    if "max_length" in fields:
        if kind not in (PropType.STRING, PropType.ANY):
            ctx.add(fields["max_length"], f"max_length only applies to strings ({what})", "use max")
        else:
            value = ctx.integer(fields["max_length"], f"max_length of {what}")
            if value is not None:
                spec["max_length"] = value
    if "format" in fields:
        fmt = ctx.text(fields["format"], f"format of {what}")
        if fmt is not None and fmt not in FORMATS:
            ctx.add(
                fields["format"],
                f"unknown format `{printable(fmt)}` ({what})",
                _choices_hint(fmt, FORMATS),
            )
        elif fmt is not None and kind not in (PropType.STRING, PropType.TIMESTAMP, PropType.ANY):
            ctx.add(
                fields["format"],
                f"format applies to strings, {what} is {kind.value}",
                "remove it or set type: string",
            )
        elif fmt is not None:
            spec["format"] = fmt

    if "items" in fields:
        if kind is not PropType.ARRAY:
            ctx.add(
                fields["items"], f"`items` only applies to type array ({what})", "set type: array"
            )
        else:
            items_line = ctx.key_lines[id(fields["items"])]
            items = _property(ctx, "items", fields["items"], f"{where}, {name}[]", items_line)
            if items is not None:
                spec["items"] = items
    if "properties" in fields:
        if kind is not PropType.OBJECT:
            ctx.add(
                fields["properties"],
                f"`properties` only applies to type object ({what})",
                "set type: object",
            )
        else:
            spec["properties"] = _properties(ctx, fields["properties"], f"{where}, {name}")
    if "additional_properties" in fields and kind is not PropType.OBJECT:
        ctx.add(
            fields["additional_properties"],
            f"`additional_properties` only applies to type object ({what})",
            "remove it or set type: object",
        )

    if "default" in fields:
        ok, default = ctx.value(fields["default"], f"default of {what}")
        if ok:
            spec["default"] = default
            spec["has_default"] = True
    if "unique" in fields:
        unique_node = fields["unique"]
        if not top:
            ctx.add(
                unique_node,
                f"`unique` only applies to a top-level property of an event ({what} is nested)",
                "declare the key on a top-level property",
            )
        elif kind not in KEY_TYPES:
            ctx.add(
                unique_node,
                f"`unique` needs type string or integer, {what} is {kind.value}",
                "set type: string or type: integer",
            )
        elif "default" in fields:
            ctx.add(
                unique_node,
                f"`unique` and `default` together make every event without {what} a repeat",
                "remove the default",
            )
        else:
            key = _property_key(ctx, unique_node, name, what, ctx.key_lines[id(unique_node)])
            if key is not None:
                spec["unique"] = key
    if len(ctx.problems) > n_before:
        return None
    prop = PropertySpec(**spec)
    if prop.has_default:
        for problem in value_problems(prop, prop.default):
            ctx.add(
                fields["default"],
                f"default of {what} {problem}",
                "change the default or the rule it breaks",
            )
    return prop


def _enum(
    ctx: _Ctx, node: Node, kind: PropType, nullable: bool, what: str
) -> tuple[Any, ...] | None:
    nodes = ctx.items(node, f"enum of {what}")
    if nodes is None:
        return None
    if not nodes:
        ctx.add(node, f"enum of {what} is empty", "list the allowed values or remove enum")
        return None
    values: list[Any] = []
    good = True
    for item in nodes:
        ok, value = ctx.scalar(item, f"enum value of {what}")
        if not ok:
            good = False
            continue
        if value is None:
            if not nullable:
                ctx.add(
                    item, f"enum of {what} contains null", "add `nullable: true` or remove null"
                )
                good = False
            continue
        if not type_accepts(kind, value):
            hint = f"use a {kind.value}"
            if kind is PropType.STRING:
                read_as = type(value).__name__
                hint = f"quote it: '{printable(item.value)}'; YAML reads it as {read_as}"
            ctx.add(
                item, f"enum value `{printable(item.value)}` of {what} is not a {kind.value}", hint
            )
            good = False
            continue
        values.append(value)
    return tuple(values) if good else None


def _within(ctx: _Ctx, node: Node, what: str) -> float | None:
    """The horizon of a business key: a duration such as `24h` of at most 30 days."""
    ok, value = ctx.scalar(node, what)
    if not ok:
        return None
    if value is None:
        ctx.add(node, f"{what} is empty", _DURATION_HINT)
        return None
    if isinstance(value, bool) or not isinstance(value, str):
        unit_hint = (
            f"write e.g. {value}h, {value}m or {value}s"
            if isinstance(value, int) and not isinstance(value, bool) and value > 0
            else _DURATION_HINT
        )
        ctx.add(node, f"{what} must be a duration, found {_kind(node)}", unit_hint)
        return None
    seconds = parse_duration(value)
    if seconds is None:
        ctx.add(node, f"{what} is `{printable(value)}`, which is not a duration", _DURATION_HINT)
        return None
    if seconds > MAX_UNIQUE_SECONDS:
        limit = format_duration(MAX_UNIQUE_SECONDS)
        ctx.add(
            node,
            f"{what} is {printable(value)}, longer than the {limit} a key is remembered",
            f"write at most {limit}",
        )
        return None
    return seconds


def _key_mode(ctx: _Ctx, node: Node, what: str) -> Mode | None:
    """The mode of a business key: flag (forward repeats with a violation) or block."""
    mode = ctx.choice(node, f"mode of {what}", Mode)
    if mode is Mode.OMIT:
        ctx.add(
            node,
            f"mode of {what} is `omit`, which does not apply to keys",
            "use flag (forward repeats with a duplicate_key violation) or block (quarantine them)",
        )
        return None
    return mode


def _property_key(
    ctx: _Ctx, node: Node, name: str, what: str, line: int | None
) -> UniqueKey | None:
    """`unique: 24h` or `unique: {within: 24h, mode: block}` of the property `name`."""
    key_what = f"`unique` of {what}"
    mode: Mode | None = Mode.FLAG
    if isinstance(node, MappingNode):
        fields = ctx.fields(node, key_what, PROPERTY_KEY_KEYS)
        if fields is None:
            return None
        if "within" not in fields:
            ctx.add(node, f"{key_what} has no `within`", "add e.g. `within: 24h`")
            return None
        seconds = _within(ctx, fields["within"], f"within of {key_what}")
        if "mode" in fields:
            mode = _key_mode(ctx, fields["mode"], key_what)
    else:
        seconds = _within(ctx, node, key_what)
    if seconds is None or mode is None:
        return None
    return UniqueKey(properties=(name,), within_seconds=seconds, mode=mode, line=line)


def _event_key(
    ctx: _Ctx, node: Node, props: tuple[PropertySpec, ...], declared: set[str], where: str
) -> UniqueKey | None:
    """`unique: {keys: [a, b], within: 24h, mode: flag}` of an event: a composite business
    key over top-level string/integer properties it plans (`declared`: every name written under
    its `properties`, also those with errors of their own, which are not reported again)."""
    what = f"`unique` of {where}"
    fields = ctx.fields(node, what, EVENT_KEY_KEYS)
    if fields is None:
        return None
    n_before = len(ctx.problems)
    for required, example in (("keys", "keys: [order_id]"), ("within", "within: 24h")):
        if required not in fields:
            ctx.add(node, f"{what} has no `{required}`", f"add e.g. `{example}`")
    by_name = {p.name: p for p in props}
    names: list[str] = []
    if "keys" in fields:
        listed = ctx.text_list(fields["keys"], f"keys of {what}")
        if isinstance(fields["keys"], SequenceNode) and not fields["keys"].value:
            ctx.add(fields["keys"], f"keys of {what} is empty", "list the key's properties")
        for key, item in listed:
            prop = by_name.get(key)
            if key in names:
                ctx.add(item, f"`{printable(key)}` is listed twice in keys of {what}", "remove one")
            elif prop is None and key not in declared:
                hint = _suggest(key, by_name)
                plan_it = "plan it under the event's `properties` (type string or integer)"
                ctx.add(
                    item,
                    f"key `{printable(key)}` of {where} is not a planned property",
                    f"{hint} or {plan_it}" if hint else plan_it,
                )
            elif prop is not None and prop.type not in KEY_TYPES:
                ctx.add(
                    item,
                    f"key `{printable(key)}` of {where} is {prop.type.value}: "
                    "keys are strings or integers",
                    "set its type to string or integer, or leave it out of the key",
                )
            elif prop is not None and prop.has_default:
                ctx.add(
                    item,
                    f"key `{printable(key)}` of {where} has a default, which would make every "
                    "event without it a repeat",
                    "remove the default",
                )
            names.append(key)
        if len(names) == 1 and names[0] in by_name and by_name[names[0]].unique is not None:
            ctx.add(
                fields["keys"],
                f"`{printable(names[0])}` of {where} is already unique on its own",
                "keep one of the two declarations",
            )
    seconds = _within(ctx, fields["within"], f"within of {what}") if "within" in fields else None
    mode = _key_mode(ctx, fields["mode"], what) if "mode" in fields else Mode.FLAG
    if len(ctx.problems) > n_before or seconds is None or mode is None:
        return None
    line = ctx.key_lines[id(node)]
    return UniqueKey(properties=tuple(names), within_seconds=seconds, mode=mode, line=line)


def _properties(
    ctx: _Ctx, node: Node, where: str, *, top: bool = False
) -> tuple[PropertySpec, ...]:
    if isinstance(node, ScalarNode) and node.tag == _NULL_TAG:
        return ()
    entries = ctx.entries(node, f"properties of {where}")
    out = []
    for name, key_node, value_node in entries or ():
        if not ctx.check_name(key_node, name, f"property name in {where}"):
            continue
        prop = _property(ctx, name, value_node, where, key_node.start_mark.line + 1, top=top)
        if prop is not None:
            out.append(prop)
    return tuple(out)


def _event(
    ctx: _Ctx,
    name: str,
    call: CallType,
    node: Node,
    sources: dict[str, SourceSpec] | None,
    where: str,
    line: int,
    allowed: tuple[str, ...] = EVENT_KEYS,
) -> EventSpec | None:
    if isinstance(node, ScalarNode) and node.tag == _NULL_TAG:
        return EventSpec(name=name, call=call, line=line)
    fields = ctx.fields(node, where, allowed)
    if fields is None:
        return None
    spec: dict[str, Any] = {"name": name, "call": call, "line": line}
    for key in ("description", "owner"):
        if key in fields:
            spec[key] = ctx.text(fields[key], f"{key} of {where}") or ""
    if "status" in fields:
        status = ctx.choice(fields["status"], f"status of {where}", Status)
        if status is not None:
            spec["status"] = status
    if "mode" in fields:
        spec["mode"] = ctx.choice(fields["mode"], f"mode of {where}", Mode)
    if "allow_unplanned_properties" in fields:
        value = ctx.boolean(
            fields["allow_unplanned_properties"], f"allow_unplanned_properties of {where}"
        )
        spec["allow_unplanned_properties"] = bool(value)
    if "sources" in fields:
        listed = ctx.text_list(fields["sources"], f"sources of {where}")
        if isinstance(fields["sources"], SequenceNode) and not fields["sources"].value:
            ctx.add(
                fields["sources"],
                f"sources of {where} is empty",
                "remove `sources` to allow every source",
            )
        seen: set[str] = set()
        for source, item in listed:
            if source in seen:
                ctx.add(
                    item, f"source `{printable(source)}` is listed twice in {where}", "remove one"
                )
            elif sources is not None and source not in sources:
                hint = _suggest(source, sources)
                hint = (
                    f"{hint} or declare it under `sources:`"
                    if hint
                    else "declare it under `sources:`"
                )
                ctx.add(item, f"source `{printable(source)}` of {where} is not declared", hint)
            seen.add(source)
        spec["sources"] = tuple(s for s, _ in listed)
    if "properties" in fields:
        spec["properties"] = _properties(ctx, fields["properties"], where, top=True)
    if "unique" in fields:
        props_node = fields.get("properties")
        declared = {
            key.value
            for key, _ in (props_node.value if isinstance(props_node, MappingNode) else ())
            if isinstance(key, ScalarNode)
        }
        props = spec.get("properties", ())
        spec["unique"] = _event_key(ctx, fields["unique"], props, declared, where)
    return EventSpec(**spec)


def _sources(ctx: _Ctx, node: Node) -> dict[str, SourceSpec]:
    out: dict[str, SourceSpec] = {}
    for name, key_node, value_node in ctx.entries(node, "sources") or ():
        if not ctx.check_name(key_node, name, "source name"):
            continue
        line = key_node.start_mark.line + 1
        if isinstance(value_node, ScalarNode) and value_node.tag == _NULL_TAG:
            out[name] = SourceSpec(name=name, line=line)
            continue
        fields = ctx.fields(value_node, f"source `{printable(name)}`", SOURCE_KEYS)
        if fields is None:
            continue
        spec: dict[str, Any] = {"name": name, "line": line}
        if "platform" in fields:
            spec["platform"] = ctx.text(fields["platform"], f"platform of source `{name}`") or ""
        if "description" in fields:
            spec["description"] = (
                ctx.text(fields["description"], f"description of source `{name}`") or ""
            )
        if "mode" in fields:
            spec["mode"] = ctx.choice(fields["mode"], f"mode of source `{printable(name)}`", Mode)
        out[name] = SourceSpec(**spec)
    return out


def _funnels(ctx: _Ctx, node: Node) -> list[tuple[Funnel, list[tuple[str, Node]]]]:
    out = []
    names: dict[str, int] = {}
    for item in ctx.items(node, "funnels") or ():
        fields = ctx.fields(item, "a funnel", FUNNEL_KEYS)
        if fields is None:
            continue
        line = item.start_mark.line + 1
        if "name" not in fields:
            ctx.add(item, "funnel has no name", "add `name: <funnel name>`")
            continue
        name = ctx.text(fields["name"], "funnel name", name=True)
        if name is None:
            continue
        if name in names:
            ctx.add(
                fields["name"],
                f"funnel `{printable(name)}` is declared twice (first at line {names[name]})",
                "rename one",
            )
            continue
        names[name] = line
        steps = (
            ctx.text_list(fields["steps"], f"steps of funnel `{printable(name)}`")
            if "steps" in fields
            else []
        )
        if "steps" not in fields or len(steps) < 2:
            ctx.add(
                fields.get("steps", item),
                f"funnel `{printable(name)}` needs at least two steps",
                "list them under `steps:`",
            )
            continue
        window = 60
        if "window_minutes" in fields:
            window = (
                ctx.integer(
                    fields["window_minutes"], f"window_minutes of funnel `{printable(name)}`", 1
                )
                or 60
            )
        funnel = Funnel(
            name=name, steps=tuple(s for s, _ in steps), window_minutes=window, line=line
        )
        out.append((funnel, steps))
    return out


def _builtins(ctx: _Ctx, node: Node) -> frozenset[str]:
    """`builtins: true|false` (every set on or off) or a mapping `{page: false, ...}` that turns
    single sets off (sets it does not name stay on)."""
    if isinstance(node, ScalarNode):
        value = ctx.boolean(node, "builtins")
        return frozenset(BUILTIN_SETS) if value is not False else frozenset()
    fields = ctx.fields(node, "builtins", BUILTIN_SETS) or {}
    enabled = set(BUILTIN_SETS)
    for name, value_node in fields.items():
        if ctx.boolean(value_node, f"builtins.{name}") is False:
            enabled.discard(name)
    return frozenset(enabled)


def _build(ctx: _Ctx, root: Node) -> Plan | None:
    top = ctx.fields(root, "the plan", TOP_KEYS)
    if top is None:
        return None
    name = version = None
    for key in ("plan", "version"):
        if key not in top:
            ctx.add(root, f"the plan has no `{key}`", f"add `{key}: ...` at the top of the file")
    if "plan" in top:
        name = ctx.text(top["plan"], "plan name", name=True)
        if name is None and top["plan"].tag == _NULL_TAG:
            ctx.add(top["plan"], "plan name is empty", "write `plan: <name>`")
    if "version" in top:
        version = ctx.text(top["version"], "version")
        if version is None and top["version"].tag == _NULL_TAG:
            ctx.add(top["version"], "version is empty", 'write e.g. `version: "1.0.0"`')

    kwargs: dict[str, Any] = {}
    if "defaults" in top:
        defaults = ctx.fields(top["defaults"], "defaults", ("mode", "identity")) or {}
        if "mode" in defaults:
            kwargs["default_mode"] = (
                ctx.choice(defaults["mode"], "defaults.mode", Mode) or Mode.BLOCK
            )
        if "identity" in defaults:
            kwargs["identity"] = (
                ctx.choice(defaults["identity"], "defaults.identity", Identity) or Identity.ANY
            )
    if "context" in top:
        context = ctx.fields(top["context"], "context", ("required",)) or {}
        if "required" in context:
            paths = ctx.text_list(context["required"], "context.required")
            for path, item in paths:
                if any(not part for part in path.split(".")):
                    ctx.add(
                        item,
                        f"context path `{printable(path)}` has an empty part",
                        "write e.g. library.name",
                    )
            kwargs["required_context"] = tuple(p for p, _ in paths)
    if "pii" in top:
        kwargs["pii"] = tuple(p for p, _ in ctx.text_list(top["pii"], "pii"))

    sources = _sources(ctx, top["sources"]) if "sources" in top else None
    events: dict[str, EventSpec] = {}
    sections: list[tuple[str, CallType]] = [
        ("events", CallType.TRACK),
        ("pages", CallType.PAGE),
        ("screens", CallType.SCREEN),
    ]
    for section, call in sections:
        if section not in top:
            continue
        node = top[section]
        if isinstance(node, ScalarNode) and node.tag == _NULL_TAG:
            continue
        for event_name, key_node, value_node in ctx.entries(node, section) or ():
            label = "event" if call is CallType.TRACK else call.value
            if not ctx.check_name(key_node, event_name, f"{label} name"):
                continue
            where = f"{label} `{printable(event_name)}`"
            line = key_node.start_mark.line + 1
            spec = _event(ctx, event_name, call, value_node, sources, where, line)
            if spec is not None:
                events[event_key(call, event_name)] = spec
    if "traits" in top:
        line = ctx.key_lines[id(top["traits"])]
        spec = _event(ctx, "", CallType.IDENTIFY, top["traits"], sources, "traits (identify)", line)
        if spec is not None:
            events[event_key(CallType.IDENTIFY, None)] = spec
    for section, call, where, allowed in (
        ("group", CallType.GROUP, "group (group calls)", EVENT_KEYS),
        ("alias", CallType.ALIAS, "alias (alias calls)", ALIAS_KEYS),
    ):
        if section in top:
            line = ctx.key_lines[id(top[section])]
            spec = _event(ctx, "", call, top[section], sources, where, line, allowed)
            if spec is not None:
                events[event_key(call, None)] = spec
    if "builtins" in top:
        kwargs["builtins"] = _builtins(ctx, top["builtins"])

    funnels = _funnels(ctx, top["funnels"]) if "funnels" in top else []
    for _, steps in funnels:
        for step, step_node in steps:
            if step not in events:
                hint = _suggest(step, events)
                hint = (
                    f"{hint} or plan the event under `events:`"
                    if hint
                    else "plan it under `events:`"
                )
                ctx.add(step_node, f"funnel step `{printable(step)}` is not a planned event", hint)
    if name is None or version is None or ctx.problems:
        return None
    return Plan(
        name=name,
        version=version,
        sources=sources or {},
        events=events,
        funnels=tuple(f for f, _ in funnels),
        path=ctx.file,
        **kwargs,
    )


# ----------------------------------------------------------------------------------- public API


def parse_plan(text: str, path: str = "<string>") -> Plan:
    """Parse plan YAML text; raise `PlanError` listing every problem (file, line, column, hint)."""
    if not isinstance(text, str):
        raise TypeError("parse_plan expects text; use load_plan for files")
    root = _compose(path, text.removeprefix("\ufeff"))
    ctx = _Ctx(path)
    try:
        plan = _build(ctx, root)
    except RecursionError:  # defensive: MAX_DEPTH keeps recursion far below the limit
        raise PlanError(
            [PlanProblem(path, 1, 1, "plan is nested too deeply", "flatten it")]
        ) from None
    if plan is None:
        problems = sorted(ctx.problems, key=lambda p: (p.line or 0, p.column or 0))
        raise PlanError(problems or [PlanProblem(path, 1, 1, "plan could not be read")])
    return plan


def load_plan(path: str | Path) -> Plan:
    """Read and parse a UTF-8 plan file of at most `MAX_PLAN_BYTES`; raise `PlanError` if bad."""
    name = str(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise PlanError(
            [
                PlanProblem(
                    name, None, None, f"cannot read plan: {exc.strerror or exc}", "check the path"
                )
            ]
        ) from None
    if len(data) > MAX_PLAN_BYTES:
        raise PlanError(
            [
                PlanProblem(
                    name,
                    1,
                    1,
                    f"plan file is larger than {MAX_PLAN_BYTES} bytes",
                    "split it or remove generated content",
                )
            ]
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise PlanError(
            [
                PlanProblem(
                    name,
                    line,
                    col,
                    f"byte 0x{data[exc.start]:02x} is not valid UTF-8",
                    "save the file as UTF-8",
                )
            ]
        ) from None
    return parse_plan(text, name)


# ----------------------------------------------------------------------------------- dump


class _Flow(dict):
    """A mapping written on one line (`{type: string, required: true}`), like hand-written plans."""


class _PlanDumper(yaml.SafeDumper):
    pass


_PlanDumper.add_representer(
    _Flow, lambda dumper, data: dumper.represent_mapping(_MAP_TAG, data, flow_style=True)
)
_PlanDumper.add_representer(
    str,  # PyYAML mangles NEL/LS/PS in single quotes: double-quoted style escapes them
    lambda dumper, data: dumper.represent_scalar(
        _STR_TAG, data, style='"' if any(c in data for c in "\x85\u2028\u2029") else None
    ),
)
_PlanDumper.add_representer(
    tuple, lambda dumper, data: dumper.represent_sequence(_SEQ_TAG, data, flow_style=True)
)


def _dump_property(prop: PropertySpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if prop.type is not PropType.ANY:
        out["type"] = prop.type.value
    for key, value, default in (
        ("required", prop.required, False),
        ("nullable", prop.nullable, False),
        ("enum", list(prop.enum) if prop.enum is not None else None, None),
        ("pattern", prop.pattern, None),
        ("min", prop.minimum, None),
        ("max", prop.maximum, None),
        ("max_length", prop.max_length, None),
        ("format", prop.format, None),
        ("pii", prop.pii, False),
        ("description", prop.description, ""),
    ):
        if value != default or (default is None and value is not None):
            out[key] = value
    if prop.unique is not None:
        within = format_duration(prop.unique.within_seconds)
        if prop.unique.mode is Mode.FLAG:
            out["unique"] = within
        else:
            out["unique"] = _Flow(within=within, mode=prop.unique.mode.value)
    if prop.has_default:
        out["default"] = prop.default
    if prop.items is not None:
        out["items"] = _dump_property(prop.items)
    if prop.properties:
        out["properties"] = {p.name: _dump_property(p) for p in prop.properties}
    if not prop.additional_properties:
        out["additional_properties"] = False
    nested = isinstance(out.get("default"), dict | list) or "items" in out or "properties" in out
    return out if nested else _Flow(out)


def _dump_event(event: EventSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if event.description:
        out["description"] = event.description
    if event.owner:
        out["owner"] = event.owner
    if event.status is not Status.ACTIVE:
        out["status"] = event.status.value
    if event.sources:
        out["sources"] = tuple(event.sources)
    if event.mode is not None:
        out["mode"] = event.mode.value
    if event.allow_unplanned_properties:
        out["allow_unplanned_properties"] = True
    if event.unique is not None:
        key = _Flow(
            keys=tuple(event.unique.properties),
            within=format_duration(event.unique.within_seconds),
        )
        if event.unique.mode is not Mode.FLAG:
            key["mode"] = event.unique.mode.value
        out["unique"] = key
    if event.properties:
        out["properties"] = {p.name: _dump_property(p) for p in event.properties}
    return out


def dump_plan(plan: Plan) -> str:
    """The plan as YAML in the plan format: `parse_plan(dump_plan(p))` equals `p`, lines aside."""
    doc: dict[str, Any] = {"plan": plan.name, "version": plan.version}
    doc["defaults"] = {"mode": plan.default_mode.value, "identity": plan.identity.value}
    if plan.required_context:
        doc["context"] = {"required": list(plan.required_context)}
    if plan.pii:
        doc["pii"] = list(plan.pii)
    if plan.sources:
        doc["sources"] = {
            s.name: {
                k: v
                for k, v in (
                    ("platform", s.platform),
                    ("description", s.description),
                    ("mode", s.mode.value if s.mode else ""),
                )
                if v
            }
            for s in plan.sources.values()
        }
    if plan.funnels:
        doc["funnels"] = [
            {"name": f.name, "steps": list(f.steps), "window_minutes": f.window_minutes}
            for f in plan.funnels
        ]
    if plan.builtins != frozenset(BUILTIN_SETS):
        doc["builtins"] = {name: name in plan.builtins for name in BUILTIN_SETS}
    sections: dict[CallType, str] = {
        CallType.TRACK: "events",
        CallType.PAGE: "pages",
        CallType.SCREEN: "screens",
    }
    single = {CallType.IDENTIFY: "traits", CallType.GROUP: "group", CallType.ALIAS: "alias"}
    for event in plan.events.values():
        if event.call in single:
            doc[single[event.call]] = _dump_event(event)
        else:
            doc.setdefault(sections[event.call], {})[event.name] = _dump_event(event)
    return yaml.dump(doc, Dumper=_PlanDumper, sort_keys=False, allow_unicode=True, width=120)
