"""`trackwatch plan lint|diff|import` via typer's CliRunner: exit codes, output, no tracebacks."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from streams.cli import plan as cli_plan
from tracking_plan.loader import load_plan

ROOT = Path(__file__).resolve().parents[1]
PLANS = Path(__file__).parent / "plans"
EXAMPLE = ROOT / "examples" / "ecommerce.yaml"


@pytest.fixture()
def run():
    """Invoke `trackwatch plan ...` on an app holding only this command group (so that these
    tests do not depend on the other groups importing); `streams.cli.app` registers it the same
    way."""
    app = typer.Typer(pretty_exceptions_enable=False)
    cli_plan.register(app)
    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(app, ["plan", *map(str, args)], catch_exceptions=False)
        assert "Traceback" not in result.output
        return result

    return invoke


def test_lint_example_is_clean_even_strict(run):
    result = run("lint", EXAMPLE)
    assert result.exit_code == 0
    assert "0 errors, 0 warnings" in result.stderr
    assert run("lint", "--strict", EXAMPLE).exit_code == 0


def test_lint_warnings_pass_unless_strict(tmp_path, run):
    plan = tmp_path / "warn.yaml"
    plan.write_text(
        'plan: P\nversion: "1"\nevents:\n  Order Completed:\n    description: d\n',
        encoding="utf-8",
    )
    result = run("lint", plan)
    assert result.exit_code == 0
    assert "has no owner" in result.stdout
    assert "0 errors" in result.stderr
    assert run("lint", "--strict", plan).exit_code == 1


def test_lint_errors_fail(run):
    result = run("lint", PLANS / "lint_smells.yaml")
    assert result.exit_code == 1
    assert "deprecated" in result.stdout and "3 errors" in result.stderr


def test_lint_json(run):
    result = run("lint", "--format", "json", PLANS / "lint_smells.yaml")
    findings = json.loads(result.stdout)
    assert {f["rule"] for f in findings} >= {"pii-property", "type-conflict"}
    assert all(set(f) == {"severity", "path", "line", "message", "rule"} for f in findings)


def test_lint_load_errors_are_listed_one_per_line(run):
    path = PLANS / "bad_many_mistakes.yaml"
    result = run("lint", path)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith(str(path))]
    assert len(lines) == 15
    assert lines[0] == (
        f"{path}:5:9: defaults.mode is `blok`, which is not valid "
        "(did you mean `block`? use one of: block, flag, omit)"
    )
    assert "error: 15 problems in the plan" in result.stderr


def test_missing_and_hostile_files(run, tmp_path):
    assert run("lint", tmp_path / "nope.yaml").exit_code == 1
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [x, x]\nb: [*a, *a]\n")
    result = run("lint", bomb)
    assert result.exit_code == 1 and "aliases" in result.stderr
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"plan: \xff\xfe\x00")
    result = run("lint", binary)
    assert result.exit_code == 1 and "not valid UTF-8" in result.stderr
    markup = tmp_path / "markup.yaml"
    markup.write_text("plan: x\nversion: '1'\nevents:\n  '[bold]A[/]': {sources: [web]}\n")
    result = run("lint", markup)
    assert result.exit_code == 0 and "[bold]A[/]" in result.stdout  # shown, not interpreted


def test_diff_breaking_exits_1(run):
    result = run("diff", PLANS / "shop_v1.yaml", PLANS / "shop_v2.yaml")
    assert result.exit_code == 1
    assert "breaking" in result.stdout and "8 breaking, 7 compatible" in result.stderr


def test_diff_same_plan_exits_0(run):
    result = run("diff", EXAMPLE, EXAMPLE)
    assert result.exit_code == 0 and "0 breaking, 0 compatible" in result.stderr


def test_diff_json(run):
    result = run("diff", "--format", "json", PLANS / "shop_v1.yaml", PLANS / "shop_v2.yaml")
    changes = json.loads(result.stdout)
    assert {c["kind"] for c in changes} == {"breaking", "compatible"}
    assert {"kind": "breaking", "path": "events.Order Completed.properties.coupon",
            "message": "optional → required", "line": 29} in changes  # fmt: skip


def test_diff_compatible_only_and_version_not_bumped(run, tmp_path):
    old = tmp_path / "old.yaml"
    new = tmp_path / "new.yaml"
    old.write_text("plan: x\nversion: '1'\nevents:\n  A: {}\n")
    new.write_text("plan: x\nversion: '2'\nevents:\n  A: {}\n  B: {}\n")
    assert run("diff", old, new).exit_code == 0
    new.write_text("plan: x\nversion: '1'\nevents:\n  A: {}\n  B: {}\n")
    result = run("diff", old, new)
    assert result.exit_code == 1 and "version is still '1'" in result.stderr


def test_diff_with_a_broken_plan_exits_2(run, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("plan: x\nversion: '1'\nevents: [\n")
    result = run("diff", EXAMPLE, broken)
    assert result.exit_code == 2 and f"{broken}:4:1:" in result.stderr


def test_bad_format_option(run):
    assert run("diff", "--format", "xml", EXAMPLE, EXAMPLE).exit_code == 2


def test_import_writes_a_loadable_plan(run, tmp_path):
    out = tmp_path / "plan.yaml"
    result = run("import", PLANS / "protocols_bundle.json", "--out", out, "--version", "3")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "global rules" in result.stderr
    plan = load_plan(out)
    assert plan.version == "3" and "Signed Up" in plan.events
    assert run("import", PLANS / "protocols_bundle.json", "--out", out).exit_code == 2  # exists
    assert run("import", PLANS / "protocols_bundle.json", "--out", out, "--force").exit_code == 0


def test_import_to_stdout(run):
    result = run("import", PLANS / "order_completed.schema.json", "--name", "Orders")
    assert result.exit_code == 0
    assert result.stdout.startswith("plan: Orders\n")


def test_import_bad_json(run, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"title": "A",\n "type": }')
    result = run("import", bad)
    assert result.exit_code == 2 and f"{bad}:2:10: invalid JSON" in result.stderr


def test_plan_group_is_registered_in_the_trackwatch_cli():
    """Read from the source, so that this holds even while another group fails to import."""
    tree = ast.parse((ROOT / "streams" / "cli" / "app.py").read_text())
    (modules,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "COMMAND_MODULES"
    ]
    assert "streams.cli.plan" in modules


def test_import_several_files(run, tmp_path):
    (tmp_path / "cart_viewed.json").write_text('{"type": "object", "properties": {}}')
    out = tmp_path / "plan.yaml"
    result = run("import", PLANS / "protocols_bundle.json", tmp_path, "--out", out)
    assert result.exit_code == 0, result.output
    assert {"Product Viewed", "cart_viewed", "identify"} <= set(load_plan(out).events)
