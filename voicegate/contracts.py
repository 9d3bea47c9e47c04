"""The contracts that rooms share: the types and protocols a Leg, a Call, the engine, the
personas and the app use to talk to each other, each defined here once.

Who implements what (``voicegate.app`` wires them together)::

    Leg (legs/*)            LegTransport              what a Call may ask of its Leg
    Leg that can transfer   LegControl                hand the caller to a number or SIP URI
    Call (calls/call.py)    CallLike                  what a Leg may ask of its Call
    CallManager             CallAdmission             admitting a call (``start_call`` -> CallLike)
    NumbersStore / Router   PersonaRouter             called number or SIP user -> persona name
    PersonaStore            PersonaNames              is a persona of that name loaded
    EventLog                EventSink                 where a Call's events go
    LegEvents (events/)     LegReporter               what a Leg reports that no Call can
    the engine's tokenizer  TokenCounter              a prompt's length in model tokens
    personas -> engine      PersonaPrompt, SamplingParams
    personas -> calls       FlowRules, FlowAction     a persona's transfers and hang-ups

A Leg never builds an event: the Call writes the call's events. A Leg reports the
few things only it sees through the ``LegReporter`` it is given: its signalling status (SIP
dialog states, Twilio stream callbacks) and its own errors. Some of these legitimately come
when no Call is there to write them (a Twilio status callback for a stream that never started
or has ended, a SIP dialog's last states after its Call ended, a refused INVITE should a leg
report one), which is why they do not go through the Call.

Usage (a leg, on the event loop)::

    if calls.can_admit():
        call = calls.start_call(CallInfo(call_id, "sip", persona, from_, to), leg)
        call.feed_caller_audio(pcm_int16)          # every received chunk
        pcm = call.pull_agent_audio(160)           # each 20 ms of the leg's clock
        call.on_leg_closed(EndReason.CALLER_HANGUP)
    reporter.leg_status(call_id, "sip", t_ms, "dialog-confirmed", "")

Owns: the shared contracts above and ``CALL_ID_PATTERN``. The ground floor: imports only the
standard library (numpy and ``Event`` for type checking only); every room may import it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from voicegate.events.schema import Event

__all__ = [
    "CALL_ID_PATTERN",
    "CallAdmission",
    "CallInfo",
    "CallLike",
    "EndReason",
    "EndResult",
    "EventSink",
    "FlowAction",
    "FlowRules",
    "LegControl",
    "LegReporter",
    "LegTransport",
    "PersonaNames",
    "PersonaPrompt",
    "PersonaRouter",
    "SamplingParams",
    "TokenCounter",
    "TransferOutcome",
    "TransferTarget",
]

# A call_id as events carry it (Twilio CallSids, SIP Call-IDs, our own ids all match).
CALL_ID_PATTERN = r"^[A-Za-z0-9._:@+-]{1,128}$"

TokenCounter = Callable[[str], int]
"""A text prompt's length in model tokens (the engine's tokenizer, or an estimate)."""


# --- calls ------------------------------------------------------------------------------------


class EndResult(enum.Enum):
    """Closed set of call outcomes (paired with a free-text detail when logged)."""

    SUCCESS = "success"
    CLIENT_ERROR = "client_error"
    SERVER_ERROR = "server_error"
    UPSTREAM_ERROR = "upstream_error"


class EndReason(enum.Enum):
    """Why a call ended; ``call.ended`` carries the value."""

    CALLER_HANGUP = "caller_hangup"
    MAX_DURATION = "max_duration"
    SILENCE_TIMEOUT = "silence_timeout"
    MEDIA_TIMEOUT = "media_timeout"
    DRAIN = "drain"
    ERROR = "error"
    TRANSFERRED = "transferred"  # handed to a person (the persona's call flow)
    AGENT_HANGUP = "agent_hangup"  # the persona's call flow hung up
    OVERFLOW = "overflow"  # sent to the overflow destination (no slot, drain, engine fault)
    ENGINE_FAULT = "engine_fault"  # the engine failed and no overflow destination was set
    GATEWAY_LOST = "gateway_lost"  # its gateway died; closed by a survivor of the fleet

    @property
    def result(self) -> EndResult:
        if self in (EndReason.ERROR, EndReason.ENGINE_FAULT, EndReason.GATEWAY_LOST):
            return EndResult.SERVER_ERROR
        if self is EndReason.MEDIA_TIMEOUT:
            return EndResult.UPSTREAM_ERROR
        return EndResult.SUCCESS


@dataclass(frozen=True, slots=True)
class CallInfo:
    """Who called whom, on which leg, with which persona."""

    call_id: str
    leg: str  # "twilio" | "sip" | "webrtc"
    persona: str
    from_: str = ""
    to: str = ""
    leg_call_ref: str = ""  # Twilio CallSid, SIP Call-ID, WebRTC session id
    # per-call context (raw, untrusted): the leg's own data (Twilio custom parameters, SIP X-
    # headers, WebRTC offer variables), and the values the call-start webhook set
    call_data: Mapping[str, str] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)


class LegTransport(Protocol):
    """What a Call may ask of its Leg.

    A Leg turns its protocol into caller audio (signed 16-bit PCM at the leg's own rate, any
    chunk length) plus DTMF and hang-ups, and plays the agent's audio that it pulls from the
    Call at its own pace. It knows nothing of the model.
    """

    @property
    def rate_hz(self) -> int:
        """Sample rate of the PCM the leg feeds and pulls (8000 for Twilio/SIP, 48000 WebRTC)."""
        ...

    def clear_playout(self) -> None:
        """Drop agent audio already queued on the far side (Twilio ``clear``); no-op if none.

        A leg that sends ahead of real time may also expose ``queued_ms: int`` (agent audio
        sent but not yet played); the Call reads it just before a clear to time the barge-in.
        A leg may also expose ``on_agent_text(t_ms, text)``: the Call then hands it the agent's
        text pieces as they are played (pulled), on the playout clock.
        """
        ...

    def request_hangup(self, reason: EndReason) -> None:
        """End the call from our side (BYE, close the socket); non-blocking, idempotent."""
        ...


@dataclass(frozen=True, slots=True)
class FlowAction:
    """``transfer`` to a destination by name, or ``hangup``."""

    kind: str  # "transfer" | "hangup"
    destination: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("transfer", "hangup"):
            raise ValueError(f"call flow: unknown action {self.kind!r}")
        if self.kind == "transfer" and not self.destination:
            raise ValueError("call flow: a transfer needs a destination")


@dataclass(frozen=True, slots=True)
class FlowRules:
    """A persona's call flow (``Persona.flow_rules()`` from its YAML ``call_flow``; applied by
    ``voicegate.calls.flow.CallFlow``)."""

    destinations: dict[str, str] = field(default_factory=dict)  # name -> number or SIP URI
    handoff_urls: dict[str, str] = field(default_factory=dict)  # name -> warm handoff URL
    dtmf: dict[str, FlowAction] = field(default_factory=dict)
    agent_says: tuple[tuple[str, FlowAction], ...] = ()
    # phrases in the caller's words (the engine's caller STT; none without it)
    caller_says: tuple[tuple[str, FlowAction], ...] = ()
    on_max_duration: FlowAction | None = None
    on_silence_timeout: FlowAction | None = None
    hangup_silence_ms: int = 1500
    fallback_say: str = ""  # Twilio: said when the person does not answer

    @property
    def is_empty(self) -> bool:
        return not (
            self.dtmf
            or self.agent_says
            or self.caller_says
            or self.on_max_duration
            or self.on_silence_timeout
        )


@dataclass(frozen=True, slots=True)
class TransferTarget:
    """Where a caller is handed: ``to`` is an E.164 number (``+14155550123``) or a SIP URI
    (``sip:queue@pbx.example.com``); ``destination`` is its name in the persona's call flow;
    ``handoff_id`` (may be empty) travels with the call where the protocol allows."""

    destination: str
    to: str
    handoff_id: str = ""

    @property
    def is_sip(self) -> bool:
        return self.to.lower().startswith(("sip:", "sips:"))


class TransferOutcome(enum.Enum):
    """What became of a transfer the Call asked its leg for."""

    HANDED_OFF = "handed_off"  # our side is done: the leg closes the call as TRANSFERRED
    FAILED = "failed"  # refused or failed: the call stays with the agent
    UNSUPPORTED = "unsupported"  # this leg cannot transfer (a browser call)


class LegControl(Protocol):
    """A leg that can hand its caller on (Twilio ``<Dial>``, SIP REFER); optional.

    ``transfer`` is non-blocking. The leg reports the outcome once with
    ``call.on_transfer_result``: ``HANDED_OFF`` when the call has left us (then it also closes
    the call with ``EndReason.TRANSFERRED``), ``FAILED`` with the reason when the call stays.
    """

    def transfer(self, target: TransferTarget) -> None: ...


class CallLike(Protocol):
    """What a Leg may ask of its Call (all on the event loop)."""

    def feed_caller_audio(self, pcm: npt.NDArray[np.int16]) -> None:
        """The caller's audio at the leg's rate, any length, in order.

        Feed it continuously: the Call's caller clock counts these samples, so a leg whose peer
        stops sending (RTP silence suppression, Opus DTX, lost packets) feeds silence for the
        gap, or the caller's timeline falls behind the playout clock.
        """
        ...

    def pull_agent_audio(self, n_samples: int) -> npt.NDArray[np.int16]:
        """Exactly ``n_samples`` at the leg's rate, silence when none is queued.

        The array is a view of a reused buffer, valid until the next pull: encode or copy it.
        """
        ...

    def on_dtmf(self, digit: str) -> None: ...

    def on_leg_closed(self, reason: EndReason) -> None: ...

    def on_transfer_result(
        self, target: TransferTarget, outcome: TransferOutcome, detail: str
    ) -> None:
        """What became of the transfer asked by ``LegControl.transfer`` (see there)."""
        ...


class CallAdmission(Protocol):
    """What a Leg needs of the ``CallManager``."""

    def can_admit(self) -> bool:
        """True when a new call would be taken now (not draining, a slot free)."""
        ...

    def start_call(self, info: CallInfo, leg: LegTransport) -> CallLike:
        """Admit a call into an engine slot; raises ``NoFreeSlot`` when full or draining.

        A ``CallManager`` also has ``async prepare_call(info) -> CallInfo``: a leg awaits it
        (when present) just before ``start_call`` to run the operator's call-start webhook,
        which may change the persona or the call's variables, or refuse (``CallRefused``) or
        overflow (``NoFreeSlot``) the call.
        """
        ...


# --- personas ---------------------------------------------------------------------------------


class PersonaRouter(Protocol):
    """``NumbersStore`` / ``Router``: called number or SIP user -> persona name (never raises)."""

    def route(self, to: str) -> str: ...

    def overflow(self, to: str) -> str:
        """Where a call to ``to`` goes when the gateway cannot take it: an E.164 number or a
        SIP URI, "" when none is set (then the answer is busy)."""
        ...


class PersonaNames(Protocol):
    """``PersonaStore``: whether a persona of that name is loaded."""

    def has(self, name: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-persona sampling settings (defaults from the PersonaPlex reference)."""

    text_temperature: float = 0.7
    text_top_k: int = 25
    audio_temperature: float = 0.8
    audio_top_k: int = 250


@dataclass(frozen=True, slots=True)
class PersonaPrompt:
    """What the engine needs of a persona: its prompt state depends only on voice and text."""

    key: str
    text_prompt: str
    voice: str  # a preset name (NATF0 ...) or an absolute path to a WAV clip
    sampling: SamplingParams = field(default_factory=SamplingParams)
    voice_path: Path | None = None  # resolved WAV path when voice is a clip


# --- events -----------------------------------------------------------------------------------


class EventSink(Protocol):
    """Where a Call's events go (``voicegate.events.EventLog``): sync, never blocks."""

    def emit(self, event: Event) -> None: ...


class LegReporter(Protocol):
    """What a Leg reports that no Call can (``voicegate.events.LegEvents``): sync, never blocks.

    Either may come before a Call exists or after it ended; ``t_ms`` is the time since the call
    started as the leg knows it (0 when no call started).
    """

    def leg_status(self, call_id: str, leg: str, t_ms: int, status: str, detail: str) -> None:
        """A ``leg.status`` event: a signalling state of the leg (``dialog-confirmed``, ...)."""
        ...

    def leg_error(
        self, call_id: str, leg: str, t_ms: int, code: str, message: str, is_fatal: bool
    ) -> None:
        """An ``error`` event raised by the leg (a malformed message, a refused media stream)."""
        ...

    def leg_transfer(
        self, call_id: str, leg: str, t_ms: int, target: TransferTarget, result: str, detail: str
    ) -> None:
        """A ``call.transfer`` event the leg learns after its Call ended (Twilio's ``<Dial>``
        outcome: ``answered``, ``busy``, ``no-answer``, ``failed``)."""
        ...
