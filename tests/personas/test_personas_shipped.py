"""What ships: personas and numbers validate clean, schemas committed as generated, docs in step."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from personas_helpers import NUMBERS_FILE, PERSONAS_DIR, REPO

from voicegate.personas import (
    load_numbers,
    persona_files,
    persona_json_schema,
    read_numbers,
    read_persona,
    validate_paths,
)
from voicegate.personas.numbers import numbers_json_schema

SHIPPED = persona_files(PERSONAS_DIR)


def test_the_four_personas_ship() -> None:
    assert {p.stem for p in SHIPPED} >= {
        "bank_teller",
        "support_agent",
        "wise_teacher",
        "mars_astronaut",
    }


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_persona_is_clean_and_within_the_prompt_guidance(path: Path) -> None:
    persona, problems = read_persona(path, PERSONAS_DIR)
    assert problems == [] and persona is not None
    assert persona.prompt_tokens <= 200
    first_line = path.read_text().splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=./persona.schema.json"


def test_bank_teller_knows_what_a_teller_needs() -> None:
    persona, _ = read_persona(PERSONAS_DIR / "bank_teller.yaml")
    assert persona is not None
    prompt = persona.text_prompt
    for fact in (
        "Sanni",
        "First Neuron Bank",
        "9 am to 5 pm",
        "Savings",
        "block",
        "PIN",
        "password",
        "last four digits",
        "specialist",
    ):
        assert fact in prompt, fact


def test_shipped_numbers_are_clean() -> None:
    numbers, problems = read_numbers(NUMBERS_FILE, {p.stem for p in SHIPPED})
    assert problems == [] and numbers is not None
    assert NUMBERS_FILE.read_text().splitlines()[0] == (
        "# yaml-language-server: $schema=./numbers.schema.json"
    )


def test_validate_paths_default_targets_are_clean() -> None:
    assert validate_paths([PERSONAS_DIR, NUMBERS_FILE], personas_dir=PERSONAS_DIR) == []


@pytest.mark.parametrize(
    ("committed", "generate"),
    [
        (PERSONAS_DIR / "persona.schema.json", persona_json_schema),
        (REPO / "telephony" / "numbers.schema.json", numbers_json_schema),
    ],
    ids=["persona", "numbers"],
)
def test_committed_schema_equals_the_generated_one(committed: Path, generate) -> None:
    assert json.loads(committed.read_text()) == generate(), (
        f"regenerate: voicegate personas schema{' --numbers' if 'numbers' in committed.name else ''}"
        f" > {committed.relative_to(REPO)}"
    )


def test_schema_describes_presets_and_forbids_unknown_keys() -> None:
    schema = persona_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"description", "text_prompt", "voice"}
    presets = schema["properties"]["voice"]["anyOf"][0]["enum"]
    assert len(presets) == 18 and "VARM4" in presets


def _yaml_blocks(markdown: Path) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", markdown.read_text(), re.S)


def test_telephony_readme_example_is_a_valid_numbers_file(tmp_path: Path) -> None:
    [block] = _yaml_blocks(REPO / "telephony" / "README.md")
    path = tmp_path / "numbers.yaml"
    path.write_text(block)
    assert load_numbers(path, {p.stem for p in SHIPPED}).sip_users["1000"] == "wise_teacher"


def test_readme_persona_example_matches_the_defaults(tmp_path: Path) -> None:
    block = _yaml_blocks(REPO / "README.md")[0]
    path = tmp_path / "example.yaml"
    path.write_text(block.replace(" ...", "."))
    persona, problems = read_persona(path)
    assert persona is not None and problems == []
    assert persona.sampling.model_dump() == type(persona.sampling)().model_dump()
    assert persona.limits.model_dump() == type(persona.limits)().model_dump()


def test_readme_call_flow_example_is_the_bank_tellers(tmp_path: Path) -> None:
    [flow] = [b for b in _yaml_blocks(REPO / "README.md") if b.startswith("call_flow:")]
    path = tmp_path / "flow.yaml"
    path.write_text("description: d\ntext_prompt: t\nvoice: NATF0\n" + flow)
    persona, problems = read_persona(path)
    assert persona is not None and problems == []
    teller, _ = read_persona(PERSONAS_DIR / "bank_teller.yaml", PERSONAS_DIR)
    assert teller is not None and persona.call_flow == teller.call_flow


def test_the_wav_voice_example_resolves_inside_the_folder() -> None:
    persona, problems = read_persona(PERSONAS_DIR / "robot_concierge.yaml", PERSONAS_DIR)
    assert problems == [] and persona is not None and persona.voice_path is not None
    assert persona.voice_path.is_relative_to(PERSONAS_DIR.resolve())
    assert persona.to_prompt().voice_path == persona.voice_path
