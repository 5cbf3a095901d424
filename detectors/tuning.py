"""Detector tuning from YAML: the `EngineConfig`, `LifecycleConfig` and `SliceConfig` numbers a
team may change (how sure, how big and how long a deviation must be before it alerts), checked
with errors that name the file, the line and the fix. Every key is optional; a missing one keeps
its default.

    # detectors.yaml (examples/detectors.yaml lists every key with its default)
    min_excess_units: 8          # a spike or drop must be worth 8 users' events
    lifecycle:
      fire_windows: 5            # and last 5 windows at the firing level
    slices:
      alpha_per_day: 0.0001      # slice tests: a third of the false alarms per series-day

What is not a number here (the series levels, the model classes) is code, not tuning.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import yaml

from detectors.engine_config import EngineConfig
from detectors.lifecycle import LifecycleConfig
from detectors.slices import SliceConfig
from detectors.yaml_files import parse_yaml, read_text

MAX_BYTES = 64 * 1024
NESTED = {"lifecycle": LifecycleConfig, "slices": SliceConfig}  # blocks of their own
NOT_TUNABLE = {"levels", "model_classes", "model_options", *NESTED}
# fractions of a step (smoothing rates, a decay, a probability): in (0, 1]
FRACTIONS = {
    "quiet_decay",
    "baseline_alpha",
    "alpha_per_day",
    "silence_alpha_per_day",
    "silence_rho",
    "silence_told",
}
# false alarms per series and day (also fractions): below 1, or the threshold ln(n / α) is void
FALSE_ALARM_RATES = {"alpha_per_day", "silence_alpha_per_day"}
# counts of windows, events or series that must be at least 1
AT_LEAST_ONE = {
    "disappear_windows",
    "new_event_windows",
    "new_event_span",
    "new_event_min_count",
    "max_series",
    "max_gap_windows",
    "slice_batch_windows",
    "max_slices",
}


class TuningError(ValueError):
    """A tuning file that cannot be used; the message says where and what to change."""


def load_tuning(path: str | Path) -> EngineConfig:
    """Read a tuning file into an `EngineConfig` (defaults for what it does not set)."""
    path = Path(path)
    return parse_tuning(read_text(path, TuningError, MAX_BYTES), str(path))


def parse_tuning(text: str, source_name: str = "<tuning>") -> EngineConfig:
    """Parse tuning YAML text (see the module docstring)."""
    root, data = parse_yaml(text, source_name, TuningError)
    if data is None:
        return EngineConfig()
    lines = _key_lines(root)
    if not isinstance(data, dict):
        raise TuningError(
            f"{source_name}: expected a mapping of settings (lines like 'min_excess_units: 8'), "
            f"got {type(data).__name__}"
        )
    blocks: dict[str, Any] = {}
    for block, cls in NESTED.items():
        nested = data.get(block)
        if nested is None:
            continue
        where = f"{source_name}:{lines.get(block, 1)}: {block}"
        if not isinstance(nested, dict):
            example = next(f.name for f in fields(cls))
            raise TuningError(f"{where}: expected a mapping such as '{example}: ...'")
        changes = _changes(nested, cls(), set(), source_name, lines, f"{block}.")
        try:
            blocks[block] = replace(cls(), **changes)
        except ValueError as exc:
            raise TuningError(f"{where}: {exc}") from None
    top = {k: v for k, v in data.items() if k not in NESTED}
    changes = _changes(top, EngineConfig(), NOT_TUNABLE, source_name, lines, "")
    return replace(EngineConfig(), **blocks, **changes)


def _key_lines(root: Any) -> dict[str, int]:
    """Setting name -> its line (the lifecycle block's own keys included)."""
    out: dict[str, int] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    out.setdefault(str(key.value), key.start_mark.line + 1)
                stack.append(value)
    return out


def _changes(
    data: dict, defaults: Any, excluded: set[str], source: str, lines: dict, prefix: str
) -> dict[str, Any]:
    """The settings of `data` as keyword changes of `defaults`, each checked."""
    known = {f.name for f in fields(defaults)} - excluded
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key)
        at = f"{source}:{lines[name]}" if name in lines else source
        if name in excluded:
            raise TuningError(f"{at}: {name!r} cannot be tuned here (it is code, not a number)")
        if name not in known:
            hint = _hint(name, known, prefix)
            raise TuningError(f"{at}: unknown setting {prefix + name!r:.60}; {hint}")
        out[name] = _checked(name, value, getattr(defaults, name), f"{at}: {prefix}{name}")
    return out


def _hint(name: str, known: set[str], prefix: str) -> str:
    """What to do about an unknown setting: move it, fix its spelling, or pick a known one."""
    for block, cls in NESTED.items():
        if prefix != f"{block}." and name in {f.name for f in fields(cls)}:
            return f"it belongs under '{block}:' ({block}: {{{name}: ...}})"
    if prefix and name in {f.name for f in fields(EngineConfig)} - NOT_TUNABLE:
        return f"it belongs at the top level, not under '{prefix[:-1]}:'"
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"did you mean '{close[0]}'?" if close else f"known: {', '.join(sorted(known))}"


def _checked(name: str, value: Any, default: Any, where: str) -> Any:
    """`value` as the type of `default`, within its range."""
    if isinstance(default, tuple):  # e.g. slice_dims: dimension names
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise TuningError(f"{where}: expected a list of dimension names, e.g. [app_version]")
        return tuple(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise TuningError(f"{where}: expected true or false, got {value!r:.40}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TuningError(f"{where}: expected a number, got {value!r:.40}")
    if isinstance(default, int) and not (isinstance(value, int) or float(value).is_integer()):
        raise TuningError(f"{where}: expected a whole number, got {value!r}")
    if not math.isfinite(value):
        raise TuningError(f"{where}: expected a finite number, got {value!r}")
    if name in FRACTIONS and not 0.0 < value <= 1.0:
        raise TuningError(f"{where}: must be in (0, 1], got {value!r}")
    if name in FALSE_ALARM_RATES and value >= 1.0:
        raise TuningError(f"{where}: must be below 1, got {value!r}")
    if name in AT_LEAST_ONE and value < 1:
        raise TuningError(f"{where}: must be at least 1, got {value!r}")
    if value < 0:
        raise TuningError(f"{where}: must not be negative, got {value!r}")
    return int(value) if isinstance(default, int) else float(value)
