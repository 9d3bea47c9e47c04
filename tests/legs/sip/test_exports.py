"""The public surface of voicegate.legs.sip (STYLE rule 5) and its import rules (rules 1, 2)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import voicegate.legs.sip as sip

PACKAGE = Path(sip.__file__).parent
PURE = ("message", "sdp", "rtp", "auth", "metrics")


def imports_of(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_all_is_the_sorted_public_names() -> None:
    assert sip.__all__ == sorted(sip.__all__)
    public = {n for n in dir(sip) if not n.startswith("_") and n[0].isupper()}
    assert public == set(sip.__all__)


@pytest.mark.parametrize("module", PURE)
def test_wire_format_modules_are_pure(module: str) -> None:
    names = imports_of(module)
    assert "asyncio" not in names and "socket" not in names
    assert {n for n in names if n.startswith("voicegate")} <= {"voicegate.errors"}


@pytest.mark.parametrize("module", sorted(p.stem for p in PACKAGE.glob("*.py")))
def test_no_module_imports_the_engine(module: str) -> None:
    assert not [n for n in imports_of(module) if n.startswith("voicegate.engine")]
