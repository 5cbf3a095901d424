"""Reading a plan's YAML nodes (`PlanReader`): mappings, lists and scalars of the expected kind,
every mistake collected as a `PlanProblem` (one run reports them all), with a suggestion for a
misspelt key or value."""

from __future__ import annotations

import datetime as _dt
import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from tracking_plan.plan_yaml import (
    MAP_TAG,
    NULL_TAG,
    SCALAR_TAGS,
    SEQ_TAG,
    PlanProblem,
    invisible_char,
    printable,
)


def suggest(word: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean `{match[0]}`?" if match else ""


def choices_hint(word: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    suggestion = suggest(word, choices)
    allowed = "use one of: " + ", ".join(choices)
    return f"{suggestion} {allowed}" if suggestion else allowed


def node_kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == NULL_TAG:
        return "empty"
    return f"`{printable(node.value, 40)}`"


def as_json(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.UTC)
        return value.isoformat()
    if isinstance(value, _dt.date):
        return value.isoformat()
    return value


@dataclass
class PlanReader:
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
                f"{what} must be a mapping (key: value), found {node_kind(node)}",
                "indent its entries as `key: value` lines, or write {} for none",
            )
            return None
        if node.tag != MAP_TAG:
            self.add(node, f"YAML tag {printable(node.tag)} is not allowed", "remove the tag")
            return None
        seen: dict[str, int] = {}
        out: list[tuple[str, Node, Node]] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == NULL_TAG:
                self.add(
                    key_node,
                    f"keys of {what} must be text, found {node_kind(key_node)}",
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
                    choices_hint(key, allowed),
                )
                continue
            out[key] = value_node
            self.key_lines[id(value_node)] = key_node.start_mark.line + 1
        return out

    def items(self, node: Node, what: str) -> list[Node] | None:
        if not isinstance(node, SequenceNode):
            self.add(node, f"{what} must be a list, found {node_kind(node)}", "write e.g. [a, b]")
            return None
        if node.tag != SEQ_TAG:
            self.add(node, f"YAML tag {printable(node.tag)} is not allowed", "remove the tag")
            return None
        return list(node.value)

    # -- scalars --------------------------------------------------------------------------

    def scalar(self, node: Node, what: str) -> tuple[bool, Any]:
        """The typed value of a scalar node (null, bool, int, float, str; dates as ISO text)."""
        if not isinstance(node, ScalarNode):
            self.add(
                node, f"{what} must be a single value, found {node_kind(node)}", "write one value"
            )
            return False, None
        if node.tag not in SCALAR_TAGS:
            self.add(
                node, f"YAML tag {printable(node.tag)} is not allowed in {what}", "remove the tag"
            )
            return False, None
        try:
            value = SCALAR_CONSTRUCTOR.yaml_constructors[node.tag](SCALAR_CONSTRUCTOR, node)
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
        return True, as_json(value)

    def text(self, node: Node, what: str, *, name: bool = False) -> str | None:
        """Text as written (no YAML 1.1 surprises: `no` stays "no"); None if empty or invalid."""
        if not isinstance(node, ScalarNode):
            self.add(node, f"{what} must be text, found {node_kind(node)}", "write plain text")
            return None
        if node.tag not in SCALAR_TAGS:
            self.add(
                node, f"YAML tag {printable(node.tag)} is not allowed in {what}", "remove the tag"
            )
            return None
        if node.tag == NULL_TAG and node.value in ("", "~", "null", "Null", "NULL"):
            return None
        if name:
            self.check_name(node, node.value, what)
        return node.value

    def check_name(self, node: Node, value: str, what: str) -> bool:
        if not value.strip():
            self.add(node, f"{what} is empty", "give it a name")
            return False
        bad = invisible_char(value)
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
                node,
                f"{what} must be true or false, found {node_kind(node)}",
                "write true or false",
            )
            return None
        return value if ok else None

    def number(self, node: Node, what: str) -> float | int | None:
        ok, value = self.scalar(node, what)
        if ok and (isinstance(value, bool) or not isinstance(value, int | float)):
            self.add(
                node, f"{what} must be a number, found {node_kind(node)}", "write e.g. 0 or 9.99"
            )
            return None
        return value if ok else None

    def integer(self, node: Node, what: str, minimum: int = 0) -> int | None:
        ok, value = self.scalar(node, what)
        if not ok:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.add(
                node,
                f"{what} must be a whole number ≥ {minimum}, found {node_kind(node)}",
                f"write e.g. {max(minimum, 1)}",
            )
            return None
        return value

    def choice(self, node: Node, what: str, enum: type) -> Any:
        value = self.text(node, what)
        if value is None:
            if isinstance(node, ScalarNode) and node.tag == NULL_TAG:
                self.add(node, f"{what} is empty", choices_hint("", [e.value for e in enum]))
            return None
        try:
            return enum(value)
        except ValueError:
            self.add(
                node,
                f"{what} is `{printable(value)}`, which is not valid",
                choices_hint(value, [e.value for e in enum]),
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
                if isinstance(item, ScalarNode) and item.tag == NULL_TAG:
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
SCALAR_CONSTRUCTOR = yaml.SafeLoader("")
