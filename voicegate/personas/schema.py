"""The persona file schema (pydantic): what a ``personas/<name>.yaml`` may contain.

The persona's name is its file stem, not a key. Checks that need the file system (voice clip
inside the personas folder, readable, 2-30 s) live in ``loader``; this module is pure.
Owns: PersonaSpec (the YAML document), Sampling, Limits, CallFlowSpec (transfers and hang-ups),
Persona (a loaded persona), the voice presets. Imports only ``voicegate.contracts`` (for PersonaPrompt, the engine's view of a persona).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from voicegate.contracts import FlowAction as FlowRuleAction
from voicegate.contracts import FlowRules, PersonaPrompt, SamplingParams
from voicegate.personas.problems import suggest
from voicegate.personas.template import (
    BUILTIN_VARIABLES,
    DEFAULT_MAX_CHARS,
    VARIABLE_NAME,
    PromptTemplate,
    clean_value,
)

__all__ = [
    "NAME_PATTERN",
    "CallFlowSpec",
    "VOICE_PRESETS",
    "Limits",
    "Persona",
    "PersonaSpec",
    "RecordingSpec",
    "Sampling",
    "Webhooks",
    "Variable",
    "persona_json_schema",
]

VOICE_PRESETS: tuple[str, ...] = (
    *(f"NATF{i}" for i in range(4)),
    *(f"NATM{i}" for i in range(4)),
    *(f"VARF{i}" for i in range(5)),
    *(f"VARM{i}" for i in range(5)),
)
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_WAV_SUFFIX = ".wav"

_VOICE_JSON_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "enum": list(VOICE_PRESETS), "description": "A preset voice."},
        {
            "type": "string",
            "pattern": r"^[^/\\].*\.[wW][aA][vV]$",
            "description": "A WAV clip (2-30 s), relative to the personas folder.",
        },
    ],
    "description": "Preset voice (NATF0-3, NATM0-3, VARF0-4, VARM0-4) or a WAV clip path "
    "relative to the personas folder, e.g. voices/sanni.wav.",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Sampling(_Strict):
    """Sampling settings; defaults are the PersonaPlex reference's."""

    text_temperature: float = Field(
        0.7,
        ge=0.0,
        le=2.0,
        description="Temperature of the text (inner monologue) token; 0 = greedy.",
    )
    text_top_k: int = Field(25, ge=1, le=32000, description="Top-k of the text token (card 32000).")
    audio_temperature: float = Field(
        0.8, ge=0.0, le=2.0, description="Temperature of the audio codebook tokens; 0 = greedy."
    )
    audio_top_k: int = Field(
        250, ge=1, le=2048, description="Top-k of the audio codebook tokens (card 2048)."
    )

    def to_params(self) -> SamplingParams:
        return SamplingParams(
            text_temperature=self.text_temperature,
            text_top_k=self.text_top_k,
            audio_temperature=self.audio_temperature,
            audio_top_k=self.audio_top_k,
        )


class Limits(_Strict):
    """Call limits enforced by the Call."""

    max_duration_s: float = Field(
        600.0,
        ge=10.0,
        le=4 * 3600.0,
        description="A call is ended after this many seconds (the model's window is 240 s of context).",
    )
    silence_timeout_s: float = Field(
        30.0,
        ge=3.0,
        le=3600.0,
        description="A call is ended after this long without caller speech.",
    )

    @model_validator(mode="after")
    def _silence_within_duration(self) -> Limits:
        if self.silence_timeout_s > self.max_duration_s:
            raise ValueError(
                f"silence_timeout_s ({self.silence_timeout_s:g}) must not exceed "
                f"max_duration_s ({self.max_duration_s:g})"
            )
        return self


Voice = Annotated[str, WithJsonSchema(_VOICE_JSON_SCHEMA)]

_SIP_X_HEADER = re.compile(r"^[Xx]-[A-Za-z0-9-]{1,64}$")


class Variable(_Strict):
    """A per-call variable of ``text_prompt`` (``{name}``) and where a call's value comes from."""

    default: str = Field(
        max_length=500, description="The value when no source sets one (may be empty)."
    )
    max_chars: int = Field(
        DEFAULT_MAX_CHARS,
        ge=1,
        le=500,
        description="A call's value is cut to this many characters (after cleaning).",
    )
    sip_header: str | None = Field(
        None,
        description="SIP calls: take the value from this X- header of the INVITE.",
        json_schema_extra={"pattern": _SIP_X_HEADER.pattern},
    )

    @field_validator("sip_header")
    @classmethod
    def _x_header(cls, value: str | None) -> str | None:
        if value is not None and not _SIP_X_HEADER.match(value):
            raise ValueError(f"sip_header '{value}' must be an X- header name (X-Caller-Name)")
        return value


# a phone number in E.164, or a SIP URI (Twilio <Sip> takes under 255 characters)
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_SIP_URI = re.compile(r"^sips?:[^\s@<>\"]+@[A-Za-z0-9.\-\[\]:]+(;[^\s<>\"]*)?$")
_DTMF_KEYS = re.compile(r"^[0-9*#]{1,8}$")
_HANDOFF_URL = re.compile(r"^https?://[^\s]+$")


class Destination(_Strict):
    """A person or queue the caller can be handed to."""

    to: str = Field(
        max_length=254,
        description="An E.164 number (+14155550123) or a SIP URI (sip:queue@pbx.example.com).",
    )
    handoff_url: str = Field(
        "",
        max_length=2000,
        description="Optional: an https URL that gets a signed JSON handoff document (transcript "
        "so far, caller, reason) just before the transfer.",
    )

    @field_validator("to")
    @classmethod
    def _number_or_sip(cls, value: str) -> str:
        if _E164.match(value) or _SIP_URI.match(value):
            return value
        raise ValueError(
            f"'{value}' is neither an E.164 number (+ and 7-15 digits) nor a SIP URI "
            "(sip:user@host)"
        )

    @field_validator("handoff_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not _HANDOFF_URL.match(value):
            raise ValueError(f"handoff_url '{value}' is not an http(s) URL")
        return value


class Webhooks(_Strict):
    """Where the gateway POSTs signed reports of calls (post-call webhooks, at least once)."""

    call_ended: str = Field(
        "",
        max_length=2000,
        description="An http(s) URL that gets the call's signed JSON report after call.ended "
        "(transcripts, dynamics, barge-ins, transfers, recording), retried until it answers 2xx.",
    )

    @field_validator("call_ended")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not _HANDOFF_URL.match(value):
            raise ValueError(f"call_ended '{value}' is not an http(s) URL")
        return value


class Transfer(_Strict):
    """Hand the caller to a destination (by its name under ``destinations``)."""

    transfer: str = Field(min_length=1, max_length=64, description="A destination's name.")


FlowAction = Annotated[
    Literal["hangup"] | Transfer,
    Field(description="'hangup', or {transfer: <destination name>}."),
]


class PhraseRule(_Strict):
    """The agent saying ``phrase`` (as the caller heard it) triggers a transfer or a hang-up."""

    phrase: str = Field(
        min_length=1,
        max_length=120,
        description="Words matched case-insensitively on word boundaries in the agent's speech.",
    )
    transfer: str | None = Field(None, min_length=1, max_length=64, description="A destination.")
    hangup: bool = Field(
        False, description="Hang up once the caller has also been silent (hangup_after_silence_s)."
    )

    @field_validator("phrase")
    @classmethod
    def _has_words(cls, value: str) -> str:
        if not re.search(r"\w", value):
            raise ValueError(f"phrase '{value}' has no words")
        return value

    @model_validator(mode="after")
    def _one_action(self) -> PhraseRule:
        if (self.transfer is None) == (not self.hangup):
            raise ValueError(
                f"phrase '{self.phrase}': give exactly one of 'transfer: <destination>' or "
                "'hangup: true'"
            )
        return self


class FlowLimits(_Strict):
    """What the call's limits do instead of a plain hang-up."""

    max_duration: FlowAction | None = Field(None, description="At limits.max_duration_s.")
    silence_timeout: FlowAction | None = Field(None, description="At limits.silence_timeout_s.")


class CallFlowSpec(_Strict):
    """Transfers to people and hang-ups, decided on keys, the agent's words and the limits."""

    destinations: dict[str, Destination] = Field(
        default_factory=dict, description="Named people or queues: name -> {to, handoff_url}."
    )
    dtmf: dict[str, FlowAction] = Field(
        default_factory=dict,
        description='Key sequences (quoted: "0", "*9") -> \'hangup\' or {transfer: name}.',
    )
    agent_says: list[PhraseRule] = Field(
        default_factory=list, max_length=50, description="Agent phrases -> transfer or hang-up."
    )
    limits: FlowLimits = Field(
        default_factory=lambda: FlowLimits(), description="What the limits do."
    )
    hangup_after_silence_s: float = Field(
        1.5,
        ge=0.0,
        le=30.0,
        description="A hang-up phrase takes effect once the caller has been silent this long.",
    )
    fallback_say: str = Field(
        "",
        max_length=500,
        description="Said to the caller when the person does not answer (Twilio), then hang up.",
    )

    @field_validator("dtmf", mode="before")
    @classmethod
    def _keys_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):  # YAML reads an unquoted 0 as a number
            return {str(k) if isinstance(k, int) else k: v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _known_destinations(self) -> CallFlowSpec:
        for key in self.dtmf:
            if not _DTMF_KEYS.match(key):
                raise ValueError(f"dtmf key '{key}' must be 1-8 of 0-9, * and #")
        names = list(self.destinations)
        used = [a.transfer for a in self.dtmf.values() if isinstance(a, Transfer)]
        used += [r.transfer for r in self.agent_says if r.transfer is not None]
        used += [
            a.transfer
            for a in (self.limits.max_duration, self.limits.silence_timeout)
            if isinstance(a, Transfer)
        ]
        for name in used:
            if name not in self.destinations:
                close = suggest(name, names)
                hint = f" (did you mean '{close}'?)" if close else ""
                known = ", ".join(names) or "none"
                raise ValueError(
                    f"transfer to unknown destination '{name}'{hint}; destinations: {known}"
                )
        return self


def _clip_path(value: str, what: str) -> str:
    """A WAV path relative to the personas folder (the checks a file system is not needed for)."""
    if not value.lower().endswith(_WAV_SUFFIX):
        raise ValueError(f"{what} '{value}' is not a .wav clip path")
    if "\0" in value:
        raise ValueError(f"{what} path contains a NUL character")
    posix, windows = PurePosixPath(value), PureWindowsPath(value)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise ValueError(
            f"{what} path '{value}' is absolute; give a path relative to the personas folder"
        )
    if ".." in posix.parts or ".." in windows.parts:
        raise ValueError(f"{what} path '{value}' leaves the personas folder ('..')")
    return value


class RecordingSpec(_Strict):
    """Call recording (stereo WAV, caller left, agent right) and its consent announcement."""

    enabled: bool = Field(False, description="Record calls (VOICEGATE_RECORDINGS_DIR).")
    announcement: str | None = Field(
        None,
        description="WAV clip relative to the personas folder (e.g. voices/consent.wav), played "
        "to the caller before the agent starts; a caller who hangs up during it is not recorded.",
        json_schema_extra={"pattern": r"^[^/\\].*\.[wW][aA][vV]$"},
    )

    @field_validator("announcement")
    @classmethod
    def _announcement_path(cls, value: str | None) -> str | None:
        return None if value is None else _clip_path(value, "announcement")


class PersonaSpec(_Strict):
    """One persona YAML document. The persona's name is the file's stem."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        title="VoiceGate persona",
        json_schema_extra={
            "$comment": "Generated by `voicegate personas schema`; the name is the file stem."
        },
    )

    description: str = Field(
        min_length=1, max_length=500, description="One line for people: who this persona is."
    )
    text_prompt: str = Field(
        min_length=1,
        max_length=8000,
        description="The role prompt the model is conditioned on (aim for about 200 model tokens).",
    )
    voice: Voice = Field(description=_VOICE_JSON_SCHEMA["description"])
    sampling: Sampling = Field(default_factory=lambda: Sampling(), description="Sampling settings.")
    limits: Limits = Field(default_factory=lambda: Limits(), description="Call limits.")
    call_flow: CallFlowSpec | None = Field(
        None, description="Transfers to people and hang-ups (keys, the agent's words, limits)."
    )
    webhooks: Webhooks | None = Field(
        None, description="Post-call webhooks: {call_ended: URL} gets a signed report per call."
    )
    variables: dict[str, Variable] = Field(
        default_factory=dict,
        max_length=32,
        description="Per-call variables used in text_prompt as {name}: name -> {default, "
        "max_chars, sip_header}. caller_number and called_number need no declaration.",
    )

    @field_validator("variables")
    @classmethod
    def _variable_names(cls, value: dict[str, Variable]) -> dict[str, Variable]:
        for name in value:
            if not VARIABLE_NAME.match(name):
                raise ValueError(
                    f"variable name '{name}' must be lowercase letters, digits and '_', "
                    "starting with a letter"
                )
            if name in BUILTIN_VARIABLES:
                raise ValueError(f"variable '{name}' is built in: do not declare it")
        return value

    recording: RecordingSpec | None = Field(
        None, description="Record this persona's calls, after a consent announcement."
    )

    @field_validator("text_prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text_prompt is blank")
        return value

    @field_validator("voice")
    @classmethod
    def _voice_preset_or_wav(cls, value: str) -> str:
        if value in VOICE_PRESETS:
            return value
        if not value.lower().endswith(_WAV_SUFFIX):
            raise ValueError(
                f"voice '{value}' is neither a preset ({', '.join(VOICE_PRESETS)}) "
                "nor a .wav clip path"
            )
        if "\0" in value:
            raise ValueError("voice path contains a NUL character")
        posix, windows = PurePosixPath(value), PureWindowsPath(value)
        if posix.is_absolute() or windows.is_absolute() or windows.drive:
            raise ValueError(
                f"voice path '{value}' is absolute; give a path relative to the personas folder"
            )
        if ".." in posix.parts or ".." in windows.parts:
            raise ValueError(f"voice path '{value}' leaves the personas folder ('..')")
        return value

    @property
    def is_preset_voice(self) -> bool:
        return self.voice in VOICE_PRESETS


class Persona(BaseModel):
    """A loaded, validated persona: what calls and the engine use."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    text_prompt: str
    voice: str
    sampling: Sampling = Field(default_factory=lambda: Sampling())
    limits: Limits = Field(default_factory=lambda: Limits())
    call_flow: CallFlowSpec | None = None
    recording: RecordingSpec | None = None
    announcement_path: Path | None = None  # resolved recording announcement clip
    voice_path: Path | None = None  # resolved clip when the voice is a WAV
    source: Path | None = None  # the YAML file it came from
    digest: str = ""  # sha256 of the YAML bytes (and the clip's): changes when an edit matters
    prompt_tokens: int = 0  # model tokens of text_prompt (or an estimate; see loader)
    webhooks: Webhooks | None = None
    variables: dict[str, Variable] = Field(default_factory=dict)

    @property
    def template(self) -> PromptTemplate:
        """``text_prompt`` parsed (the loader has checked it)."""
        return PromptTemplate.parse(self.text_prompt)

    @property
    def has_variables(self) -> bool:
        return "{" in self.text_prompt and self.template.has_variables

    def default_values(self) -> dict[str, str]:
        return {name: v.default for name, v in self.variables.items()}

    def render_prompt(self, values: Mapping[str, str] | None = None) -> str:
        """``text_prompt`` with the defaults, overridden by ``values`` (each cleaned and cut to
        its variable's ``max_chars``; names the persona does not use are ignored)."""
        merged = self.default_values()
        for name, value in (values or {}).items():
            spec = self.variables.get(name)
            if spec is not None:
                merged[name] = clean_value(value, spec.max_chars)
            elif name in BUILTIN_VARIABLES:
                merged[name] = clean_value(value, DEFAULT_MAX_CHARS)
        return self.template.render(merged)

    def flow_rules(self) -> FlowRules | None:
        """Its call flow as the Call applies it (None: no transfers or hang-up rules)."""
        return flow_rules(self.call_flow)

    def to_prompt(self) -> PersonaPrompt:
        """What ``Engine.load_persona`` needs."""
        return PersonaPrompt(
            key=self.name,
            text_prompt=self.render_prompt() if self.has_variables else self.text_prompt,
            voice=str(self.voice_path) if self.voice_path is not None else self.voice,
            sampling=self.sampling.to_params(),
            voice_path=self.voice_path,
        )


def _action(value: Literal["hangup"] | Transfer | None) -> FlowRuleAction | None:
    if value is None:
        return None
    if isinstance(value, Transfer):
        return FlowRuleAction("transfer", value.transfer)
    return FlowRuleAction("hangup")


def flow_rules(spec: CallFlowSpec | None) -> FlowRules | None:
    """The Call's view of a persona's ``call_flow`` (None when it has none)."""
    if spec is None:
        return None
    phrases: list[tuple[str, FlowRuleAction]] = []
    for rule in spec.agent_says:
        if rule.transfer is not None:
            phrases.append((rule.phrase, FlowRuleAction("transfer", rule.transfer)))
        else:
            phrases.append((rule.phrase, FlowRuleAction("hangup")))
    dtmf = {k: a for k, v in spec.dtmf.items() if (a := _action(v)) is not None}
    return FlowRules(
        destinations={name: d.to for name, d in spec.destinations.items()},
        handoff_urls={n: d.handoff_url for n, d in spec.destinations.items() if d.handoff_url},
        dtmf=dtmf,
        agent_says=tuple(phrases),
        on_max_duration=_action(spec.limits.max_duration),
        on_silence_timeout=_action(spec.limits.silence_timeout),
        hangup_silence_ms=int(spec.hangup_after_silence_s * 1000),
        fallback_say=spec.fallback_say,
    )


def persona_json_schema() -> dict[str, Any]:
    """JSON Schema of a persona YAML file (for yaml-language-server and other editors)."""
    schema = PersonaSpec.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
