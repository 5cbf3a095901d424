"""Annotation files: parsing with clear errors, matching series and windows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.annotations import (
    Annotation,
    AnnotationError,
    is_annotated,
    load_annotations,
    parse_annotations,
)

GOOD = """
- name: Black Friday newsletter
  start: 2026-11-27T08:00:00Z
  end: 2026-11-27T20:00:00Z
  sources: [web]
  events: [Order Completed]
- name: Everything, all day
  start: 2026-11-28
  end: 2026-11-29
"""


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_parses_entries():
    first, second = parse_annotations(GOOD)
    assert first.name == "Black Friday newsletter"
    assert first.start == ts("2026-11-27T08:00:00") and first.end == ts("2026-11-27T20:00:00")
    assert first.sources == {"web"} and first.events == {"Order Completed"}
    assert second.sources == frozenset() and second.start == ts("2026-11-28T00:00:00")


def test_matching_rules():
    ann = parse_annotations(GOOD)[0]
    t = ts("2026-11-27T10:00:00")
    assert ann.covers({"event": "Order Completed", "source": "web"}, t, t + 60)
    assert ann.covers({"event": "Order Completed"}, t, t + 60)  # the total includes web
    assert not ann.covers({"event": "Order Completed", "source": "ios"}, t, t + 60)
    assert not ann.covers({"event": "Product Viewed", "source": "web"}, t, t + 60)
    assert ann.covers({"from_event": "Checkout Started", "to_event": "Order Completed"}, t, t + 60)
    assert not ann.covers({"event": "Order Completed"}, ann.end, ann.end + 60)
    assert ann.covers({"event": "Order Completed"}, ann.start - 30, ann.start + 30)
    assert is_annotated([ann], {"event": "Order Completed"}, t, t + 60)
    assert not is_annotated([], {"event": "Order Completed"}, t, t + 60)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name: x", "expected a list"),
        ("- just a string", "annotation #1: expected a mapping"),
        ("- {start: 2026-01-01, end: 2026-01-02}", "'name' is required"),
        ("- {name: a, end: 2026-01-02}", "'start' is required"),
        ("- {name: a, start: yesterday, end: 2026-01-02}", "is not an ISO-8601"),
        ("- {name: a, start: 2026-01-02, end: 2026-01-01}", "'end' must be after 'start'"),
        ("- {name: a, start: 2026-01-01, end: 2026-01-02, sources: [1]}", "list of names"),
        ("- {name: a, start: 2026-01-01, end: 2026-01-02, srcs: [web]}", "unknown key(s) srcs"),
        ("- {name: a, start: 2026-01-01, end: [1]}", "'end' must be"),
        ("- name: [unclosed", "not valid YAML"),
    ],
)
def test_errors_name_file_entry_and_fix(text, fragment):
    with pytest.raises(AnnotationError) as info:
        parse_annotations(text, "campaigns.yaml")
    message = str(info.value)
    assert fragment in message
    assert message.startswith("campaigns.yaml")


def test_error_points_at_the_line_of_the_bad_entry():
    text = GOOD + "- name: broken\n  start: 2026-13-45\n  end: 2026-11-29\n"
    with pytest.raises(AnnotationError, match=r"campaigns.yaml:10: annotation #3 \('broken'\)"):
        parse_annotations(text, "campaigns.yaml")


def test_load_file_errors(tmp_path: Path):
    with pytest.raises(AnnotationError, match="file not found"):
        load_annotations(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(AnnotationError, match="cannot read"):
        load_annotations(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_annotations(empty) == []
    good = tmp_path / "good.yaml"
    good.write_text(
        "# émojis 🎉 and ünïcode names\n- name: Fête 🎉\n  start: 2026-01-01\n"
        "  end: 2026-01-02\n  events: [Produit Vu ✓]\n",
        encoding="utf-8",
    )
    (ann,) = load_annotations(good)
    assert ann.name == "Fête 🎉" and ann.events == {"Produit Vu ✓"}


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_hostile_text_gives_annotations_or_a_clear_error(text):
    try:
        result = parse_annotations(text, "x.yaml")
    except AnnotationError as exc:
        assert str(exc).startswith("x.yaml")
    else:
        assert all(isinstance(a, Annotation) for a in result)
