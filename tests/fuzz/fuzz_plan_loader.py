"""Coverage-guided fuzzing (atheris/libFuzzer) of the tracking-plan loader.

The input is a plan file's bytes, read through `load_plan` (size limit, UTF-8 decoding, YAML
composition with its refusals, the plan builder). Loading may only succeed or raise `PlanError`
whose every problem names the file and says what is wrong; anything else is a crash. A plan
that loads must survive `dump_plan` and load back equal. Seeds: the example and test plans.

    python tests/fuzz/fuzz_plan_loader.py -runs=20000            # seeds its own corpus
    python tests/fuzz/fuzz_plan_loader.py -runs=20000 CORPUS_DIR  # or a corpus of yours
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SEED_PLANS = [ROOT / "examples" / "ecommerce.yaml", *sorted((ROOT / "tests" / "plans").glob("*"))]
PLAN_FILE = Path(tempfile.gettempdir()) / f"trackwatch-fuzz-plan-{os.getpid()}.yaml"

# YAML and plan tokens for libFuzzer's dictionary (-dict=...): they help it reach deep code.
TOKENS = ["plan:", "version:", "events:", "properties:", "sources:", "funnels:", "mode:",
          "block", "flag", "omit", "type:", "required:", "enum:", "pattern:", "min:", "max:",
          "default:", "string", "number", "integer", "boolean", "array", "object", "items:",
          "steps:", "identity:", "&a", "*a", "!!python/object", "<<:", "? ", "- ", ": ", "{",
          "}", "[", "]", "'", '"', "\\u0000", "\ufeff", "\t", "\n  ", "~", "null", ".inf",
          "1e400", "0x1F", "yes", "no", "---", "..."]  # fmt: skip


def one_input(data: bytes) -> None:
    """libFuzzer target: the bytes are a plan file."""
    from tracking_plan.loader import PlanError, load_plan, parse_plan
    from tracking_plan.plan_dump import dump_plan

    PLAN_FILE.write_bytes(data)
    try:
        plan = load_plan(PLAN_FILE)
    except PlanError as exc:
        assert exc.problems, "PlanError without a problem"
        for problem in exc.problems:
            assert problem.file == str(PLAN_FILE) and problem.message.strip(), problem
            assert problem.line is None or problem.line >= 1, problem
        return
    again = parse_plan(dump_plan(plan), "<dump>")
    assert without_lines(again) == without_lines(plan), "dump_plan + parse_plan changed the plan"


def without_lines(value: Any) -> Any:
    """A plan as plain data without `line`/`path` (they differ between the file and the dump)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: without_lines(v) for k, v in value.items() if k not in ("line", "path")}
    if isinstance(value, list | tuple):
        return [without_lines(v) for v in value]
    return value


def dictionary_text() -> str:
    """libFuzzer dictionary entries: each token double-quoted with hex escapes."""
    lines = []
    for token in TOKENS:
        raw = token.encode()
        escaped = "".join(
            chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else f"\\x{b:02x}" for b in raw
        )
        lines.append(f'"{escaped}"\n')
    return "".join(lines)


def prepare_corpus(directory: Path) -> None:
    """Write the seed plans and the dictionary next to them (`directory/../plan.dict`)."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(SEED_PLANS):
        (directory / f"seed{i}-{path.name}").write_bytes(path.read_bytes())
    (directory.parent / "plan.dict").write_text(dictionary_text())


def main() -> None:
    import atheris

    sys.path.insert(0, str(ROOT))
    import yaml  # noqa: F401  (libraries uninstrumented: only our code is)

    with atheris.instrument_imports():
        import tracking_plan.loader
        import tracking_plan.model  # noqa: F401
    args = list(sys.argv)
    if not any(not a.startswith("-") for a in args[1:]):  # no corpus given: seed one
        corpus = Path(tempfile.mkdtemp(prefix="trackwatch-fuzz-plan-")) / "corpus"
        prepare_corpus(corpus)
        args += [f"-dict={corpus.parent / 'plan.dict'}", str(corpus)]
    if not any(a.startswith("-max_len=") for a in args):
        args.append("-max_len=8192")
    if not any(a.startswith("-artifact_prefix=") for a in args):  # crash files: not in the repo
        args.append(f"-artifact_prefix={tempfile.gettempdir()}/trackwatch-fuzz-plan-")
    try:
        atheris.Setup(args, one_input)
        atheris.Fuzz()
    finally:
        PLAN_FILE.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
