"""`trackwatch validate --plan PLAN EVENTS.jsonl[.gz]`: check a file of events against a plan.

Made for a tracker's CI: it prints one row per event x violation code (count and examples) and
exits 1 when any event breaks the plan, 0 when all are valid, 2 on usage errors (missing file,
bad plan, bad option).

Each non-blank line is one JSON value: a bare Segment call, an envelope as the collector writes
it (``{"source": ..., "received_at": ..., "body": {...}}``) or a Segment batch
(``{"batch": [...]}``, expanded; its top-level ``context`` and ``sentAt`` apply to every call
that lacks its own). A line that is not JSON is reported as ``malformed_json`` with its number.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from streams.errors import err_console, fail
from tracking_plan.loader import PlanError, load_plan
from tracking_plan.normalise import parse_timestamp
from tracking_plan.validator import Validator, compile_plan
from tracking_plan.violations import Code, Violation

PROGRESS_MIN_BYTES = 1 << 20  # show a progress bar for files larger than this
_ENVELOPE_KEYS = frozenset(("source", "received_at", "body"))
_BATCH_SHARED = ("context", "sentAt")

console = Console(highlight=False)


@dataclass
class _Row:
    count: int = 0
    first_line: int = 0
    examples: list[tuple[int, Violation]] = field(default_factory=list)


@dataclass
class Report:
    """What a validation run found (the JSON output has the same shape)."""

    lines: int = 0
    calls: int = 0
    outcomes: dict[str, int] = field(
        default_factory=lambda: {"valid": 0, "flagged": 0, "quarantined": 0, "malformed": 0}
    )
    rows: dict[tuple[str, str], _Row] = field(default_factory=dict)

    def add(self, event: str, line: int, violation: Violation, max_examples: int) -> None:
        row = self.rows.get((event, violation.code))
        if row is None:
            row = self.rows[(event, violation.code)] = _Row(first_line=line)
        row.count += 1
        if len(row.examples) < max_examples:
            row.examples.append((line, violation))

    @property
    def violations(self) -> int:
        return sum(row.count for row in self.rows.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "calls": self.calls,
            "outcomes": self.outcomes,
            "violations": self.violations,
            "rows": [
                {
                    "event": event,
                    "code": code,
                    "count": row.count,
                    "first_line": row.first_line,
                    "examples": [{"line": n, **v.to_dict()} for n, v in row.examples],
                }
                for (event, code), row in sorted(self.rows.items(), key=_row_order)
            ],
        }


def _printable(text: str, limit: int = 80) -> str:
    """`text` safe to print and to encode: control/invisible characters and lone surrogates
    escaped, clipped to `limit` characters."""
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text[: limit * 2])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _row_order(item: tuple[tuple[str, str], _Row]) -> tuple[int, str, str]:
    (event, code), row = item
    return (-row.count, event, code)


def _open(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """(stream of decompressed lines, underlying raw file whose position tells the progress)."""
    raw = path.open("rb")
    magic = raw.read(2)
    raw.seek(0)
    if magic == b"\x1f\x8b" or path.suffix == ".gz":
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw  # type: ignore[return-value]
    return raw, raw


def _calls(value: Any, source: str | None) -> Iterator[tuple[Any, str | None, float | None]]:
    """(body, source, received_at) of each call in one parsed line."""
    received_at = None
    if isinstance(value, dict) and "body" in value and _ENVELOPE_KEYS.issuperset(value):
        if isinstance(value.get("source"), str):
            source = value["source"]
        received_at = parse_timestamp(value.get("received_at"))
        value = value["body"]
    if isinstance(value, dict) and isinstance(value.get("batch"), list):
        shared = {k: value[k] for k in _BATCH_SHARED if k in value}
        for call in value["batch"]:
            if isinstance(call, dict) and shared:
                call = {**shared, **call}
            yield call, source, received_at
        return
    yield value, source, received_at


def check_file(
    validator: Validator,
    path: Path,
    source: str | None,
    max_examples: int,
    progress: Progress | None = None,
) -> Report:
    """Validate every call of a JSONL(.gz) file into a `Report`."""
    report = Report()
    stream, raw = _open(path)
    size = os.fstat(raw.fileno()).st_size
    task = progress.add_task(f"validating {escape(path.name)}", total=size) if progress else None
    try:
        for number, line in enumerate(stream, start=1):
            report.lines = number
            if progress is not None and task is not None and number % 512 == 0:
                progress.update(task, completed=raw.tell())
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                report.outcomes["malformed"] += 1
                problem = Violation(
                    Code.MALFORMED_JSON.value, "$", "one JSON value per line", str(exc)[:80]
                )
                report.add("(malformed)", number, problem, max_examples)
                continue
            for body, call_source, received_at in _calls(value, source):
                report.calls += 1
                result = validator.validate(body, call_source, received_at)
                report.outcomes[result.outcome] += 1
                label = _printable(result.event_key) if result.event_key else "(broken)"
                for problem in result.violations:
                    report.add(label, number, problem, max_examples)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        fail(f"cannot read {path}: {exc}")
    finally:
        stream.close()
        raw.close()
        if progress is not None and task is not None:
            progress.update(task, completed=size)
    return report


def _print_table(report: Report, path: Path) -> None:
    if report.rows:
        table = Table(title=f"violations in {path}", title_justify="left")
        for column in ("event", "code"):
            table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=40)
        for column in ("count", "line"):
            table.add_column(column, no_wrap=True, justify="right")
        for column in ("path", "expected", "got"):
            table.add_column(column, overflow="fold")
        for (event, code), row in sorted(report.rows.items(), key=_row_order):
            for index, (line, v) in enumerate(row.examples or [(row.first_line, None)]):
                first = index == 0
                table.add_row(
                    Text(event if first else ""),
                    Text(code if first else "", style="bold red" if first else ""),
                    str(row.count) if first else "",
                    str(line),
                    Text(v.path if v else ""),
                    Text(v.expected if v else ""),
                    Text(v.got if v else ""),
                )
        console.print(table)
    o = report.outcomes
    summary = (
        f"{path}: {report.lines} lines, {report.calls} calls: {o['valid']} valid, "
        f"{o['flagged']} flagged, {o['quarantined']} quarantined, {o['malformed']} malformed "
        f"lines; {report.violations} violations"
    )
    err_console.print(summary, markup=False, highlight=False, soft_wrap=True)


def validate(
    events: Annotated[Path, typer.Argument(help="Events file: JSON lines, optionally gzipped.")],
    plan: Annotated[Path, typer.Option("--plan", help="Tracking plan (YAML).")],
    source: Annotated[
        str | None, typer.Option("--source", help="Source of calls that do not name one.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    max_examples: Annotated[
        int, typer.Option("--max-examples", help="Examples shown per event and code.")
    ] = 1,
) -> None:
    """Check a file of events against a tracking plan. Exit 1 on any violation."""
    if fmt not in ("table", "json"):
        fail(f"unknown --format {fmt!r}; use table or json")
    if max_examples < 0:
        fail(f"--max-examples must be 0 or more, not {max_examples}")
    if not events.is_file():
        fail(f"events file not found: {events}")
    if not plan.is_file():
        fail(f"plan file not found: {plan}")
    try:
        loaded = load_plan(plan)
    except PlanError as exc:
        for problem in exc.problems:
            err_console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
        fail(f"the plan {plan} has {len(exc.problems)} problem(s); fix it first")
    except OSError as exc:
        fail(f"cannot read plan {plan}: {exc}")
    validator = compile_plan(loaded)
    show_progress = events.stat().st_size >= PROGRESS_MIN_BYTES
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not show_progress,
    )
    with progress:
        report = check_file(validator, events, source, max_examples, progress)
    if fmt == "json":
        typer.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        _print_table(report, events)
    if report.violations:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `trackwatch validate` to the CLI."""
    app.command("validate")(validate)
