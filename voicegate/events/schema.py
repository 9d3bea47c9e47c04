"""Call event schema: one pydantic model per event type, flat Redis stream fields, Redis keys.

Every event carries ``type``, ``id`` (unique per process run, for consumers that dedupe),
``ts`` (wall-clock ms, set at construction), ``t`` (ms since call start; ``t_ms`` in Python),
``call_id`` and ``leg``. ``encode_fields()`` turns an event into the flat ``str -> str`` mapping
XADD takes (numbers as decimal text, booleans as ``true``/``false``, nested values as compact
JSON, ``None`` omitted); ``decode_fields()`` is its inverse for consumers and tests.

Usage::

    ev = CallStarted(call_id="c1", leg="twilio", t_ms=0, persona="teller", from_="+1555", to="+1666")
    fields = encode_fields(ev)            # {"type": "call.started", "ts": "...", "from": "+1555", ...}
    assert decode_fields(fields) == ev

Owns: the event models, their wire encoding and the Redis key names.
Must not import asyncio, redis, or any voicegate module but ``contracts`` and ``errors``.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voicegate.contracts import CALL_ID_PATTERN  # call_id goes into Redis key names
from voicegate.errors import EventError

__all__ = [
    "BargeIn",
    "CALL_ID_PATTERN",
    "CallContext",
    "CallDynamics",
    "CallEnded",
    "CallError",
    "CallReanchored",
    "CallerSpeech",
    "CallStarted",
    "CallTransfer",
    "Dtmf",
    "EVENT_TYPES",
    "Event",
    "EventSchemaError",
    "GLOBAL_EVENTS_KEY",
    "LegStatus",
    "MAX_EVENT_BYTES",
    "RecordingEnded",
    "RecordingStarted",
    "TranscriptAgent",
    "TranscriptCaller",
    "call_events_key",
    "call_key",
    "decode_fields",
    "encode_fields",
]

KEY_PREFIX = "voicegate:"
GLOBAL_EVENTS_KEY = "voicegate:events"
# A whole encoded event (field names and values, UTF-8) may not exceed this; a bigger one is a bug
# upstream (a runaway transcript) and must not reach Redis or the journal.
MAX_EVENT_BYTES = 64 * 1024
MAX_TEXT_CHARS = 8192
MAX_SHORT_CHARS = 256

_BOOT = os.urandom(4).hex()
_COUNTER = itertools.count(1)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _new_id() -> str:
    # process-unique, cheap (no uuid4 per event); the boot part separates process runs
    return f"{_BOOT}-{next(_COUNTER):x}"


def call_key(call_id: str) -> str:
    """``voicegate:call:{call_id}``: the hash of one call's metadata."""
    return f"{KEY_PREFIX}call:{call_id}"


def call_events_key(call_id: str) -> str:
    """``voicegate:call:{call_id}:events``: the stream of one call's events."""
    return f"{KEY_PREFIX}call:{call_id}:events"


class EventSchemaError(EventError, ValueError):
    """An event cannot be encoded or decoded (wrong type, malformed or oversized field)."""


class Event(BaseModel):
    """Base of every call event; construct a subclass, never this."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    type: ClassVar[str] = ""
    # Field names whose values are JSON-encoded in the stream (computed per subclass).
    _json_fields: ClassVar[frozenset[str]] = frozenset()
    # (python name, wire name) in wire order (computed per subclass).
    _wire: ClassVar[tuple[tuple[str, str], ...]] = ()

    id: str = Field(default_factory=_new_id, max_length=MAX_SHORT_CHARS)
    ts: int = Field(default_factory=_now_ms, ge=0, description="wall-clock ms since the epoch")
    t_ms: int = Field(alias="t", ge=0, description="ms since the call started")
    call_id: str = Field(pattern=CALL_ID_PATTERN)
    leg: str = Field(max_length=32, description="twilio, sip or webrtc")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if not cls.type:
            return
        wire: list[tuple[str, str]] = []
        json_fields: set[str] = set()
        for name, info in cls.model_fields.items():
            wire.append((name, info.alias or name))
            if _is_json_annotation(info.annotation):
                json_fields.add(name)
        cls._wire = tuple(wire)
        cls._json_fields = frozenset(json_fields)
        if cls.type in EVENT_TYPES:
            raise TypeError(f"event type {cls.type!r} defined twice")
        EVENT_TYPES[cls.type] = cls

    def hash_fields(self) -> dict[str, str]:
        """Fields this event sets in the call's hash (``voicegate:call:{call_id}``)."""
        return {}

    @property
    def is_call_end(self) -> bool:
        """True for the event that ends the call (its keys then get the retention TTL)."""
        return False


EVENT_TYPES: dict[str, type[Event]] = {}

_SCALARS: tuple[object, ...] = (str, int, float, bool, str | None, int | None, float | None)


def _is_json_annotation(annotation: object) -> bool:
    return annotation not in _SCALARS


class CallStarted(Event):
    """The call was answered and joined an engine slot."""

    type: ClassVar[str] = "call.started"

    persona: str = Field(max_length=MAX_SHORT_CHARS)
    from_: str = Field("", alias="from", max_length=MAX_SHORT_CHARS)
    to: str = Field("", max_length=MAX_SHORT_CHARS)
    leg_call_ref: str = Field(
        "", max_length=MAX_SHORT_CHARS, description="Twilio CallSid, SIP Call-ID, WebRTC session"
    )

    def hash_fields(self) -> dict[str, str]:
        return {
            "call_id": self.call_id,
            "leg": self.leg,
            "persona": self.persona,
            "from": self.from_,
            "to": self.to,
            "leg_call_ref": self.leg_call_ref,
            "started_ts": str(self.ts),
            "status": "active",
        }


class CallDynamics(BaseModel):
    """Conversation dynamics of a call, from the caller's and the agent's voice activity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    caller_talk_ms: int = Field(0, ge=0)
    agent_talk_ms: int = Field(0, ge=0)
    overlap_ms: int = Field(0, ge=0)
    backchannels: int = Field(0, ge=0, description="short agent speech during caller speech")
    response_gaps: int = Field(0, ge=0, description="how many caller-stop -> agent-start gaps")
    response_gap_p50_ms: float | None = None
    response_gap_p90_ms: float | None = None
    # caller STT with an end-of-turn head: how often it said the caller's turn ended, and how
    # long after the caller's last word it said so
    caller_turn_ends: int = Field(0, ge=0, description="caller turn ends the STT signalled")
    caller_turn_end_lag_p50_ms: float | None = None


class CallEnded(Event):
    """The call ended; its Redis keys get the retention TTL."""

    type: ClassVar[str] = "call.ended"

    reason: str = Field(max_length=64, description="an EndReason value")
    result: str = Field("success", max_length=64, description="an EndResult value")
    detail: str = Field("", max_length=2048)
    duration_ms: int = Field(ge=0)
    frames: int = Field(0, ge=0, description="engine frames (80 ms) the call ran")
    underruns: int = Field(0, ge=0)
    bargeins: int = Field(0, ge=0)
    dynamics: CallDynamics | None = None
    counters: dict[str, int | float] = Field(default_factory=dict, max_length=64)

    def hash_fields(self) -> dict[str, str]:
        out = {
            "status": "ended",
            "ended_ts": str(self.ts),
            "reason": self.reason,
            "result": self.result,
            "detail": self.detail,
            "duration_ms": str(self.duration_ms),
            "frames": str(self.frames),
            "underruns": str(self.underruns),
            "bargeins": str(self.bargeins),
        }
        if self.dynamics is not None:
            out["dynamics"] = self.dynamics.model_dump_json(exclude_none=True)
        return out

    @property
    def is_call_end(self) -> bool:
        return True


class CallTransfer(Event):
    """A transfer of the caller to a person: asked for, handed off, failed, or its outcome."""

    type: ClassVar[str] = "call.transfer"

    trigger: str = Field("", max_length=64, description="dtmf, agent_says, max_duration, ...")
    trigger_detail: str = Field("", max_length=MAX_SHORT_CHARS, description="digits or phrase")
    destination: str = Field("", max_length=MAX_SHORT_CHARS, description="name in the persona")
    to: str = Field("", max_length=MAX_SHORT_CHARS, description="number or SIP URI")
    handoff_id: str = Field("", max_length=MAX_SHORT_CHARS)
    result: str = Field(
        max_length=64,
        description="requested, handed_off, failed, unsupported; then the far end's outcome "
        "(answered, busy, no-answer, failed, canceled)",
    )
    detail: str = Field("", max_length=2048)
    latency_ms: int | None = Field(None, ge=0, description="trigger -> our side handed off")


class TranscriptAgent(Event):
    """One segment of the agent's speech (split on silence), heard or cut off by barge-in."""

    type: ClassVar[str] = "transcript.agent"

    text: str = Field(max_length=MAX_TEXT_CHARS)
    start_ms: int = Field(ge=0, description="call time the segment started")
    end_ms: int = Field(ge=0, description="call time the segment ended")
    is_heard: bool = Field(True, description="False when an interruption cut it off")
    cut_at_ms: int | None = Field(None, ge=0, description="call time it was cut, if it was")
    cut_text: str = Field("", max_length=MAX_TEXT_CHARS, description="the part not heard")


class TranscriptCaller(Event):
    """One segment of the caller's speech from the caller STT, split on pauses.

    Times are on the call's clock (ms since the call started, the caller's audio). A segment
    with ``final`` False is interim (more words may follow, the text may grow); the final one
    of the same ``start_ms`` replaces it. Segments are final once the STT's delay has passed.
    """

    type: ClassVar[str] = "transcript.caller"

    text: str = Field(max_length=MAX_TEXT_CHARS)
    start_ms: int = Field(ge=0, description="call time the first word started")
    end_ms: int = Field(ge=0, description="call time the last word ended")
    words: list[tuple[str, int, int]] = Field(
        default_factory=list, max_length=2048, description="[word, start_ms, end_ms] each"
    )
    final: bool = True


class BargeIn(Event):
    """The caller spoke while the agent was speaking and the agent yielded."""

    type: ClassVar[str] = "bargein"

    caller_onset_ms: int = Field(ge=0, description="call time the caller started speaking")
    agent_stop_ms: int = Field(ge=0, description="call time the agent's audio stopped")
    latency_ms: int = Field(description="agent_stop_ms - caller_onset_ms")
    discarded_ms: int = Field(0, ge=0, description="queued agent audio dropped (clear)")
    cut_text: str = Field("", max_length=MAX_TEXT_CHARS, description="agent text not heard")
    caller_text: str = Field(
        "", max_length=MAX_TEXT_CHARS, description="the caller's words that interrupted (STT)"
    )


class Dtmf(Event):
    """A DTMF digit from the caller."""

    type: ClassVar[str] = "dtmf"

    digit: str = Field(pattern=r"^[0-9*#A-Da-d]$")
    duration_ms: int | None = Field(None, ge=0)


class CallError(Event):
    """Something went wrong in a call (malformed frame, engine failure); not necessarily fatal."""

    type: ClassVar[str] = "error"

    code: str = Field(max_length=64, description="short machine-readable code")
    message: str = Field(max_length=2048)
    is_fatal: bool = False


class CallReanchored(Event):
    """A long call's model context was rebuilt (persona prompt + its last frames) before the
    persona left the model's 240 s window; the caller hears no seam. Carries its cost."""

    type: ClassVar[str] = "call.reanchored"

    prompt_frames: int = Field(ge=0, description="persona prompt frames (80 ms each)")
    kept_frames: int = Field(ge=0, description="conversation frames prefilled after the prompt")
    chunks: int = Field(ge=0, description="between-tick chunks the prefill took")
    compute_ms: float = Field(ge=0, description="engine time the re-anchor took, all chunks")
    position_before: int = Field(ge=0, description="model position before (frames in window)")
    position_after: int = Field(ge=0, description="model position after")


class CallerSpeech(Event):
    """One turn of caller speech as the caller VAD saw it (onset to stop, backdated), emitted
    when the turn ends (or the call does): the caller lane of the page's call timeline."""

    type: ClassVar[str] = "caller.speech"

    start_ms: int = Field(ge=0, description="call time the caller started speaking")
    end_ms: int = Field(ge=0, description="call time the caller stopped")


class CallContext(Event):
    """A call's per-call context: where each prompt variable's value came from, and what the
    call-start webhook did (``webhook``: ``ok``, ``timeout``, ``error`` or ``off``; on a
    timeout or an error the call went on with the values it had)."""

    type: ClassVar[str] = "call.context"

    persona: str = Field(max_length=MAX_SHORT_CHARS)
    sources: dict[str, str] = Field(
        default_factory=dict, description="variable -> default, numbers, call or webhook"
    )
    webhook: str = Field("off", max_length=16)
    action: str = Field("continue", max_length=16, description="continue, refuse or overflow")
    detail: str = Field("", max_length=2048)


class LegStatus(Event):
    """A leg-level status report (Twilio stream statusCallback, SIP dialog state, ICE state)."""

    type: ClassVar[str] = "leg.status"

    status: str = Field(max_length=MAX_SHORT_CHARS, description="e.g. stream-started")
    detail: str = Field("", max_length=2048)

    def hash_fields(self) -> dict[str, str]:
        return {"leg_status": self.status}


class RecordingStarted(Event):
    """The call is being recorded (stereo WAV: caller left, agent right, as heard)."""

    type: ClassVar[str] = "recording.started"

    path: str = Field(max_length=4096, description="the file on the gateway")
    format: str = Field("wav", max_length=32, description="wav: PCM 16-bit stereo")
    rate_hz: int = Field(gt=0)
    announcement: bool = Field(False, description="a consent announcement plays first")


class RecordingEnded(Event):
    """The recording is complete (or discarded: the caller left during the announcement)."""

    type: ClassVar[str] = "recording.ended"

    path: str = Field(max_length=4096, description="the file on the gateway")
    duration_ms: int = Field(ge=0, description="length of the recording (the call's)")
    size_bytes: int = Field(0, ge=0)
    status: str = Field(max_length=32, description="complete, discarded or failed")
    detail: str = Field("", max_length=2048)

    def hash_fields(self) -> dict[str, str]:
        return {"recording_path": self.path, "recording_status": self.status}


class RecordingUploaded(Event):
    """The recording's upload to S3-compatible storage is over: ``uploaded`` (``url`` is the
    object's address) or ``failed`` (every retry failed; ``detail`` has the last error)."""

    type: ClassVar[str] = "recording.uploaded"

    path: str = Field(max_length=4096, description="the file on the gateway")
    status: str = Field(max_length=32, description="uploaded or failed")
    url: str = Field(
        "", max_length=4096, description="the object's URL (path-style on an endpoint)"
    )
    bucket: str = Field("", max_length=255)
    key: str = Field("", max_length=4096)
    attempts: int = Field(0, ge=0)
    upload_ms: int = Field(0, ge=0, description="from the first attempt to the last one's end")
    detail: str = Field("", max_length=2048)

    def hash_fields(self) -> dict[str, str]:
        out = {"recording_upload": self.status}
        if self.url:
            out["recording_url"] = self.url
        return out


def encode_fields(event: Event) -> dict[str, str]:
    """Flat ``str -> str`` stream fields of ``event``; raises EventSchemaError if it cannot."""
    cls = type(event)
    if not isinstance(event, Event) or not cls.type:
        raise EventSchemaError(f"expected an Event subclass instance, got {cls.__name__}")
    out = {"type": cls.type}
    size = 4 + len(cls.type)
    json_fields = cls._json_fields
    for name, wire in cls._wire:
        value = getattr(event, name)
        if value is None:
            continue
        if name in json_fields:
            if isinstance(value, BaseModel):
                text = value.model_dump_json(exclude_none=True)
            else:
                try:
                    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
                except (TypeError, ValueError) as exc:
                    raise EventSchemaError(
                        f"{cls.type} call {event.call_id}: field {wire!r} is not JSON: {exc}"
                    ) from exc
        elif value is True:
            text = "true"
        elif value is False:
            text = "false"
        elif isinstance(value, str):
            text = value
        else:
            text = repr(value) if isinstance(value, float) else str(value)
        out[wire] = text
        size += len(wire) + len(text)
    if size > MAX_EVENT_BYTES // 4:  # cheap char count first; exact bytes only when it matters
        nbytes = sum(len(k.encode()) + len(v.encode()) for k, v in out.items())
        if nbytes > MAX_EVENT_BYTES:
            raise EventSchemaError(
                f"{cls.type} call {event.call_id}: encoded size {nbytes} bytes exceeds "
                f"the {MAX_EVENT_BYTES}-byte limit"
            )
    return out


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def decode_fields(fields: Mapping[str, str] | Mapping[bytes, bytes]) -> Event:
    """Parse stream fields (``str`` or ``bytes``) back into their event model."""
    data = {_text(k): _text(v) for k, v in fields.items()}
    type_name = data.pop("type", None)
    if type_name is None:
        raise EventSchemaError(f"event has no 'type' field: {sorted(data)}")
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise EventSchemaError(f"unknown event type {type_name!r}; known: {sorted(EVENT_TYPES)}")
    values: dict[str, object] = {}
    wire_to_name = {wire: name for name, wire in cls._wire}
    for wire, text in data.items():
        name = wire_to_name.get(wire)
        if name is None:
            raise EventSchemaError(f"{type_name}: unexpected field {wire!r}")
        if name in cls._json_fields:
            try:
                values[wire] = json.loads(text)
            except ValueError as exc:
                raise EventSchemaError(f"{type_name}: field {wire!r} is not JSON: {exc}") from exc
        else:
            values[wire] = text
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        raise EventSchemaError(f"{type_name}: {exc}") from exc
