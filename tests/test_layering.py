"""The layering rule of docs/architecture.md, read off the code: the pure packages never import
the service (`streams`) or the independent traffic generator (`simulation`), not even lazily
inside a function or for type checking only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> the project packages it must not import (docs/architecture.md, "may import")
FORBIDDEN = {
    "tracking_plan": {"streams", "detectors", "simulation"},
    "detectors": {"streams", "simulation"},
    "simulation": {"streams", "detectors", "tracking_plan"},
}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) of every absolute import anywhere in `source`: module level, inside
    functions and `if TYPE_CHECKING:` blocks, and `importlib.import_module("...")` calls."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return sorted(found)


def violations(package: str) -> list[str]:
    forbidden = FORBIDDEN[package]
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in imported_modules(path.read_text(encoding="utf-8")):
            if module.split(".")[0] in forbidden:
                out.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_lower_package_never_imports_an_upper_one(package: str) -> None:
    assert (ROOT / package / "__init__.py").is_file()
    assert violations(package) == [], (
        f"{package} must not import {sorted(FORBIDDEN[package])} (docs/architecture.md): "
        "move the code that needs them to the importing side"
    )


# modules outside streams/cli that still import it, and why (docs/architecture.md)
CLI_IMPORTERS: dict[str, str] = {}


def test_only_the_command_line_imports_the_command_line() -> None:
    """`streams.cli` is the top of `streams`: the service modules never import it."""
    importers = {}
    for path in sorted((ROOT / "streams").rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative.parts[:2] == ("streams", "cli"):
            continue
        modules = [module for _, module in imported_modules(path.read_text(encoding="utf-8"))]
        if any(module == "streams.cli" or module.startswith("streams.cli.") for module in modules):
            importers[relative.as_posix()] = modules
    assert sorted(importers) == sorted(CLI_IMPORTERS), (
        "only the command line imports streams.cli (docs/architecture.md)"
    )


def test_the_simulator_stands_below_the_service() -> None:
    """`streams/simulator/` imports nothing else of `streams` (so the backtest, the `simulate`
    command and the tests use it without the service), `send.py` aside: it sends into Kafka."""
    found = []
    for path in sorted((ROOT / "streams" / "simulator").glob("*.py")):
        if path.name == "send.py":
            continue
        for line, module in imported_modules(path.read_text(encoding="utf-8")):
            if module.split(".")[0] in {"streams", "simulation", "detectors"} and not (
                module == "streams.simulator" or module.startswith("streams.simulator.")
            ):
                found.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    assert (ROOT / "streams" / "simulator" / "traffic.py").is_file()
    assert found == []


def test_the_check_sees_every_kind_of_import() -> None:
    source = """
from typing import TYPE_CHECKING
import importlib
import streams.simulator
from streams import replay
if TYPE_CHECKING:
    from simulation.profiles import Profile
def run():
    from streams.windows import EARLY_MINUTES
    importlib.import_module("streams.cli")
    return __import__("simulation")
from . import sibling
"""
    tops = [module.split(".")[0] for _, module in imported_modules(source)]
    assert tops == ["typing", "importlib", "streams", "streams", "simulation", "streams",
                    "streams", "simulation"]  # fmt: skip
