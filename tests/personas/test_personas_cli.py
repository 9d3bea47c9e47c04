"""`voicegate personas validate|schema`: exit codes and the file:line:col output format."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from personas_helpers import DATA_DIR, NUMBERS_FILE, PERSONAS_DIR
from typer.testing import CliRunner

from voicegate.cli import app

LINE = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning): (?P<msg>.+)$")


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("VOICEGATE_PERSONAS_DIR", str(PERSONAS_DIR))
    monkeypatch.setenv("VOICEGATE_NUMBERS_FILE", str(NUMBERS_FILE))
    monkeypatch.delenv("VOICEGATE_MODEL_DIR", raising=False)
    return CliRunner()


def test_validate_defaults_to_the_shipped_files_and_passes(runner: CliRunner) -> None:
    result = runner.invoke(app, ["personas", "validate"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("0 error(s), 0 warning(s) in ")


def test_validate_reports_errors_with_positions_and_exits_1(runner: CliRunner) -> None:
    bad = DATA_DIR / "misspelt_key.yaml"
    result = runner.invoke(app, ["personas", "validate", str(bad), str(PERSONAS_DIR)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines == [
        f"{bad}:3:1: error: missing required key 'text_prompt'",
        f"{bad}:4:1: error: unknown key 'text_promt' (did you mean 'text_prompt'?)",
    ]
    assert "2 error(s), 0 warning(s)" in result.stderr


def test_validate_warnings_alone_exit_0(runner: CliRunner) -> None:
    result = runner.invoke(app, ["personas", "validate", str(DATA_DIR / "long_prompt.yaml")])
    assert result.exit_code == 0
    [line] = result.stdout.splitlines()
    match = LINE.match(line)
    assert match and match["sev"] == "warning" and (match["line"], match["col"]) == ("4", "14")


def test_validate_a_whole_folder_of_bad_files_formats_every_line(runner: CliRunner) -> None:
    result = runner.invoke(app, ["personas", "validate", str(DATA_DIR)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) >= 25
    assert all(LINE.match(line) for line in lines), lines


def test_validate_numbers_file_against_the_personas_folder(
    runner: CliRunner, tmp_path: Path
) -> None:
    numbers = tmp_path / "numbers.yaml"
    numbers.write_text('default: suport_agent\nnumbers:\n  "+1 415 555 0100": bank_teller\n')
    result = runner.invoke(app, ["personas", "validate", str(numbers)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{numbers}:3:3: error: '+1 415 555 0100' is not an E.164 number ('+', country code, "
        "up to 15 digits) (did you mean '+14155550100'?)",
        f"{numbers}:1:10: error: unknown persona 'suport_agent' (known: bank_teller, "
        "mars_astronaut, robot_concierge, support_agent, wise_teacher) "
        "(did you mean 'support_agent'?)",
    ]


def test_validate_missing_path(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["personas", "validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert result.stdout == f"{tmp_path / 'nope.yaml'}:1:1: error: no such file or folder\n"


def test_validate_uses_the_release_tokenizer_when_configured(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voicegate.engine.tokenizer import RELEASE_TOKENIZER_NAME, TINY_TOKENIZER_PATH

    # the tiny model stands in for the release one: same file name, a small vocabulary
    shutil.copy(TINY_TOKENIZER_PATH, tmp_path / RELEASE_TOKENIZER_NAME)
    monkeypatch.setenv("VOICEGATE_MODEL_DIR", str(tmp_path))
    path = tmp_path / "wordy.yaml"
    path.write_text("description: d\nvoice: NATF0\ntext_prompt: " + "bank " * 190 + "\n")
    result = runner.invoke(app, ["personas", "validate", str(path)])
    assert result.exit_code == 0
    assert "counted with the model tokenizer" in result.stdout


def test_schema_prints_the_committed_json_schema(runner: CliRunner) -> None:
    result = runner.invoke(app, ["personas", "schema"])
    assert result.exit_code == 0
    assert result.stdout == (PERSONAS_DIR / "persona.schema.json").read_text()
    assert json.loads(result.stdout)["title"] == "VoiceGate persona"
    numbers = runner.invoke(app, ["personas", "schema", "--numbers"])
    assert json.loads(numbers.stdout)["title"] == "VoiceGate numbers"


def test_numbers_are_checked_against_the_folder_given_with_them(
    runner: CliRunner, tmp_path: Path
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "only_one.yaml").write_text("description: d\ntext_prompt: t\nvoice: NATF0\n")
    numbers = tmp_path / "numbers.yaml"
    numbers.write_text("default: only_one\n")
    result = runner.invoke(app, ["personas", "validate", str(folder), str(numbers)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["personas", "validate", str(numbers)])  # shipped folder
    assert result.exit_code == 1 and "unknown persona 'only_one'" in result.stdout
