"""Problems found in a persona or numbers file: where (file:line:col), how bad, what, and a hint.

Owns: the Problem record and its one-line format. Imports nothing else of voicegate.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["Problem", "Severity", "format_problems", "has_errors", "suggest"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem at a 1-based line and column of a file.

    ``str(problem)`` is the compiler-style line ``file:line:col: error: message (did you mean 'x'?)``.
    """

    file: Path
    line: int
    col: int
    severity: Severity
    message: str
    suggestion: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        hint = f" (did you mean '{self.suggestion}'?)" if self.suggestion else ""
        return f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.message}{hint}"


def has_errors(problems: Iterable[Problem]) -> bool:
    """True when any problem is an error (warnings alone do not reject a file)."""
    return any(p.is_error for p in problems)


def format_problems(problems: Iterable[Problem]) -> str:
    """The problems one per line, in file order."""
    ordered = sorted(problems, key=lambda p: (str(p.file), p.line, p.col))
    return "\n".join(str(p) for p in ordered)


def suggest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The closest of ``choices`` to ``word`` (case-insensitive), or None when nothing is close."""
    by_folded: dict[str, str] = {}
    for choice in choices:
        by_folded.setdefault(choice.casefold(), choice)
    matches = difflib.get_close_matches(word.casefold(), list(by_folded), n=1, cutoff=cutoff)
    return by_folded[matches[0]] if matches else None
