"""README stays in step: its settings table with Settings, its test command with .ci/run."""

from __future__ import annotations

import re

from personas_helpers import REPO

from voicegate.config import Settings

README = (REPO / "README.md").read_text()


def test_settings_table_lists_exactly_the_settings() -> None:
    listed = re.findall(r"^\| `VOICEGATE_([A-Z0-9_]+)` \|", README, re.M)
    expected = [name.upper() for name in Settings.model_fields]
    missing = sorted(set(expected) - set(listed))
    extra = sorted(set(listed) - set(expected))
    assert not missing and not extra, (
        f"README settings table: missing {missing}, not settings {extra}; "
        "run `python scripts/settings_table.py --write`"
    )
    assert len(listed) == len(set(listed))


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    command = "bash scripts/check"
    assert command in ci.splitlines()
    assert f". .venv/bin/activate && {command}" in README
    assert "bash scripts/install.sh" in ci and "bash scripts/install.sh" in README
    # the checks fail the build: none of them is allowed to fail quietly
    check = (REPO / "scripts" / "check").read_text()
    assert "set -euo pipefail" in check and "|| true" not in check
    for step in (
        "ruff format --check voicegate tests bench",
        "ruff check voicegate tests bench",
        "mypy --strict voicegate",
        'python -m pytest -q -W error -p no:cacheprovider "$@"',
    ):
        assert step in check.splitlines()


def test_readme_has_exactly_two_setup_steps() -> None:
    section = README.split("## Set up and run", 1)[1].split("##", 1)[0]
    steps = re.findall(r"^(\d+)\. ", section, re.M)
    assert steps == ["1", "2"]
    assert "`bash scripts/install.sh`" in section
    assert "`. .venv/bin/activate && voicegate demo`" in section
