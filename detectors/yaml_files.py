"""Reading the small YAML files people write (annotations, detector tuning): one line per
problem, naming the file, the line when YAML knows it, and what went wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_text(path: Path, error: type[ValueError], max_bytes: int | None = None) -> str:
    """The file's UTF-8 text; `error` names the file when it is missing, unreadable or larger
    than `max_bytes`."""
    try:
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise error(f"{path}: larger than {max_bytes // 1024} KiB: not a file to read")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read the file ({exc})") from None


def parse_yaml(
    text: str,
    source_name: str,
    error: type[ValueError],
    loader: type[yaml.SafeLoader] = yaml.SafeLoader,
) -> tuple[Any, Any]:
    """(node tree for line numbers, data) of YAML `text`, read with a safe `loader` (no Python
    objects); `error` says where it is not YAML."""
    try:
        return yaml.compose(text, Loader=loader), yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source_name}:{mark.line + 1}" if mark is not None else source_name
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{where}: not valid YAML ({problem})") from None
