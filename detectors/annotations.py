"""Annotations: known periods (campaigns, releases, outages) during which alerts are suppressed.

File format (YAML), a list of entries:

    - name: Black Friday newsletter
      start: 2026-11-27T08:00:00Z
      end: 2026-11-27T20:00:00Z
      sources: [web]            # optional; empty or missing: every source
      events: [Order Completed]  # optional; empty or missing: every event

A window is annotated for a series when it overlaps [start, end) and the series matches: its
event (or, for a conversion, one of its two events) is listed (or no events are listed), and its
source is listed (or no sources are listed, or the series is not split by source — the total of an
event includes the annotated source). Annotated windows raise no alert and are not learnt as normal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

from detectors.yaml_files import parse_yaml, read_text

ALLOWED_KEYS = {"name", "start", "end", "sources", "events"}


class _Loader(yaml.SafeLoader):
    """Safe YAML, but times stay text so that a bad one is reported with its entry."""


_Loader.add_constructor(
    "tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node)
)


class AnnotationError(ValueError):
    """An annotation file that cannot be used; the message says where and what to change."""


@dataclass(frozen=True, slots=True)
class Annotation:
    name: str
    start: float  # UTC epoch seconds
    end: float
    sources: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset()

    def covers(self, series: dict[str, str], window_start: float, window_end: float) -> bool:
        """True if this annotation applies to `series` in the window [window_start, window_end)."""
        if window_end <= self.start or window_start >= self.end:
            return False
        if self.events:
            names = {series.get("event"), series.get("from_event"), series.get("to_event")}
            if not names & self.events:
                return False
        source = series.get("source")
        return not (self.sources and source is not None and source not in self.sources)


def is_annotated(
    annotations: list[Annotation], series: dict[str, str], window_start: float, window_end: float
) -> bool:
    return any(a.covers(series, window_start, window_end) for a in annotations)


def load_annotations(path: str | Path) -> list[Annotation]:
    """Read and check an annotation file; raise AnnotationError naming the file, entry and fix."""
    path = Path(path)
    return parse_annotations(read_text(path, AnnotationError), str(path))


def parse_annotations(text: str, source_name: str = "<annotations>") -> list[Annotation]:
    """Parse annotation YAML text (see the module docstring for the format)."""
    root, data = parse_yaml(text, source_name, AnnotationError, _Loader)
    if data is None:
        return []
    if not isinstance(data, list):
        raise AnnotationError(
            f"{source_name}: expected a list of annotations (lines starting with '- name: ...'), "
            f"got {type(data).__name__}"
        )
    lines = [node.start_mark.line + 1 for node in root.value] if root is not None else []
    result = []
    for index, entry in enumerate(data):
        line = lines[index] if index < len(lines) else None
        where = f"{source_name}:{line}" if line else source_name
        result.append(_parse_entry(entry, f"{where}: annotation #{index + 1}"))
    return result


def _parse_entry(entry: Any, where: str) -> Annotation:
    if not isinstance(entry, dict):
        raise AnnotationError(
            f"{where}: expected a mapping with name, start, end; got {entry!r:.60}"
        )
    unknown = sorted(str(k) for k in entry if k not in ALLOWED_KEYS)
    if unknown:
        raise AnnotationError(
            f"{where}: unknown key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(ALLOWED_KEYS))}"
        )
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise AnnotationError(f"{where}: 'name' is required and must be a non-empty text")
    where = f"{where} ({name!r})"
    start = _parse_time(entry.get("start"), "start", where)
    end = _parse_time(entry.get("end"), "end", where)
    if end <= start:
        raise AnnotationError(f"{where}: 'end' must be after 'start'")
    return Annotation(
        name=name.strip(),
        start=start,
        end=end,
        sources=_parse_names(entry.get("sources"), "sources", where),
        events=_parse_names(entry.get("events"), "events", where),
    )


def _parse_time(value: Any, key: str, where: str) -> float:
    hint = "an ISO-8601 UTC time such as 2026-11-27T08:00:00Z"
    if value is None:
        raise AnnotationError(f"{where}: '{key}' is required ({hint})")
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise AnnotationError(f"{where}: '{key}' {value!r:.40} is not {hint}") from None
    else:
        raise AnnotationError(f"{where}: '{key}' must be {hint}, got {type(value).__name__}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _parse_names(value: Any, key: str, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise AnnotationError(f"{where}: '{key}' must be a list of names, e.g. [web, ios]")
    return frozenset(value)
