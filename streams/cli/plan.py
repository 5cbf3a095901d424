"""`trackwatch plan ...`: lint a plan, diff two plan versions, import JSON Schema.

Exit codes: 0 fine; 1 the plan has errors (lint), breaking changes or no version bump (diff);
2 a file could not be read or parsed (each problem printed as `file:line:col: message (hint)`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from streams.errors import err_console, fail
from tracking_plan.diff import Change, diff_plans, has_breaking
from tracking_plan.jsonschema_import import load_json_schemas
from tracking_plan.lint import lint_plan
from tracking_plan.loader import PlanError, load_plan
from tracking_plan.model import Plan, is_unnamed_view

plan_app = typer.Typer(
    help="Check, compare and import tracking plans.", no_args_is_help=True, add_completion=False
)
console = Console(highlight=False)

_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan", "breaking": "bold red",
          "compatible": "green", "version": "bold red"}  # fmt: skip


def _report_problems(exc: PlanError, code: int) -> NoReturn:
    for problem in exc.problems:
        err_console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    count = len(exc.problems)
    fail(f"{count} problem{'s' if count != 1 else ''} in the plan; nothing else was checked", code)


def _load(path: Path, code: int = 2) -> Plan:
    try:
        return load_plan(path)
    except PlanError as exc:
        _report_problems(exc, code)


def _json(data: object) -> None:
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


@plan_app.command("lint")
def lint(
    plan: Annotated[Path, typer.Argument(help="Plan file (YAML).")],
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail too.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Load a plan and report its smells. Exit 1 on errors (or warnings with --strict)."""
    if fmt not in ("table", "json"):
        fail(f"unknown --format {fmt!r}; use table or json")
    loaded = _load(plan, code=1)
    findings = lint_plan(loaded)
    counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "info")}
    if fmt == "json":
        _json([f.__dict__ for f in findings])
    elif findings:
        table = Table(title=f"{plan} — {loaded.name} {loaded.version}", title_justify="left")
        for column in ("severity", "line", "where", "finding"):
            table.add_column(column, overflow="fold")
        for f in findings:
            table.add_row(
                f"[{_STYLE[f.severity]}]{f.severity}[/]",
                str(f.line or ""),
                _plain(f.path),
                _plain(f.message),
            )
        console.print(table)
    summary = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items())
    planned = sum(not is_unnamed_view(e) for e in loaded.events.values())
    err_console.print(f"{plan}: {planned} events; {summary}", markup=False, soft_wrap=True)
    if counts["error"] or (strict and counts["warning"]):
        raise typer.Exit(1)


@plan_app.command("diff")
def diff(
    old: Annotated[Path, typer.Argument(help="The plan before the change.")],
    new: Annotated[Path, typer.Argument(help="The plan after the change.")],
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Tell breaking from compatible changes. Exit 1 if any change breaks existing trackers."""
    if fmt not in ("table", "json"):
        fail(f"unknown --format {fmt!r}; use table or json")
    changes = diff_plans(_load(old), _load(new))
    if fmt == "json":
        _json([c.to_dict() for c in changes])
    elif changes:
        console.print(_changes_table(changes, f"{old} → {new}"))
    breaking = sum(c.kind == "breaking" for c in changes)
    compatible = sum(c.kind == "compatible" for c in changes)
    version = [c.message for c in changes if c.kind == "version"]
    err_console.print(
        f"{breaking} breaking, {compatible} compatible change(s)"
        + "".join(f"; {v}" for v in version),
        markup=False,
        soft_wrap=True,
    )
    if has_breaking(changes):
        raise typer.Exit(1)


def _changes_table(changes: list[Change], title: str) -> Table:
    table = Table(title=_plain(title), title_justify="left")
    for column in ("kind", "line", "where", "change"):
        table.add_column(column, overflow="fold")
    for c in changes:
        table.add_row(
            f"[{_STYLE[c.kind]}]{c.kind}[/]", str(c.line or ""), _plain(c.path), _plain(c.message)
        )
    return table


@plan_app.command("import")
def import_schema(
    schemas: Annotated[
        list[Path],
        typer.Argument(help="JSON Schema files (one event or a bundle each) or directories."),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Plan file to write (default: stdout).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Plan name.")] = None,
    version: Annotated[str, typer.Option(help="Plan version.")] = "1",
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Turn JSON Schema into a plan file; unsupported keywords are listed as warnings."""
    if out is not None and out.exists() and not force:
        fail(f"{out} exists; pass --force to overwrite it")
    try:
        result = load_json_schemas(schemas, name=name, version=version)
    except PlanError as exc:
        _report_problems(exc, 2)
    for warning in result.warnings:
        err_console.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    text = result.to_yaml()
    if out is None:
        typer.echo(text, nl=False)
    else:
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {out}: {exc.strerror or exc}")
    err_console.print(
        f"imported {len(result.plan.events)} event(s) with {len(result.warnings)} warning(s)"
        + (f" into {out}" if out else ""),
        markup=False,
        soft_wrap=True,
    )


def _plain(text: str) -> str:
    """Text shown literally in a rich table (no markup interpretation)."""
    return escape(text)


def register(app: typer.Typer) -> None:
    """Add the `plan` command group to the trackwatch CLI."""
    app.add_typer(plan_app, name="plan")
