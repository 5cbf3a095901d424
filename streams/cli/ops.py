"""`trackwatch ops`: generate and verify the deployment files (Prometheus rules, Grafana)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import typer
import yaml
from rich.console import Console

from streams.errors import fail
from streams.ops.prometheus import LOCAL_CONFIG, local_config

ops = typer.Typer(
    help="Generate and check the Prometheus/Grafana files under deploy/.", no_args_is_help=True
)
console = Console()

RULES_OPTION = typer.Option(
    Path("deploy/prometheus/rules.yml"),
    "--rules",
    help="Prometheus rules file the Grafana alert rules are derived from.",
)
GRAFANA_OPTION = typer.Option(
    Path("deploy/grafana"), "--out", help="Folder holding provisioning/ and dashboards/."
)


def _read_rules(path: Path) -> str:
    if not path.is_file():
        fail(f"{path}: no such rules file (run from the repository root or pass --rules PATH)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{path}: cannot read the rules file ({exc})")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        fail(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})")
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        fail(f"{path}: expected a Prometheus rules file with a top-level `groups:` list")
    return text


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        fail(f"{out}: is a file; --out must be a folder")


@ops.command("grafana")
def grafana_command(out: Path = GRAFANA_OPTION, rules: Path = RULES_OPTION) -> None:
    """Regenerate Grafana provisioning (datasource, dashboards, alert rules, contact point) and
    the one-machine Prometheus config (prometheus.local.yml next to the rules)."""
    from streams.ops import grafana  # imported on use: keeps `trackwatch --help` fast

    _check_out_dir(out)
    files = grafana.render(_read_rules(rules))
    for path in grafana.write(out, files):
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)
    local = _local_config_path(rules)
    local.write_text(local_config(), encoding="utf-8")
    console.print(f"wrote {local}", highlight=False, soft_wrap=True)


def _local_config_path(rules: Path) -> Path:
    """The one-machine prometheus.yml next to the rules (`streams.ops.prometheus`)."""
    return rules.parent / LOCAL_CONFIG.name


def _stale_local_config(rules: Path) -> list[str]:
    path = _local_config_path(rules)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return [f"{path}: missing"]
    return [] if text == local_config() else [f"{path}: differs from streams/ops/prometheus.py"]


def _promtool(rules: Path) -> list[str]:
    """Problems reported by promtool on the config, the rules and their unit tests."""
    binary = shutil.which("promtool")
    if binary is None:
        console.print("[yellow]promtool not found: Prometheus checks skipped[/]")
        return []
    tests = sorted((rules.parent / "tests").glob("*.yml"))
    problems = []
    runs = [["check", "rules", str(rules)]]
    for config in (rules.parent / "prometheus.yml", _local_config_path(rules)):
        if config.is_file():
            runs.insert(0, ["check", "config", str(config)])
        else:
            problems.append(f"{config}: missing")
    if tests:
        runs.append(["test", "rules", *map(str, tests)])
    else:
        problems.append(f"{rules.parent / 'tests'}: no promtool unit tests (*.yml)")
    for args in runs:
        done = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            problems.append(f"promtool {' '.join(args[:2])}:\n{done.stdout}{done.stderr}")
    return problems


@ops.command("check")
def check_command(out: Path = GRAFANA_OPTION, rules: Path = RULES_OPTION) -> None:
    """Check the committed Grafana files, the metric names of every query, and the Prometheus rules.

    Fails if a generated file differs from what the code produces, if a query names a metric the
    exporter does not expose, or (when promtool is installed) if the Prometheus config, rules or
    their unit tests fail.
    """
    from streams.ops import grafana

    _check_out_dir(out)
    text = _read_rules(rules)
    files = grafana.render(text)
    problems = (
        grafana.stale_files(out, files)
        + grafana.unknown_metrics(text)
        + _stale_local_config(rules)
        + _promtool(rules)
    )
    for problem in problems:
        console.print(f"[red]✗[/] {problem}", highlight=False, soft_wrap=True)
    if problems:
        fail(
            f"{len(problems)} problem(s); after changing rules or streams/ops/grafana.py run "
            "`trackwatch ops grafana` and commit the result",
            code=1,
        )
    console.print(
        f"[green]✓[/] {len(files)} Grafana files up to date; every query names an exposed metric",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(ops, name="ops")
