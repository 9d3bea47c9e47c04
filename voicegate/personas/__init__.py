"""Personas: the YAML schema, loading with file:line:col problems, hot reload, and number routing.

Usage::

    store = PersonaStore(Path("personas"), on_change=reload_in_engine)
    store.load(); store.start()
    router = Router(load_numbers(Path("telephony/numbers.yaml"), store.names()), store.has)
    persona = store.get(router.route(called_number))

Owns: voicegate/personas/*. Imports ``voicegate.contracts`` (``PersonaPrompt`` for the engine,
``TokenCounter``: a prompt is counted by the counter passed in), ``voicegate.audio.wav`` for
voice clips; never the engine, calls, legs or app.
"""

from __future__ import annotations

from voicegate.personas.loader import load_persona, persona_files, read_persona
from voicegate.personas.numbers import (
    NumbersMap,
    NumbersValidationError,
    Router,
    load_numbers,
    normalise_called,
    read_numbers,
)
from voicegate.personas.problems import Problem, format_problems, has_errors
from voicegate.personas.schema import (
    VOICE_PRESETS,
    Limits,
    Persona,
    PersonaSpec,
    Sampling,
    persona_json_schema,
)
from voicegate.personas.store import NumbersStore, OnPersonaChange, PersonaStore
from voicegate.personas.tokens import estimate_tokens
from voicegate.personas.validate import validate_paths

__all__ = [
    "VOICE_PRESETS",
    "Limits",
    "NumbersMap",
    "NumbersStore",
    "NumbersValidationError",
    "OnPersonaChange",
    "Persona",
    "PersonaSpec",
    "PersonaStore",
    "Problem",
    "Router",
    "Sampling",
    "estimate_tokens",
    "format_problems",
    "has_errors",
    "load_numbers",
    "load_persona",
    "normalise_called",
    "persona_files",
    "persona_json_schema",
    "read_numbers",
    "read_persona",
    "validate_paths",
]
