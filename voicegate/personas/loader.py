"""Load and check persona files: every problem, with file:line:col, in one pass.

Usage::

    persona, problems = read_persona(Path("personas/bank_teller.yaml"), Path("personas"))
    persona = load_persona(path, personas_dir)          # raises PersonaValidationError

Owns: turning a persona YAML file into a ``Persona`` or a list of ``Problem``. Does file I/O
(the YAML file, the voice clip); no threads, no asyncio. Must not import calls, legs or app.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from voicegate.audio.wav import WavInfo, inspect_wav
from voicegate.errors import PersonaValidationError, WavError
from voicegate.personas.problems import Problem, format_problems, has_errors, suggest
from voicegate.personas.schema import (
    NAME_PATTERN,
    VOICE_PRESETS,
    CallFlowSpec,
    Limits,
    Persona,
    PersonaSpec,
    Sampling,
)
from voicegate.personas.template import BUILTIN_VARIABLES, PromptTemplate, TemplateError
from voicegate.personas.tokens import (
    PROMPT_TOKEN_GUIDANCE,
    TokenCounter,
    estimate_tokens,
    is_estimate,
)
from voicegate.personas.yamldoc import Loc, SourceMap, parse_yaml

__all__ = [
    "PERSONA_SUFFIXES",
    "PersonaRead",
    "announcement_problems",
    "load_persona",
    "persona_files",
    "read_persona",
    "read_persona_file",
    "validation_error",
]

PERSONA_SUFFIXES = (".yaml", ".yml")
MIN_CLIP_S = 2.0
MAX_CLIP_S = 30.0
MAX_CLIP_BYTES = 64 * 1024 * 1024  # a 30 s clip needs far less

# Keys people reach for that mean something else here.
_SYNONYMS: dict[str, str] = {
    "prompt": "text_prompt",
    "role": "text_prompt",
    "system_prompt": "text_prompt",
    "instructions": "text_prompt",
    "voice_prompt": "voice",
    "temperature": "sampling.text_temperature",
    "top_k": "sampling.text_top_k",
    "max_duration": "limits.max_duration_s",
    "silence_timeout": "limits.silence_timeout_s",
    "timeout": "limits.silence_timeout_s",
}
_SUBMODELS: dict[str, type[BaseModel]] = {
    "sampling": Sampling,
    "limits": Limits,
    "call_flow": CallFlowSpec,
}


def persona_files(personas_dir: Path) -> list[Path]:
    """The persona YAML files directly inside ``personas_dir``, sorted (hidden files skipped)."""
    try:
        entries = list(personas_dir.iterdir())
    except OSError:
        return []
    return sorted(
        p
        for p in entries
        if p.suffix in PERSONA_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def _model_at(loc: Loc) -> type[BaseModel] | None:
    if not loc:
        return PersonaSpec
    if len(loc) == 1 and isinstance(loc[0], str):
        return _SUBMODELS.get(loc[0])
    return None


def _key_suggestion(loc: Loc) -> str | None:
    key = loc[-1]
    if not isinstance(key, str):
        return None
    model = _model_at(loc[:-1])
    if model is None:
        return None
    fields = list(model.model_fields)
    if model is PersonaSpec:  # a top-level key may belong one level down
        for sub_name, sub in _SUBMODELS.items():
            fields += [f"{sub_name}.{f}" for f in sub.model_fields]
        if key.casefold() in _SYNONYMS:
            return _SYNONYMS[key.casefold()]
    best = suggest(key, fields)
    if best is None and model is PersonaSpec:
        # 'text_temprature' at the top level: compare with the leaf names too
        leaf = {f.rsplit(".", 1)[-1]: f for f in fields}
        hit = suggest(key, leaf)
        best = leaf[hit] if hit else None
    return best


def _dotted(loc: Loc) -> str:
    return ".".join(str(p) for p in loc) or "document"


def _schema_problems(
    exc: ValidationError, file: Path, smap: SourceMap, data: dict[str, Any]
) -> list[Problem]:
    out: list[Problem] = []
    for err in exc.errors(include_url=False, include_input=False):
        loc: Loc = tuple(err["loc"])
        kind = err["type"]
        message = str(err["msg"]).removeprefix("Value error, ")
        suggestion: str | None = None
        if kind == "extra_forbidden":
            line, col = smap.key_pos(loc)
            if loc == ("name",):
                message = (
                    f"unknown key 'name': a persona's name is its file name ('{file.stem}'); "
                    "remove this key"
                )
            else:
                message = f"unknown key '{_dotted(loc)}'"
                suggestion = _key_suggestion(loc)
        elif kind == "missing":
            line, col = smap.value_pos(loc[:-1])
            message = f"missing required key '{_dotted(loc)}'"
        elif kind in ("model_type", "dict_type") and not loc:
            line, col = smap.value_pos(())
            message = "expected a mapping of persona fields (description, text_prompt, voice, ...)"
        else:
            line, col = smap.value_pos(loc)
            if kind != "value_error":  # our own validators' messages already name the field
                message = f"{_dotted(loc)}: {message}"
            if loc == ("voice",) and isinstance(data.get("voice"), str):
                suggestion = suggest(data["voice"], VOICE_PRESETS)
        out.append(Problem(file, line, col, "error", message, suggestion))
    return out


def _inspect_clip(path: Path) -> WavInfo:
    """A readable WAV of a voice clip's length, or WavError saying why not."""
    info = inspect_wav(path, max_bytes=MAX_CLIP_BYTES)
    if not MIN_CLIP_S <= info.duration_s <= MAX_CLIP_S:
        raise WavError(
            f"clip is {info.duration_s:.2f} s long; a voice clip must be {MIN_CLIP_S:g} to "
            f"{MAX_CLIP_S:g} s"
        )
    return info


def _voice_problems(
    voice: str, file: Path, personas_dir: Path, pos: tuple[int, int], digest: Any
) -> tuple[Path | None, list[Problem]]:
    line, col = pos

    def err(message: str) -> tuple[None, list[Problem]]:
        return None, [Problem(file, line, col, "error", message)]

    base = personas_dir.resolve()
    candidate = personas_dir / voice
    if not os.path.lexists(candidate):
        return err(f"voice clip '{voice}' not found in {personas_dir}")
    resolved = candidate.resolve()
    if not resolved.is_relative_to(base):
        return err(f"voice clip '{voice}' resolves to {resolved}, outside the personas folder")
    if not resolved.is_file():
        return err(f"voice clip '{voice}' is not a file")
    try:
        info = _inspect_clip(resolved)
    except WavError as exc:
        return err(f"voice clip '{voice}': {exc}")
    try:
        digest.update(resolved.read_bytes())
    except OSError as exc:  # vanished between the check and now
        return err(f"voice clip '{voice}': cannot read: {exc.strerror or exc}")
    warnings: list[Problem] = []
    if info.peak == 0.0:
        warnings.append(Problem(file, line, col, "warning", f"voice clip '{voice}' is silent"))
    return resolved, warnings


MAX_ANNOUNCEMENT_S = 60.0


def announcement_problems(
    clip: str, file: Path, personas_dir: Path, pos: tuple[int, int]
) -> tuple[Path | None, list[Problem]]:
    """The recording announcement: a readable WAV inside the personas folder, 0.2-60 s."""

    def err(message: str) -> tuple[None, list[Problem]]:
        return None, [Problem(file, pos[0], pos[1], "error", message)]

    candidate = personas_dir / clip
    resolved = candidate.resolve()
    if not resolved.is_relative_to(personas_dir.resolve()):
        return err(f"announcement '{clip}' resolves to {resolved}, outside the personas folder")
    if not resolved.is_file():
        return err(f"announcement '{clip}' not found in {personas_dir}")
    try:
        info = inspect_wav(resolved, max_bytes=MAX_CLIP_BYTES)
    except WavError as exc:
        return err(f"announcement '{clip}': {exc}")
    if not 0.2 <= info.duration_s <= MAX_ANNOUNCEMENT_S:
        return err(
            f"announcement '{clip}' is {info.duration_s:.2f} s long; expected 0.2 to "
            f"{MAX_ANNOUNCEMENT_S:g} s"
        )
    return resolved, []


def _token_problem(
    prompt: str, file: Path, pos: tuple[int, int], count_tokens: TokenCounter
) -> tuple[int, list[Problem]]:
    try:
        tokens = int(count_tokens(prompt.strip()))
        counter = count_tokens
    except Exception:  # a broken tokenizer must not reject a persona: estimate instead
        tokens = estimate_tokens(prompt.strip())
        counter = estimate_tokens
    if tokens <= PROMPT_TOKEN_GUIDANCE:
        return tokens, []
    how = (
        "estimated as words x 1.3; the model tokenizer was not available"
        if is_estimate(counter)
        else "counted with the model tokenizer"
    )
    message = (
        f"text_prompt is {tokens} tokens ({how}); PersonaPlex prompts are guided to about "
        f"{PROMPT_TOKEN_GUIDANCE}: longer prompts are followed less reliably"
    )
    return tokens, [Problem(file, pos[0], pos[1], "warning", message)]


def read_persona(
    path: Path,
    personas_dir: Path | None = None,
    count_tokens: TokenCounter = estimate_tokens,
) -> tuple[Persona | None, list[Problem]]:
    """Read one persona file; the Persona is None when any problem is an error.

    ``personas_dir`` (default: the file's folder) is where WAV voice paths are resolved and must
    stay. Never raises for bad content or an unreadable file: problems say what is wrong.
    """
    result = read_persona_file(path, personas_dir, count_tokens)
    return result.persona, result.problems


@dataclass(frozen=True, slots=True)
class PersonaRead:
    """What reading one persona file gave: the persona (None on any error), every problem, and
    the WAV clip the file names (even a missing or broken one) so that a reloader can watch it."""

    persona: Persona | None
    problems: list[Problem]
    clip: Path | None = None


def read_persona_file(
    path: Path,
    personas_dir: Path | None = None,
    count_tokens: TokenCounter = estimate_tokens,
) -> PersonaRead:
    """``read_persona`` with the clip it names (for PersonaStore)."""
    personas_dir = personas_dir if personas_dir is not None else path.parent
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return PersonaRead(
            None, [Problem(path, 1, 1, "error", f"cannot read: {exc.strerror or exc}")]
        )
    digest = hashlib.sha256(raw)
    parsed = parse_yaml(raw, path)
    problems = list(parsed.problems)
    if not NAME_PATTERN.match(path.stem):
        problems.append(
            Problem(
                path,
                1,
                1,
                "error",
                f"file name '{path.stem}' is not a persona name: use lowercase letters, digits, "
                "'_' and '-' (at most 64, starting with a letter or digit)",
            )
        )
    if parsed.data is None and problems:
        return PersonaRead(None, problems)
    smap = parsed.source_map
    data = parsed.data
    spec: PersonaSpec | None = None
    bad_locs: set[Loc] = set()
    try:
        spec = PersonaSpec.model_validate(data)
    except ValidationError as exc:
        bad_locs = {tuple(e["loc"]) for e in exc.errors(include_input=False)}
        problems += _schema_problems(exc, path, smap, data if isinstance(data, dict) else {})
    except RecursionError:
        problems.append(Problem(path, 1, 1, "error", "document nesting is too deep"))
    voice_path: Path | None = None
    announcement_path: Path | None = None
    clip: Path | None = None
    tokens = 0
    if isinstance(data, dict):
        voice = data.get("voice")
        if isinstance(voice, str) and voice not in VOICE_PRESETS and ("voice",) not in bad_locs:
            clip = personas_dir / voice
            voice_path, voice_problems = _voice_problems(
                voice, path, personas_dir, smap.value_pos(("voice",)), digest
            )
            problems += voice_problems
        recording = data.get("recording")
        loc = ("recording", "announcement")
        if isinstance(recording, dict) and loc not in bad_locs:
            clip_name = recording.get("announcement")
            if isinstance(clip_name, str) and spec is not None:
                announcement_path, clip_problems = announcement_problems(
                    clip_name, path, personas_dir, smap.value_pos(loc)
                )
                problems += clip_problems
        prompt = data.get("text_prompt")
        if isinstance(prompt, str):
            pos = smap.value_pos(("text_prompt",))
            declared = spec.variables if spec is not None else _declared(data)
            template, template_problems = _template_problems(prompt, raw, path, pos, declared)
            problems += template_problems
            defaults = {k: v.default for k, v in spec.variables.items()} if spec else {}
            shown = template.render(defaults) if template is not None else prompt
            tokens, token_problems = _token_problem(shown, path, pos, count_tokens)
            problems += token_problems
    problems.sort(key=lambda p: (p.line, p.col))
    if spec is None or has_errors(problems):
        return PersonaRead(None, problems, clip)
    persona = Persona(
        name=path.stem,
        description=spec.description,
        text_prompt=spec.text_prompt,
        voice=spec.voice,
        sampling=spec.sampling,
        limits=spec.limits,
        call_flow=spec.call_flow,
        recording=spec.recording,
        announcement_path=announcement_path,
        voice_path=voice_path,
        source=path,
        digest=digest.hexdigest(),
        prompt_tokens=tokens,
        webhooks=spec.webhooks,
        variables=spec.variables,
    )
    return PersonaRead(persona, problems, clip)


def _declared(data: dict[Any, Any]) -> dict[str, object]:
    """Variable names declared in a document that failed the schema (for the prompt check)."""
    variables = data.get("variables")
    return {str(k): v for k, v in variables.items()} if isinstance(variables, dict) else {}


def _source_pos(raw: bytes, start: tuple[int, int], needle: str) -> tuple[int, int] | None:
    """Line/col of ``needle`` in the file at or after ``start`` (a prompt's text as written)."""
    text = raw.decode("utf-8", "replace")
    lines = text.split("\n")
    if not 1 <= start[0] <= len(lines):
        return None
    base = sum(len(line) + 1 for line in lines[: start[0] - 1]) + max(start[1] - 1, 0)
    at = text.find(needle, base)
    if at < 0:
        return None
    line = text.count("\n", 0, at) + 1
    return line, at - (text.rfind("\n", 0, at) + 1) + 1


def _template_problems(
    prompt: str, raw: bytes, file: Path, pos: tuple[int, int], declared: Mapping[str, object]
) -> tuple[PromptTemplate | None, list[Problem]]:
    """A malformed brace or an undeclared variable in ``text_prompt``, at its place in the file
    (found by its text; the prompt's start when a YAML escape hides it)."""
    try:
        template = PromptTemplate.parse(prompt)
    except TemplateError as exc:
        snippet = prompt[exc.offset : exc.offset + 2]
        where = _source_pos(raw, pos, snippet) or pos
        return None, [Problem(file, where[0], where[1], "error", f"text_prompt: {exc}")]
    problems = []
    known = [*declared, *BUILTIN_VARIABLES]
    for name, _offset in template.undeclared(declared):
        where = _source_pos(raw, pos, "{" + name + "}") or pos
        problems.append(
            Problem(
                file,
                where[0],
                where[1],
                "error",
                f"text_prompt uses the variable '{{{name}}}', which is not declared: add it "
                f"under 'variables' with a default (variables: {{{name}: {{default: ...}}}})",
                suggest(name, known),
            )
        )
    return template, problems


def validation_error(what: str, problems: list[Problem]) -> PersonaValidationError:
    """A PersonaValidationError listing ``problems`` (errors first in the message)."""
    errors = [p for p in problems if p.is_error]
    return PersonaValidationError(
        f"{what}: {len(errors)} error(s)\n{format_problems(errors)}", list(problems)
    )


def load_persona(
    path: Path,
    personas_dir: Path | None = None,
    count_tokens: TokenCounter = estimate_tokens,
) -> Persona:
    """Read one persona file; raises PersonaValidationError carrying every problem."""
    persona, problems = read_persona(path, personas_dir, count_tokens)
    if persona is None:
        raise validation_error(f"persona {path}", problems)
    return persona
