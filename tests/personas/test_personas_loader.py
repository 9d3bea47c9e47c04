"""Persona loading: each captured bad file's problems at their exact line/col, suggestions, API."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from personas_helpers import DATA_DIR, EXPECT, PERSONAS_DIR

import voicegate.personas as personas_pkg
from voicegate.engine.base import PersonaPrompt, SamplingParams
from voicegate.errors import PersonaValidationError
from voicegate.personas import Problem, load_persona, read_persona

CASES = sorted(DATA_DIR.glob("*.yaml"))


def expectations(path: Path) -> list[tuple[int, int, str, str, str | None]]:
    out = []
    for line in path.read_bytes().decode("ascii", "replace").splitlines():
        match = EXPECT.match(line)
        if match:
            line_no, col, severity, text, hint = match.groups()
            out.append((int(line_no), int(col), severity, text, hint))
    return out


def test_there_is_a_captured_case_for_each_kind() -> None:
    names = {p.stem for p in CASES}
    for kind in (
        "misspelt_key",
        "syntax_unclosed_quote",
        "syntax_tab",
        "duplicate_key",
        "voice_parent_path",
        "voice_absolute_path",
        "unknown_voice",
        "out_of_range",
        "wrong_types",
        "not_utf8",
        "empty",
        "long_prompt",
    ):
        assert kind in names


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.name)
def test_captured_file_reports_every_problem_at_its_position(path: Path) -> None:
    expected = expectations(path)
    assert expected, f"{path.name} states no '# expect:' lines"
    persona, problems = read_persona(path)
    got = [(p.line, p.col, p.severity, p.suggestion) for p in problems]
    assert got == [(line, col, sev, hint) for line, col, sev, _, hint in expected], [
        str(p) for p in problems
    ]
    for problem, (_, _, _, text, _) in zip(problems, expected, strict=True):
        assert problem.message.startswith(text), str(problem)
    if any(sev == "error" for _, _, sev, _, _ in expected):
        assert persona is None
    else:
        assert persona is not None and persona.name == path.stem


def test_problem_line_format_with_suggestion() -> None:
    path = DATA_DIR / "misspelt_key.yaml"
    _, problems = read_persona(path)
    lines = [str(p) for p in problems]
    assert f"{path}:4:1: error: unknown key 'text_promt' (did you mean 'text_prompt'?)" in lines
    assert f"{path}:3:1: error: missing required key 'text_prompt'" in lines


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("descripton", "description"),
        ("voise", "voice"),
        ("Text_Prompt", "text_prompt"),
        ("sampling_", "sampling"),
        ("text_top_k", "sampling.text_top_k"),
        ("max_duration_s", "limits.max_duration_s"),
        ("system_prompt", "text_prompt"),
    ],
)
def test_misspelt_top_level_key_gets_a_suggestion(tmp_path: Path, key: str, hint: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"description: d\ntext_prompt: t\nvoice: NATF0\n{key}: 1\n")
    _, problems = read_persona(path)
    unknown = [p for p in problems if "unknown key" in p.message]
    assert [(p.line, p.col, p.suggestion) for p in unknown] == [(4, 1, hint)]


def test_unrelated_key_gets_no_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("description: d\ntext_prompt: t\nvoice: NATF0\nzzzqqq: 1\n")
    _, problems = read_persona(path)
    assert [(p.message, p.suggestion) for p in problems] == [("unknown key 'zzzqqq'", None)]


def test_load_persona_raises_with_every_problem() -> None:
    with pytest.raises(PersonaValidationError) as info:
        load_persona(DATA_DIR / "out_of_range.yaml")
    problems = info.value.problems
    assert len(problems) == 3 and all(isinstance(p, Problem) for p in problems)
    assert "3 error(s)" in str(info.value)
    assert ":8:21: error: sampling.text_temperature" in str(info.value)


def test_defaults_and_prompt_for_the_engine(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text("description: d\ntext_prompt: '  You are kind.  '\nvoice: VARM4\n")
    persona = load_persona(path)
    assert persona.name == "plain"
    assert persona.sampling.to_params() == SamplingParams(0.7, 25, 0.8, 250)
    assert persona.limits.max_duration_s == 600 and persona.limits.silence_timeout_s == 30
    assert persona.to_prompt() == PersonaPrompt(
        key="plain", text_prompt="  You are kind.  ", voice="VARM4", sampling=SamplingParams()
    )
    assert persona.prompt_tokens == 4  # 3 words x 1.3, rounded up (the estimate)
    assert persona.source == path and len(persona.digest) == 64


def test_sampling_override_reaches_the_engine_prompt(tmp_path: Path) -> None:
    path = tmp_path / "hot.yaml"
    path.write_text(
        "description: d\ntext_prompt: t\nvoice: NATM3\n"
        "sampling: {text_temperature: 0.9, text_top_k: 50, audio_temperature: 0, audio_top_k: 1}\n"
    )
    assert load_persona(path).to_prompt().sampling == SamplingParams(0.9, 50, 0.0, 1)


def test_model_tokenizer_count_is_used_and_named(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("description: d\ntext_prompt: a short prompt\nvoice: NATF0\n")
    persona, problems = read_persona(path, count_tokens=lambda text: 201)
    assert persona is not None and persona.prompt_tokens == 201
    assert [p.severity for p in problems] == ["warning"]
    assert "201 tokens (counted with the model tokenizer)" in problems[0].message
    assert (problems[0].line, problems[0].col) == (2, 14)


def test_a_failing_tokenizer_falls_back_to_the_estimate(tmp_path: Path) -> None:
    def broken(text: str) -> int:
        raise RuntimeError("no model")

    path = tmp_path / "p.yaml"
    path.write_text("description: d\ntext_prompt: a short prompt\nvoice: NATF0\n")
    persona, problems = read_persona(path, count_tokens=broken)
    assert persona is not None and persona.prompt_tokens == 4 and problems == []


def test_anchors_and_merge_keys_are_plain_yaml(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "description: &d Calm.\ntext_prompt: *d\nvoice: NATF1\n"
        "limits:\n  <<: {max_duration_s: 120}\n  silence_timeout_s: 20\n"
    )
    persona = load_persona(path)
    assert persona.text_prompt == "Calm." and persona.limits.max_duration_s == 120


def test_billion_laughs_is_cheap_and_rejected(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "lol.yaml"
    path.write_text("\n".join(lines) + "\ntext_prompt: *a8\n")
    persona, problems = read_persona(path)
    assert persona is None
    assert any(p.message == "text_prompt: Input should be a valid string" for p in problems)


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("description: d\n# " + "x" * 300_000 + "\n")
    _, problems = read_persona(path)
    assert [p.message.split(";")[0] for p in problems] == ["file is 300018 bytes"]


def test_unreadable_path_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    _, problems = read_persona(tmp_path / "absent.yaml")
    assert [(p.line, p.col, p.severity) for p in problems] == [(1, 1, "error")]
    assert problems[0].message.startswith("cannot read")


def test_shipped_persona_copied_elsewhere_still_loads(tmp_path: Path) -> None:
    shutil.copy(PERSONAS_DIR / "bank_teller.yaml", tmp_path / "bank_teller.yaml")
    persona = load_persona(tmp_path / "bank_teller.yaml")
    assert "First Neuron Bank" in persona.text_prompt and persona.voice == "NATF2"


def test_public_exports() -> None:
    assert set(personas_pkg.__all__) == {n for n in dir(personas_pkg) if not n.startswith("_")} - {
        "cli",
        "loader",
        "numbers",
        "problems",
        "schema",
        "store",
        "template",
        "tokens",
        "validate",
        "watch",
        "wav",
        "yamldoc",
        "annotations",
    }
