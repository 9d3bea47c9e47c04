"""Fuzzing: no text, bytes or YAML structure makes the loaders raise; only problems come back."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicegate.errors import PersonaValidationError
from voicegate.personas import (
    NumbersMap,
    Problem,
    Router,
    load_persona,
    read_numbers,
    read_persona,
)

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
KEYS = [
    "description",
    "text_prompt",
    "voice",
    "sampling",
    "limits",
    "text_top_k",
    "default",
    "numbers",
    "sip_users",
    "max_duration_s",
    "audio_temperature",
    "+14155550100",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["NATF0", "voices/x.wav", "../x.wav", "/abs.wav", "bank_teller"])
)
documents = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=25,
)
yaml_fragments = st.lists(
    st.sampled_from(
        [
            "a:",
            " b",
            "- ",
            "[",
            "]",
            "{",
            "}",
            "&x ",
            "*x",
            "<<: ",
            "'",
            '"',
            "\n",
            "\t",
            "!!binary ",
            "!!timestamp ",
            "!!python/object:os.system ",
            "? ",
            "---",
            "...",
            "%YAML 1.1",
            "#",
            ": ",
            ",",
            "|",
            ">",
            "voice: ",
            "text_prompt: ",
            "\x07",
            "\ufeff",
            "\\",
        ]
    ),
    max_size=30,
).map("".join)


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def check_persona(folder: Path, raw: bytes) -> None:
    path = folder / "fuzz.yaml"
    path.write_bytes(raw)
    persona, problems = read_persona(path, folder)
    assert all(isinstance(p, Problem) and p.line >= 1 and p.col >= 1 for p in problems)
    assert (persona is None) == any(p.is_error for p in problems)
    try:
        load_persona(path, folder)
    except PersonaValidationError as exc:
        assert exc.problems
    numbers, problems = read_numbers(path, {"bank_teller"})
    assert (numbers is None) == any(p.is_error for p in problems)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(folder: Path, raw: bytes) -> None:
    check_persona(folder, raw)


@FUZZ
@given(st.text(max_size=300))
def test_random_text(folder: Path, text: str) -> None:
    check_persona(folder, text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(yaml_fragments)
def test_yaml_shaped_noise(folder: Path, text: str) -> None:
    check_persona(folder, text.encode("utf-8"))


@FUZZ
@given(documents)
def test_well_formed_yaml_of_any_shape(folder: Path, doc: object) -> None:
    check_persona(folder, yaml.safe_dump(doc, allow_unicode=True).encode("utf-8"))


ROUTER = Router(NumbersMap(default="d", numbers={"+14155550100": "n"}, sip_users={"u": "s"}))


@FUZZ
@given(
    st.text(max_size=60)
    | st.from_regex(r"(sips?:|tel:)?\+?[0-9 ()\-.]{0,20}(@[a-z.]{0,10})?(;[a-z=]{0,10})?")
)
def test_route_never_raises_and_answers_a_configured_persona(to: str) -> None:
    assert ROUTER.route(to) in {"d", "n", "s"}
