"""The YAML layer of plan files: a node tree with line/column marks, hostile input refused early
(more than `MAX_PLAN_BYTES`, nesting deeper than `MAX_DEPTH`, non-UTF-8 bytes, YAML aliases,
custom tags, several documents in one file), and the problems it reports (`PlanProblem`,
`PlanError`), each with file, line, column and fix."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from yaml.nodes import Node, ScalarNode

MAX_PLAN_BYTES = 5 * 1024 * 1024
MAX_DEPTH = 32

STR_TAG = "tag:yaml.org,2002:str"
NULL_TAG = "tag:yaml.org,2002:null"
MAP_TAG = "tag:yaml.org,2002:map"
SEQ_TAG = "tag:yaml.org,2002:seq"
SCALAR_TAGS = {
    STR_TAG,
    NULL_TAG,
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


def compose_plan(file: str, text: str) -> Node:
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
    if node is None or (isinstance(node, ScalarNode) and node.tag == NULL_TAG):
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


def invisible_char(text: str) -> str | None:
    for ch in text:
        if unicodedata.category(ch) in _INVISIBLE:
            label = unicodedata.name(ch, "") or "(a control character)"
            return f"U+{ord(ch):04X} {label}"
    return None
