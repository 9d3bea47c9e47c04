"""Per-call variables in a persona's ``text_prompt``: the syntax, the check, the rendering.

Syntax: ``{name}`` is replaced by the call's value of the variable ``name`` (lowercase letters,
digits and ``_``, starting with a letter). ``{{`` and ``}}`` are a literal ``{`` and ``}``. Any
other brace is an error. A variable must be declared in the persona's ``variables`` section
(with a default) unless it is one the gateway always knows (``BUILTIN_VARIABLES``).

Values are untrusted (a caller can type into a web form, a carrier passes headers through):
``clean_value`` drops control characters, angle brackets and braces (so no value can write the
prompt's ``<system>`` marker or another variable), folds whitespace and cuts to a length.

Owns: ``PromptTemplate``, ``TemplateError``, ``clean_value``. Pure: imports the standard
library only.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "BUILTIN_VARIABLES",
    "DEFAULT_MAX_CHARS",
    "VARIABLE_NAME",
    "PromptTemplate",
    "TemplateError",
    "clean_value",
]

VARIABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# filled by the gateway on every call (from the leg), never need a declaration
BUILTIN_VARIABLES: tuple[str, ...] = ("caller_number", "called_number")
DEFAULT_MAX_CHARS = 64
# characters a value may never carry into the prompt: the <system> marker's brackets, braces
_DROPPED = str.maketrans("", "", "<>{}\uff1c\uff1e\u2039\u203a")
_SPACES = re.compile(r"\s+")


class TemplateError(ValueError):
    """A malformed ``text_prompt`` template; ``offset`` is the character index in the text."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True, slots=True)
class _Use:
    name: str
    offset: int  # index of the '{' in the template


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """A parsed prompt: literal text and variable uses, in order.

    ``pieces`` alternates literal text (even indices) and variable names (odd indices).
    """

    pieces: tuple[str, ...]
    uses: tuple[_Use, ...]

    @classmethod
    def parse(cls, text: str) -> PromptTemplate:
        """Parse ``text``; raises TemplateError at the first malformed brace."""
        pieces: list[str] = []
        uses: list[_Use] = []
        literal: list[str] = []
        i, n = 0, len(text)
        while i < n:
            ch = text[i]
            if ch == "{" and text.startswith("{{", i):
                literal.append("{")
                i += 2
            elif ch == "}" and text.startswith("}}", i):
                literal.append("}")
                i += 2
            elif ch == "{":
                end = text.find("}", i + 1)
                name = text[i + 1 : end] if end > 0 else ""
                if end < 0 or not VARIABLE_NAME.match(name):
                    shown = text[i : (end + 1 if 0 < end < i + 40 else i + 20)]
                    raise TemplateError(
                        f"'{shown}' is not a variable: write {{name}} (lowercase letters, digits "
                        "and '_') or '{{' for a literal brace",
                        i,
                    )
                pieces.append("".join(literal))
                literal = []
                pieces.append(name)
                uses.append(_Use(name, i))
                i = end + 1
            elif ch == "}":
                raise TemplateError("unmatched '}': write '}}' for a literal brace", i)
            else:
                literal.append(ch)
                i += 1
        pieces.append("".join(literal))
        return cls(tuple(pieces), tuple(uses))

    @property
    def names(self) -> tuple[str, ...]:
        """The variables used, each once, in order of first use."""
        return tuple(dict.fromkeys(u.name for u in self.uses))

    @property
    def has_variables(self) -> bool:
        return bool(self.uses)

    def undeclared(self, declared: Mapping[str, object]) -> list[tuple[str, int]]:
        """Uses of variables neither declared nor built in: (name, offset) each."""
        return [
            (u.name, u.offset)
            for u in self.uses
            if u.name not in declared and u.name not in BUILTIN_VARIABLES
        ]

    def render(self, values: Mapping[str, str]) -> str:
        """The prompt with every variable replaced (a missing value renders as '')."""
        parts = list(self.pieces)
        for i in range(1, len(parts), 2):
            parts[i] = values.get(parts[i], "")
        return "".join(parts)


def clean_value(value: str, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """A value safe to put in a prompt: no control characters, no ``<``/``>``/braces (so no
    ``<system>`` marker), whitespace folded to single spaces, at most ``max_chars``."""
    if not value:
        return ""
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in value[: max_chars * 4]
        if ch.isspace() or unicodedata.category(ch)[0] != "C"
    )
    kept = _SPACES.sub(" ", kept.translate(_DROPPED)).strip()
    return kept[:max_chars].rstrip()
