"""Plan loading: the example plan, every kind of mistake with its exact position, hostile input."""

from __future__ import annotations

import contextlib
import dataclasses
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yaml.nodes import MappingNode, SequenceNode

from tests.plan_strategies import plans
from tracking_plan.loader import (
    MAX_DEPTH,
    MAX_PLAN_BYTES,
    PlanError,
    PlanProblem,
    load_plan,
    parse_plan,
)
from tracking_plan.model import (
    CallType,
    Identity,
    Mode,
    PropType,
    Status,
    event_key,
)
from tracking_plan.plan_dump import dump_plan
from tracking_plan.plan_yaml import _fast_compose, _PlanYamlLoader

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ecommerce.yaml"
PLANS = Path(__file__).parent / "plans"

HEAD = "plan: Test\nversion: '1'\n"


def problems(text: str) -> list[PlanProblem]:
    with pytest.raises(PlanError) as info:
        parse_plan(textwrap.dedent(text), "plan.yaml")
    return info.value.problems


def one_problem(text: str) -> PlanProblem:
    found = problems(text)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def without_lines(value):
    """A plan as plain data without `line`/`path`, to compare plans read from different text."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: without_lines(v) for k, v in value.items() if k not in ("line", "path")}
    if isinstance(value, list | tuple):
        return [without_lines(v) for v in value]
    return value


# ----------------------------------------------------------------------------- the example plan


def test_example_plan_loads_with_every_section():
    plan = load_plan(EXAMPLE)
    assert plan.name == "Acme Shop"
    assert plan.version == "2026.11.1"
    assert plan.default_mode is Mode.BLOCK
    assert plan.identity is Identity.ANY
    assert plan.required_context == ("library.name",)
    assert "email" in plan.pii
    assert set(plan.sources) == {"web", "ios", "android", "server"}
    assert plan.sources["web"].mode is Mode.FLAG
    assert plan.path == str(EXAMPLE)
    assert plan.funnels[0].steps[-1] == "Order Completed"
    order = plan.events["Order Completed"]
    assert order.mode is Mode.BLOCK and order.sources[0] == "server"
    products = {p.name: p for p in order.properties}["products"]
    assert products.type is PropType.ARRAY and products.required and products.minimum == 1
    assert products.items is not None and products.items.type is PropType.OBJECT
    assert [p.name for p in products.items.properties] == ["product_id", "price", "quantity"]
    currency = {p.name: p for p in plan.events["Product Viewed"].properties}["currency"]
    assert currency.has_default and currency.default == "EUR" and currency.format == "currency"
    assert plan.events["Newsletter Subscribed"].status is Status.DEPRECATED


def test_pages_screens_and_traits_use_event_keys():
    plan = load_plan(EXAMPLE)
    assert plan.events[event_key(CallType.PAGE, "Home")].call is CallType.PAGE
    assert plan.events[event_key(CallType.SCREEN, "Cart")].call is CallType.SCREEN
    traits = plan.events[event_key(CallType.IDENTIFY, None)]
    assert traits.call is CallType.IDENTIFY
    assert [p.name for p in traits.properties] == ["plan", "created_at", "country"]


def test_lines_point_at_names_in_the_file():
    plan = load_plan(EXAMPLE)
    lines = EXAMPLE.read_text().splitlines()
    order = plan.events["Order Completed"]
    assert lines[order.line - 1].strip() == "Order Completed:"
    for prop in order.properties:
        assert lines[prop.line - 1].strip().startswith(f"{prop.name}:")
    products = order.properties[-1]
    assert lines[products.items.line - 1].strip() == "items:"
    assert lines[plan.sources["server"].line - 1].strip() == "server:"


def test_dump_then_parse_gives_the_same_plan():
    plan = load_plan(EXAMPLE)
    again = parse_plan(dump_plan(plan))
    assert without_lines(again) == without_lines(plan)


def test_fixture_plans_load():
    for path in sorted(PLANS.glob("*.yaml")):
        if path.name.startswith("bad_"):
            with pytest.raises(PlanError):
                load_plan(path)
        else:
            assert load_plan(path).events, path


# ----------------------------------------------------------------------------- shorthands


def test_property_shorthands():
    plan = parse_plan(
        HEAD
        + textwrap.dedent("""\
        events:
          Empty:
          Short:
            properties:
              a: string
              b:
              c: {}
        pages: {Home: {}}
        """)
    )
    assert plan.events["Empty"].properties == ()
    props = {p.name: p for p in plan.events["Short"].properties}
    assert props["a"].type is PropType.STRING
    assert props["b"].type is PropType.ANY and props["c"].type is PropType.ANY
    assert "page:Home" in plan.events


def test_yaml_11_booleans_in_names_stay_text():
    plan = parse_plan(HEAD + "events:\n  no:\n    properties:\n      on: {type: string}\n")
    assert plan.events["no"].properties[0].name == "on"


def test_version_is_kept_as_written():
    assert parse_plan("plan: x\nversion: 1.10\n").version == "1.10"


# ----------------------------------------------------------------------------- each mistake


def test_yaml_syntax_error_has_position():
    p = one_problem(HEAD + "events:\n  A: {description: x\n")
    assert (p.file, p.line) == ("plan.yaml", 5)
    assert "YAML syntax" in p.hint


def test_unknown_keys_suggest_the_right_one():
    found = problems(
        HEAD
        + textwrap.dedent("""\
        defaults:
          identiy: any
        events:
          A:
            descripton: x
            properties:
              p: {type: string, requird: true}
        evnets: {}
        """)
    )
    got = [(p.line, p.column, p.hint.split("?")[0]) for p in found]
    assert got == [
        (4, 3, "did you mean `identity`"),
        (7, 5, "did you mean `description`"),
        (9, 25, "did you mean `required`"),
        (10, 1, "did you mean `events`"),
    ]


def test_wrong_value_types():
    found = problems(
        HEAD
        + textwrap.dedent("""\
        pii: email
        events:
          A:
            allow_unplanned_properties: maybe
            properties:
              p: {type: string, required: 1, max_length: -3}
              q: {type: number, min: ten}
          B: [x]
        """)
    )
    assert [(p.line, p.column) for p in found] == [
        (3, 6),
        (6, 33),
        (8, 35),
        (8, 50),
        (9, 30),
        (10, 6),
    ]
    assert "must be a list" in found[0].message
    assert "true or false" in found[1].message
    assert "whole number" in found[3].message
    assert "must be a number" in found[4].message
    assert "must be a mapping" in found[5].message


def test_bad_mode_type_status_identity():
    found = problems(
        HEAD
        + textwrap.dedent("""\
        defaults: {mode: blok, identity: user_id}
        sources:
          web: {mode: flagg}
        events:
          A:
            status: gone
            properties:
              p: {type: strng}
        """)
    )
    assert [(p.line, p.column) for p in found] == [(3, 18), (3, 34), (5, 15), (8, 13), (10, 17)]
    assert found[0].hint.startswith("did you mean `block`?")
    assert found[1].hint.startswith("did you mean `userId`?")
    assert found[2].hint.startswith("did you mean `flag`?")
    assert "active" in found[3].hint
    assert found[4].hint.startswith("did you mean `string`?")


def test_invalid_regex():
    p = one_problem(
        HEAD + "events:\n  A:\n    properties:\n      p: {type: string, pattern: '(a'}\n"
    )
    assert (p.line, p.column) == (6, 34)
    assert "invalid regular expression" in p.message and "missing )" in p.message


def test_pattern_min_max_on_wrong_types():
    found = problems(
        HEAD
        + textwrap.dedent("""\
        events:
          A:
            properties:
              a: {type: integer, pattern: '^1$'}
              b: {type: boolean, min: 1}
              c: {type: number, max_length: 3}
              d: {type: string, items: {type: string}}
              e: {type: array, properties: {}}
              f: {type: object, enum: [1]}
        """)
    )
    assert [p.line for p in found] == [6, 7, 8, 9, 10, 11]


def test_min_greater_than_max():
    p = one_problem(
        HEAD + "events:\n  A:\n    properties:\n      q: {type: integer, min: 5, max: 1}\n"
    )
    assert (p.line, p.column) == (6, 31)
    assert "min 5 is greater than max 1" in p.message


def test_enum_values_of_the_wrong_type():
    found = problems(
        HEAD
        + textwrap.dedent("""\
        events:
          A:
            properties:
              country: {type: string, enum: [DE, NO, FR]}
              size: {type: integer, enum: [1, 2.5, "3"]}
              opt: {type: string, enum: [a, null]}
              none: {type: string, enum: []}
        """)
    )
    assert [(p.line, p.column) for p in found] == [(6, 42), (7, 39), (7, 44), (8, 37), (9, 34)]
    assert "quote it: 'NO'" in found[0].hint
    assert "nullable: true" in found[3].hint
    assert "is empty" in found[4].message


def test_default_must_satisfy_its_own_spec():
    found = problems(
        HEAD
        + textwrap.dedent("""\
        events:
          A:
            properties:
              a: {type: integer, default: x}
              b: {type: string, enum: [x, y], default: z}
              c: {type: string, pattern: '^[A-Z]{3}$', default: eur}
              d: {type: integer, min: 1, max: 9, default: 10}
              e: {type: string, default: null}
              f: {type: string, max_length: 2, default: abc}
              g: {type: object, properties: {k: {type: integer, required: true}}, default: {}}
        """)
    )
    assert [p.line for p in found] == [6, 7, 8, 9, 10, 11, 12]
    assert "not of type integer" in found[0].message
    assert "not one of" in found[1].message
    assert "does not match pattern" in found[2].message
    assert "above max 9" in found[3].message
    assert "not nullable" in found[4].message
    assert "longer than max_length" in found[5].message
    assert "lacks required field k" in found[6].message


def test_valid_defaults_are_accepted():
    plan = parse_plan(
        HEAD
        + "events:\n  A:\n    properties:\n"
        + "      a: {type: integer, min: 1, default: 3}\n"
        + "      b: {type: string, nullable: true, default: null}\n"
        + "      c: {type: array, items: {type: string}, default: [x, y]}\n"
    )
    props = {p.name: p for p in plan.events["A"].properties}
    assert props["a"].default == 3
    assert props["b"].has_default and props["b"].default is None
    assert props["c"].default == ["x", "y"]


def test_funnel_steps_must_be_planned_events():
    found = problems(
        HEAD
        + textwrap.dedent("""\
        funnels:
          - name: buy
            steps: [Viewed, Bought]
          - name: lonely
            steps: [Viewed]
        events:
          Viewed: {}
          Purchased: {}
        """)
    )
    assert [(p.line, p.column) for p in found] == [(5, 21), (7, 12)]
    assert "`Bought` is not a planned event" in found[0].message
    assert "at least two steps" in found[1].message


def test_funnel_steps_can_be_pages():
    plan = parse_plan(
        HEAD
        + "funnels:\n  - {name: f, steps: [page:Home, Bought]}\n"
        + "pages: {Home: {}}\nevents: {Bought: {}}\n"
    )
    assert plan.funnels[0].steps == ("page:Home", "Bought")


def test_undeclared_sources():
    found = problems(
        HEAD
        + textwrap.dedent("""\
        sources:
          web: {}
          ios: {}
        events:
          A: {sources: [web, iso, web]}
          B: {sources: []}
        """)
    )
    assert [(p.line, p.column) for p in found] == [(7, 22), (7, 27), (8, 16)]
    assert found[0].hint.startswith("did you mean `ios`?")
    assert "listed twice" in found[1].message
    assert "remove `sources`" in found[2].hint


def test_sources_referenced_without_a_sources_section_are_fine():
    """Without a `sources:` section the plan does not restrict source names."""
    plan = parse_plan(HEAD + "events:\n  A: {sources: [web]}\n")
    assert plan.events["A"].sources == ("web",)


def test_duplicate_keys_at_every_level():
    found = problems(
        textwrap.dedent("""\
        plan: A
        version: '1'
        sources:
          web: {}
          web: {}
        events:
          E:
            properties:
              p: {type: string, type: integer}
          E: {}
        plan: B
        """)
    )
    got = [(p.line, p.column) for p in found]
    assert got == [(5, 3), (9, 25), (10, 3), (11, 1)]
    assert all("duplicate key" in p.message for p in found)
    assert "first at line 4" in found[0].message


def test_all_problems_are_reported_not_only_the_first():
    assert len(problems(PLANS.joinpath("bad_many_mistakes.yaml").read_text())) >= 8


def test_missing_plan_and_version():
    found = problems("events: {}\n")
    assert {p.message for p in found} == {"the plan has no `plan`", "the plan has no `version`"}


def test_invisible_characters_in_names():
    p = one_problem(HEAD + 'events:\n  "Order\u200fCompleted": {}\n')
    assert (p.line, p.column) == (4, 3)
    assert "U+200F RIGHT-TO-LEFT MARK" in p.message
    assert "\u200f" not in str(p)  # escaped, so the terminal shows it


def test_custom_tags_are_refused():
    found = problems("plan: !!python/object:os.system {}\nversion: !!binary aGk=\n")
    assert any("must be text" in p.message for p in found)
    assert any("tag" in p.message and p.line == 2 for p in found)


# ----------------------------------------------------------------------------- hostile input


def test_empty_and_blank_files():
    for text in ("", "   \n\n", "# only a comment\n", "~\n"):
        p = one_problem(text)
        assert p.message == "plan file is empty"


def test_not_a_mapping():
    assert "must be a mapping" in one_problem("- a\n- b\n").message
    assert "must be a mapping" in one_problem("just text\n").message


def test_aliases_are_refused_billion_laughs():
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i, prev in zip("bcdefghi", "abcdefgh", strict=True):
        text += (
            f"{i}: &{i} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        )
    p = one_problem(text)
    assert (p.line, p.column) == (2, 8)
    assert "aliases" in p.message


def test_deep_nesting_is_bounded():
    p = one_problem("a: " + "[" * 100_000 + "]" * 100_000)
    assert "nesting deeper than" in p.message
    p = one_problem("a: " + "{b: " * 5000 + "1" + "}" * 5000)
    assert "nesting deeper than" in p.message
    # refused at the first node MAX_DEPTH + 1 levels down: the key `b` of the 31st mapping
    assert (p.line, p.column) == (1, 4 + 4 * (MAX_DEPTH - 2) + 1)


def test_nesting_just_under_the_bound_is_a_plan_error_not_a_crash():
    p = problems(
        "plan: x\nversion: '1'\nevents: " + "{a: " * (MAX_DEPTH - 2) + "1" + "}" * (MAX_DEPTH - 2)
    )
    assert p


def test_huge_text_is_refused_before_parsing():
    p = one_problem("plan: '" + "x" * (10 * 1024 * 1024) + "'\n")
    assert "too large" in p.message


def test_big_string_under_the_cap_is_fine():
    plan = parse_plan(HEAD + "events:\n  A: {description: '" + "é" * 200_000 + "'}\n")
    assert len(plan.events["A"].description) == 200_000


def test_huge_file_is_refused(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"plan: x\n" + b"#" * (MAX_PLAN_BYTES + 10))
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert "larger than" in str(info.value)


def test_non_utf8_bytes_have_a_position(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("plan: x\nversion: '1'\nevents:\n  Caf\xe9: {}\n".encode("latin-1"))
    with pytest.raises(PlanError) as info:
        load_plan(path)
    (p,) = info.value.problems
    assert (p.line, p.column) == (4, 6)
    assert "0xe9" in p.message and "UTF-8" in p.hint


def test_utf8_bom_and_unicode_names(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(
        "\ufeffplan: Boutique\nversion: '1'\nevents:\n  Commande passée: {}\n".encode()
    )
    assert "Commande passée" in load_plan(path).events


def test_missing_file_is_a_plan_error(tmp_path):
    with pytest.raises(PlanError) as info:
        load_plan(tmp_path / "nope.yaml")
    assert "cannot read plan" in str(info.value)


def test_control_characters_nul_and_surrogates():
    for bad, code in (("\x00", "U+0000"), ("\ud800", "U+D800"), ("\x1b", "U+001B")):
        p = one_problem(f"plan: a{bad}b\n")
        assert code in p.message and (p.line, p.column) == (1, 8)


def test_huge_integer_and_nan_are_reported():
    found = problems(
        HEAD
        + "events:\n  A:\n    properties:\n"
        + f"      p: {{type: integer, min: 1{'0' * 5000}}}\n"
        + "      q: {type: number, max: .nan}\n"
    )
    assert [p.line for p in found] == [6, 7]


def test_other_yaml_constructs():
    assert one_problem("plan: x\nversion: 1\n---\nplan: y\n").line == 3  # two documents
    found = problems("? [a, b]\n: 1\nplan: x\nversion: '1'\n")
    assert "must be text" in found[0].message
    assert "tag" in one_problem(HEAD + "defaults: !!set {mode}\n").message


# ----------------------------------------------------------------------------- fuzzing

_FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
_KEYS = st.sampled_from(
    [
        "plan",
        "version",
        "events",
        "properties",
        "type",
        "enum",
        "min",
        "max",
        "pattern",
        "default",
        "sources",
        "funnels",
        "steps",
        "name",
        "items",
        "mode",
        "status",
        "pages",
        "traits",
        "string",
        "integer",
        "required",
        "nullable",
        "A",
        "web",
        "defaults",
        "identity",
        "context",
        "pii",
    ]
)
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), _KEYS
)
_YAMLISH = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(_KEYS, children, max_size=5)
    ),
    max_leaves=30,
)


def _only_plan_errors(text: str) -> None:
    try:
        parse_plan(text)
    except PlanError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert isinstance(problem.message, str) and problem.message
            text = str(problem)
            text.encode("utf-8")  # printable: no lone surrogates leak into messages
            assert "\n" not in text  # one problem, one line
            assert problem.hint, text  # every problem says what to change


@_FUZZ
@given(st.text(max_size=300))
def test_fuzz_random_text_only_raises_plan_error(text):
    _only_plan_errors(text)


@_FUZZ
@given(_YAMLISH)
def test_fuzz_random_yaml_structures_only_raise_plan_error(data):
    _only_plan_errors(yaml.safe_dump(data, allow_unicode=True))


@_FUZZ
@given(st.dictionaries(_KEYS, _YAMLISH, max_size=6))
def test_fuzz_plan_shaped_documents_only_raise_plan_error(events):
    doc = {"plan": "x", "version": "1", "events": {"A": {"properties": events}, "B": events}}
    _only_plan_errors(yaml.safe_dump(doc, allow_unicode=True))


@_FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_from_files(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "plan.yaml"
    path.write_bytes(data)
    with contextlib.suppress(PlanError):
        load_plan(path)


def test_the_documented_example_loads():
    doc = (ROOT / "docs" / "tracking-plan.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    plan = parse_plan(example, "docs/tracking-plan.md")
    assert {"Order Completed", "page:Home", "screen:Cart", "identify"} <= set(plan.events)


@_FUZZ
@given(plans())
def test_fuzz_dump_then_parse_round_trips(plan):
    assert without_lines(parse_plan(dump_plan(plan))) == without_lines(plan)


def _shape(node):
    """A node tree as comparable data: tag, position and value of every node."""
    if node is None:
        return None
    mark = (node.start_mark.line, node.start_mark.column)
    if isinstance(node, MappingNode):
        return node.tag, mark, [(_shape(k), _shape(v)) for k, v in node.value]
    if isinstance(node, SequenceNode):
        return node.tag, mark, [_shape(v) for v in node.value]
    return node.tag, mark, node.value


def _slow_compose(text):
    loader = _PlanYamlLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


@_FUZZ
@given(
    st.one_of(_YAMLISH.map(lambda d: yaml.safe_dump(d, allow_unicode=True)), st.text(max_size=80))
)
def test_fuzz_libyaml_and_pure_python_paths_agree(text):
    """The libyaml path builds the same nodes (values, tags, positions) as the careful one."""
    fast = _fast_compose(text)
    if fast is None:
        return  # the careful path handles it alone
    try:
        slow = _slow_compose(text)
    except yaml.YAMLError:
        pytest.fail(f"libyaml accepted what PyYAML refuses: {text!r}")
    assert _shape(fast) == _shape(slow)


_EDIT = st.tuples(
    st.integers(0, 6000),
    st.integers(0, 8),
    st.text(max_size=6)
    | st.sampled_from(
        [": ", "- ", "{", "}", "[", "]", "\n  ", "'", "type: ", "enum: [", "*", "!!"]
    ),
)


@_FUZZ
@given(st.lists(_EDIT, min_size=1, max_size=4))
def test_fuzz_mutated_example_plan_only_raises_plan_error(edits):
    """Small edits anywhere in the real example plan: a plan or a PlanError, nothing else."""
    text = EXAMPLE.read_text()
    for pos, cut, insert in edits:
        pos = min(pos, len(text))
        text = text[:pos] + insert + text[pos + cut :]
    _only_plan_errors(text)
