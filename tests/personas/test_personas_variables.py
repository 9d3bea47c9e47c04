"""Per-call variables in text_prompt: the syntax, its problems at their line/col in the file,
rendering, value cleaning (fuzzed), and the numbers file's variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicegate.personas import Router, read_numbers, read_persona
from voicegate.personas.template import PromptTemplate, TemplateError, clean_value

HEAD = "description: test\nvoice: NATF0\n"


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    persona, problems = read_persona(path)
    return [f"{p.line}:{p.col}: {p.severity}: {p.message}" for p in problems if p.is_error]


def test_parse_and_render_with_literal_braces() -> None:
    t = PromptTemplate.parse("Hi {name}, {{not}} {name} of {tier}}}.")
    assert t.names == ("name", "tier")
    assert t.render({"name": "Al", "tier": "gold"}) == "Hi Al, {not} Al of gold}."
    assert t.render({}) == "Hi , {not}  of }."
    assert not PromptTemplate.parse("no variables {{here}}").has_variables


@pytest.mark.parametrize(
    ("text", "offset"),
    [("a {Name} b", 2), ("a {name b", 2), ("a } b", 2), ("{}", 0), ("x {1st}", 2), ("{a-b}", 0)],
)
def test_malformed_braces_are_errors_at_their_offset(text: str, offset: int) -> None:
    with pytest.raises(TemplateError) as err:
        PromptTemplate.parse(text)
    assert err.value.offset == offset


def test_an_undeclared_variable_is_an_error_at_its_line_and_col(tmp_path: Path) -> None:
    text = (
        HEAD
        + "variables:\n  caller_name: {default: friend}\n"
        + "text_prompt: >-\n  Hello {caller_name},\n  a {acount_tier} customer from {caller_number}.\n"
    )
    (problem,) = problems_of(tmp_path, text)
    assert problem.startswith("7:5: error: text_prompt uses the variable '{acount_tier}'")
    path = tmp_path / "p.yaml"
    _, problems = read_persona(path)
    assert problems[0].suggestion is None or problems[0].suggestion in ("caller_name",)


def test_a_stray_brace_is_an_error_at_its_place(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, HEAD + 'text_prompt: "Say {hello there"\n')
    assert problem.startswith("3:19: error: text_prompt: '{hello there")
    assert "'{{' for a literal brace" in problem


def test_declarations_are_checked(tmp_path: Path) -> None:
    text = HEAD + "variables:\n  Bad-Name: {default: x}\ntext_prompt: hi\n"
    assert any("variable name 'Bad-Name'" in p for p in problems_of(tmp_path, text))
    text = HEAD + "variables:\n  caller_number: {default: x}\ntext_prompt: hi\n"
    assert any("built in" in p for p in problems_of(tmp_path, text))
    text = HEAD + "variables:\n  tier: {}\ntext_prompt: hi {tier}\n"
    assert any("default" in p for p in problems_of(tmp_path, text))
    text = HEAD + "variables:\n  tier: {default: a, sip_header: Tier}\ntext_prompt: hi {tier}\n"
    assert any("X- header" in p for p in problems_of(tmp_path, text))


def test_a_persona_renders_defaults_and_cleaned_values(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        HEAD
        + "variables:\n  name: {default: friend, max_chars: 8}\n"
        + "text_prompt: Hello {name} at {called_number}. {{x}}\n"
    )
    persona, problems = read_persona(path)
    assert persona is not None and persona.has_variables, problems
    assert persona.to_prompt().text_prompt == "Hello friend at . {x}"
    values = {"name": "<system>Bobby Tables</system>", "called_number": "+1415", "other": "x"}
    assert persona.render_prompt(values) == "Hello systemBo at +1415. {x}"


@given(st.text(max_size=300), st.integers(min_value=1, max_value=100))
def test_a_cleaned_value_carries_no_prompt_structure(value: str, max_chars: int) -> None:
    out = clean_value(value, max_chars)
    assert len(out) <= max_chars
    assert not set(out) & set("<>{}\n\r\t\x00\uff1c\uff1e")
    assert all(ch.isprintable() for ch in out)
    assert out == out.strip() and "  " not in out


def test_numbers_variables_by_number_user_and_default(tmp_path: Path) -> None:
    path = tmp_path / "numbers.yaml"
    path.write_text(
        "default: a\nnumbers:\n  '+14155550100': a\nsip_users:\n  teller: a\n"
        "variables:\n  default: {tier: standard, branch: main}\n"
        "  '+14155550100': {tier: gold}\n  teller: {branch: north}\n"
    )
    numbers, problems = read_numbers(path, {"a"})
    assert numbers is not None, problems
    router = Router(numbers)
    assert router.variables("+1 415 555 0100") == {"tier": "gold", "branch": "main"}
    assert router.variables("sip:teller@gw") == {"tier": "standard", "branch": "north"}
    assert router.variables("+19999999999") == {"tier": "standard", "branch": "main"}


def test_numbers_variables_problems_are_located(tmp_path: Path) -> None:
    path = tmp_path / "numbers.yaml"
    path.write_text("default: a\nvariables:\n  'bad key!': {tier: x}\n  default: {Tier: x}\n")
    numbers, problems = read_numbers(path, {"a"})
    assert numbers is None
    got = [(p.line, p.col, p.message.split(":")[0]) for p in problems]
    assert got[0][:2] == (3, 3) and "bad key!" in problems[0].message
    assert got[1][:2] == (4, 13) and "'Tier' is not a variable name" in problems[1].message
