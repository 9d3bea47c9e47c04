"""``voicegate personas validate``: check persona folders, persona files and numbers files.

Owns: ``validate_paths``. File I/O only; imports loader and numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from voicegate.personas.loader import PERSONA_SUFFIXES, persona_files, read_persona
from voicegate.personas.numbers import read_numbers
from voicegate.personas.problems import Problem
from voicegate.personas.tokens import TokenCounter, estimate_tokens

__all__ = ["NUMBERS_STEM", "validate_paths"]

NUMBERS_STEM = "numbers"  # a YAML file named numbers.yaml is a numbers file, not a persona


def _is_numbers_file(path: Path, numbers_file: Path | None) -> bool:
    if numbers_file is not None and path.resolve() == numbers_file.resolve():
        return True
    return path.stem == NUMBERS_STEM


def validate_paths(
    paths: Iterable[Path],
    *,
    personas_dir: Path,
    numbers_file: Path | None = None,
    count_tokens: TokenCounter = estimate_tokens,
) -> list[Problem]:
    """Every problem of every given folder or file (errors and warnings, in the given order).

    A folder is checked as a personas folder (each ``*.yaml``/``*.yml`` in it, and two files of
    one name). A file named like ``numbers_file`` (or ``numbers.yaml``) is a numbers file whose
    persona names are checked against the first folder given, else ``personas_dir``; any other
    file is a persona whose voice clip is resolved in its own folder.
    """
    paths = list(paths)
    # persona names for numbers files: from a folder given alongside, else from personas_dir
    names_dir = next((p for p in paths if p.is_dir()), personas_dir)
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            seen: dict[str, Path] = {}
            for file in persona_files(path):
                if file.stem in seen:
                    problems.append(
                        Problem(
                            file,
                            1,
                            1,
                            "error",
                            f"persona '{file.stem}' is also defined by {seen[file.stem].name}",
                        )
                    )
                    continue
                seen[file.stem] = file
                problems += read_persona(file, path, count_tokens)[1]
        elif not path.exists():
            problems.append(Problem(path, 1, 1, "error", "no such file or folder"))
        elif _is_numbers_file(path, numbers_file):
            known = {p.stem for p in persona_files(names_dir)}
            problems += read_numbers(path, known, names_dir)[1]
        elif path.suffix in PERSONA_SUFFIXES:
            problems += read_persona(path, path.parent, count_tokens)[1]
        else:
            problems.append(
                Problem(path, 1, 1, "error", "not a persona or numbers file (.yaml or .yml)")
            )
    return problems
