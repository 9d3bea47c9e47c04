"""The ``voicegate personas`` commands: ``validate`` and ``schema``.

Owns: the typer sub-app that ``voicegate.cli`` builds (handing it how to count prompt tokens)
and mounts. Imports personas, contracts and config only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from voicegate.config import Settings
from voicegate.contracts import TokenCounter
from voicegate.personas.numbers import numbers_json_schema
from voicegate.personas.schema import persona_json_schema
from voicegate.personas.tokens import estimate_tokens
from voicegate.personas.validate import validate_paths

__all__ = ["build_personas_app", "schema_text"]


def schema_text(numbers: bool = False) -> str:
    """The JSON Schema as committed in personas/persona.schema.json (or telephony/numbers...)."""
    schema = numbers_json_schema() if numbers else persona_json_schema()
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def build_personas_app(
    token_counter: Callable[[Path | None], TokenCounter] = lambda _: estimate_tokens,
) -> typer.Typer:
    """The sub-app; ``token_counter(model_dir)`` gives what ``validate`` counts prompts with."""
    personas_app = typer.Typer(help="Check persona and numbers files; print their JSON Schema.")

    @personas_app.command()
    def validate(
        paths: Annotated[
            list[Path] | None,
            typer.Argument(
                help="Persona folders or files, or numbers files "
                "(default: VOICEGATE_PERSONAS_DIR and VOICEGATE_NUMBERS_FILE)."
            ),
        ] = None,
    ) -> None:
        """Report every problem as file:line:col: error|warning: message; exit 1 on any error."""
        settings = Settings()
        targets = list(paths) if paths else [settings.personas_dir, settings.numbers_file]
        problems = validate_paths(
            targets,
            personas_dir=settings.personas_dir,
            numbers_file=settings.numbers_file,
            count_tokens=token_counter(settings.model_dir),
        )
        for problem in problems:
            typer.echo(str(problem))
        errors = sum(p.is_error for p in problems)
        warnings = len(problems) - errors
        checked = ", ".join(str(t) for t in targets)
        typer.echo(f"{errors} error(s), {warnings} warning(s) in {checked}", err=True)
        if errors:
            raise typer.Exit(1)

    @personas_app.command()
    def schema(
        numbers: Annotated[
            bool, typer.Option("--numbers", help="The numbers file's schema instead.")
        ] = False,
    ) -> None:
        """Print the JSON Schema of a persona file (for YAML editors, e.g. yaml-language-server)."""
        typer.echo(schema_text(numbers), nl=False)

    return personas_app
