"""Plan diff: which changes between two plan versions break existing trackers.

A change is *breaking* when an event that was valid under the old plan may be invalid (or treated
more strictly) under the new one: a removed event or property, a property made required, a type
change, a narrowed enum/range, a new pattern, a stricter mode, a business key that blocks (new,
or blocking more: longer, or flag → block). Everything else (added optional property or event,
widened enum, docs, a business key that flags: repeats are still forwarded) is *compatible*. A
plan that changed without a new `version` gets a `version` finding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from tracking_plan.lint import event_path
from tracking_plan.model import (
    EventSpec,
    Identity,
    Mode,
    Plan,
    PropertySpec,
    PropType,
    Status,
    UniqueKey,
    format_duration,
)

Kind = Literal["breaking", "compatible", "version"]

# How strictly a mode treats an invalid event: flag forwards it, omit strips unplanned
# properties, block quarantines it.
_STRICTNESS = {Mode.FLAG: 0, Mode.OMIT: 1, Mode.BLOCK: 2}
# Type changes that accept every value the old type accepted.
_WIDENINGS = {(PropType.INTEGER, PropType.NUMBER)}


@dataclass(frozen=True)
class Change:
    """One difference between two plans: breaking or compatible, where, and what changed."""

    kind: Kind
    path: str
    message: str
    line: int | None = None  # in the new plan when it exists there, else in the old one

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "message": self.message, "line": self.line}


class _Diff:
    def __init__(self) -> None:
        self.changes: list[Change] = []

    def breaking(self, path: str, message: str, line: int | None) -> None:
        self.changes.append(Change("breaking", path, message, line))

    def compatible(self, path: str, message: str, line: int | None) -> None:
        self.changes.append(Change("compatible", path, message, line))

    # -- properties ---------------------------------------------------------------------------

    def properties(
        self,
        old: tuple[PropertySpec, ...],
        new: tuple[PropertySpec, ...],
        path: str,
        unplanned_allowed: bool,
    ) -> None:
        olds, news = {p.name: p for p in old}, {p.name: p for p in new}
        for name, prop in olds.items():
            if name not in news:
                where = f"{path}.{name}"
                if unplanned_allowed:
                    self.compatible(
                        where, "property removed (unplanned ones are allowed)", prop.line
                    )
                else:
                    self.breaking(
                        where, "property removed: senders get unplanned_property", prop.line
                    )
        for name, prop in news.items():
            where = f"{path}.{name}"
            if name not in olds:
                if prop.required:
                    self.breaking(where, "required property added", prop.line)
                else:
                    self.compatible(where, "optional property added", prop.line)
            else:
                self.property(olds[name], prop, where)

    def property(self, old: PropertySpec, new: PropertySpec, path: str) -> None:
        line = new.line
        if old.type != new.type:
            message = f"type {old.type.value} → {new.type.value}"
            if new.type is PropType.ANY or (old.type, new.type) in _WIDENINGS:
                self.compatible(path, message + " (wider)", line)
            else:
                self.breaking(path, message, line)
        if old.required != new.required:
            if new.required:
                self.breaking(path, "optional → required", line)
            else:
                self.compatible(path, "required → optional", line)
        if old.nullable != new.nullable:
            if new.nullable:
                self.compatible(path, "now nullable", line)
            else:
                self.breaking(path, "no longer nullable", line)
        self.enum(old, new, path)
        if old.pattern != new.pattern:
            if new.pattern is None:
                self.compatible(path, f"pattern {old.pattern!r} removed", line)
            elif old.pattern is None:
                self.breaking(path, f"pattern {new.pattern!r} added", line)
            else:
                self.breaking(path, f"pattern {old.pattern!r} → {new.pattern!r}", line)
        self.bound(old.minimum, new.minimum, path, "min", lower=True, line=line)
        self.bound(old.maximum, new.maximum, path, "max", lower=False, line=line)
        self.bound(old.max_length, new.max_length, path, "max_length", lower=False, line=line)
        if old.format != new.format:
            message = f"format {old.format or 'none'} → {new.format or 'none'}"
            if new.format is None:
                self.compatible(path, message, line)
            else:
                self.breaking(path, message, line)
        if (old.has_default, old.default) != (new.has_default, new.default):
            before = repr(old.default) if old.has_default else "none"
            after = repr(new.default) if new.has_default else "none"
            self.compatible(path, f"default {before} → {after}", line)
        if old.description != new.description:
            self.compatible(path, "description changed", line)
        if old.pii != new.pii:
            self.compatible(path, "marked as PII" if new.pii else "no longer marked as PII", line)
        self.unique(old.unique, new.unique, path, line)
        if old.additional_properties != new.additional_properties:
            if new.additional_properties:
                self.compatible(path, "unlisted nested fields now allowed", line)
            else:
                self.breaking(path, "unlisted nested fields no longer allowed", line)
        self.properties(old.properties, new.properties, path, new.additional_properties)
        if old.items is not None or new.items is not None:
            if new.items is None:
                self.compatible(f"{path}[]", "item schema removed", line)
            elif old.items is None:
                self.breaking(f"{path}[]", "item schema added", new.items.line)
            else:
                self.property(old.items, new.items, f"{path}[]")

    def enum(self, old: PropertySpec, new: PropertySpec, path: str) -> None:
        if old.enum == new.enum:
            return
        if new.enum is None:
            self.compatible(path, "enum removed: any value allowed", new.line)
            return
        if old.enum is None:
            self.breaking(path, f"enum added: only {list(new.enum)} allowed", new.line)
            return
        removed = [v for v in old.enum if v not in new.enum]
        added = [v for v in new.enum if v not in old.enum]
        if removed:
            self.breaking(path, f"enum narrowed: {removed} no longer allowed", new.line)
        if added:
            self.compatible(path, f"enum widened: {added} allowed", new.line)

    def bound(
        self,
        old: float | None,
        new: float | None,
        path: str,
        name: str,
        *,
        lower: bool,
        line: int | None,
    ) -> None:
        if old == new:
            return
        message = f"{name} {_num(old)} → {_num(new)}"
        if new is None:
            self.compatible(path, message, line)
        elif old is None or (new > old if lower else new < old):
            self.breaking(path, message + " (narrower)", line)
        else:
            self.compatible(path, message + " (wider)", line)

    # -- events -------------------------------------------------------------------------------

    def event(self, old: EventSpec, new: EventSpec, old_plan: Plan, new_plan: Plan) -> None:
        path, line = event_path(new), new.line
        if old.status != new.status:
            message = f"status {old.status.value} → {new.status.value}"
            if new.status is Status.DEPRECATED:
                self.breaking(path, message + ": senders get deprecated_event", line)
            else:
                self.compatible(path, message, line)
        old_src, new_src = set(old.sources), set(new.sources)
        if old_src != new_src:
            if not new_src:
                self.compatible(path, "now allowed from every source", line)
            elif not old_src:
                self.breaking(path, f"now only from {sorted(new_src)}", line)
            else:
                if old_src - new_src:
                    self.breaking(path, f"no longer from {sorted(old_src - new_src)}", line)
                if new_src - old_src:
                    self.compatible(path, f"now also from {sorted(new_src - old_src)}", line)
        old_mode = old.mode or old_plan.default_mode
        new_mode = new.mode or new_plan.default_mode
        if old.mode != new.mode and old_mode != new_mode:
            self.mode(path, old_mode, new_mode, line)
        if old.allow_unplanned_properties != new.allow_unplanned_properties:
            if new.allow_unplanned_properties:
                self.compatible(path, "unplanned properties now allowed", line)
            else:
                self.breaking(path, "unplanned properties no longer allowed", line)
        if old.description != new.description:
            self.compatible(path, "description changed", line)
        if old.owner != new.owner:
            self.compatible(path, f"owner {old.owner or 'none'} → {new.owner or 'none'}", line)
        self.unique(old.unique, new.unique, f"{path}.unique", line)
        self.properties(
            old.properties, new.properties, f"{path}.properties", new.allow_unplanned_properties
        )

    def unique(
        self, old: UniqueKey | None, new: UniqueKey | None, path: str, line: int | None
    ) -> None:
        """A business key (`unique`) added, removed or changed: breaking only where repeats are
        newly quarantined (a key with mode block); a flagging key forwards them."""
        if old is None and new is None:
            return
        if new is None:
            self.compatible(path, "business key removed: repeats no longer reported", line)
            return
        within = format_duration(new.within_seconds)
        block = new.mode is Mode.BLOCK
        if old is None:
            if block:
                self.breaking(
                    path, f"business key added ({within}, block): repeats quarantined", line
                )
            else:
                message = f"business key added ({within}): repeats flagged as duplicate_key"
                self.compatible(path, message, line)
            return
        if old.properties != new.properties:
            message = f"business key {list(old.properties)} → {list(new.properties)}"
            (self.breaking if block else self.compatible)(path, message, line)
        if old.within_seconds != new.within_seconds:
            message = f"business key within {format_duration(old.within_seconds)} → {within}"
            longer = new.within_seconds > old.within_seconds
            if block and longer:
                self.breaking(path, message + " (more repeats quarantined)", line)
            else:
                self.compatible(path, message, line)
        if old.mode != new.mode:
            message = f"business key mode {old.mode.value} → {new.mode.value}"
            if block:
                self.breaking(path, message + ": repeats quarantined", line)
            else:
                self.compatible(path, message + ": repeats forwarded", line)

    def mode(self, path: str, old: Mode, new: Mode, line: int | None) -> None:
        message = f"mode {old.value} → {new.value}"
        if _STRICTNESS[new] > _STRICTNESS[old]:
            self.breaking(path, message + " (stricter)", line)
        else:
            self.compatible(path, message + " (more lenient)", line)

    # -- plan ---------------------------------------------------------------------------------

    def plan(self, old: Plan, new: Plan) -> None:
        if old.name != new.name:
            self.compatible("plan", f"renamed {old.name!r} → {new.name!r}", None)
        if old.default_mode != new.default_mode:
            self.mode("defaults.mode", old.default_mode, new.default_mode, None)
        if old.identity != new.identity:
            message = f"identity {old.identity.value} → {new.identity.value}"
            if new.identity is Identity.ANY:
                self.compatible("defaults.identity", message, None)
            else:
                self.breaking("defaults.identity", message, None)
        for ctx_path in sorted(set(new.required_context) - set(old.required_context)):
            self.breaking("context.required", f"context field {ctx_path} now required", None)
        for ctx_path in sorted(set(old.required_context) - set(new.required_context)):
            self.compatible(
                "context.required", f"context field {ctx_path} no longer required", None
            )
        for name in sorted(set(new.pii) - set(old.pii)):
            self.breaking("pii", f"{name} is now forbidden as PII", None)
        for name in sorted(set(old.pii) - set(new.pii)):
            self.compatible("pii", f"{name} is no longer forbidden", None)
        for name in sorted(old.builtins - new.builtins):
            self.breaking(
                f"builtins.{name}", "built-in fields turned off: they become unplanned", None
            )
        for name in sorted(new.builtins - old.builtins):
            self.compatible(f"builtins.{name}", "built-in fields turned on", None)

        for name, source in old.sources.items():
            if name not in new.sources:
                self.breaking(f"sources.{name}", "source removed", source.line)
        for name, source in new.sources.items():
            path = f"sources.{name}"
            if name not in old.sources:
                self.compatible(path, "source added", source.line)
                continue
            before = old.sources[name]
            if before.platform != source.platform:
                self.compatible(
                    path, f"platform {before.platform!r} → {source.platform!r}", source.line
                )
            old_mode = before.mode or old.default_mode
            new_mode = source.mode or new.default_mode
            if before.mode != source.mode and old_mode != new_mode:
                self.mode(path, old_mode, new_mode, source.line)

        for key, event in old.events.items():
            if key not in new.events:
                self.breaking(
                    event_path(event), "event removed: senders get unplanned_event", event.line
                )
        for key, event in new.events.items():
            if key not in old.events:
                self.compatible(event_path(event), "event added", event.line)
            else:
                self.event(old.events[key], event, old, new)

        old_funnels = {f.name: f for f in old.funnels}
        new_funnels = {f.name: f for f in new.funnels}
        for name in old_funnels.keys() - new_funnels.keys():
            self.compatible(f"funnels.{name}", "funnel removed", old_funnels[name].line)
        for name, funnel in new_funnels.items():
            before = old_funnels.get(name)
            if before is None:
                self.compatible(f"funnels.{name}", "funnel added", funnel.line)
            elif (before.steps, before.window_minutes) != (funnel.steps, funnel.window_minutes):
                self.compatible(f"funnels.{name}", "funnel steps or window changed", funnel.line)


def _num(value: float | None) -> str:
    if value is None:
        return "none"
    return str(int(value)) if float(value).is_integer() else str(value)


def _version_key(version: str) -> tuple[int, ...] | None:
    """Dotted ASCII numbers ("v1.2.10" → (1, 2, 10)) compare numerically; others not at all."""
    text = version.removeprefix("v").removeprefix("V")
    if not re.fullmatch(r"[0-9]{1,18}(\.[0-9]{1,18})*", text):
        return None
    return tuple(int(p) for p in text.split("."))


def diff_plans(old: Plan, new: Plan) -> list[Change]:
    """Every difference from `old` to `new`, in plan order, plus a `version` finding if the plan
    changed but its version did not go up."""
    diff = _Diff()
    diff.plan(old, new)
    changes = diff.changes
    if changes:
        if old.version == new.version:
            changes.append(
                Change("version", "version", f"plan changed but version is still {new.version!r}")
            )
        else:
            before, after = _version_key(old.version), _version_key(new.version)
            if before is not None and after is not None and after < before:
                message = f"version went down: {old.version!r} → {new.version!r}"
                changes.append(Change("version", "version", message))
    return changes


def has_breaking(changes: list[Change]) -> bool:
    """True if any change is breaking or the version was not bumped."""
    return any(c.kind != "compatible" for c in changes)
