"""The contract between a Leg (Twilio, SIP, WebRTC) and its Call.

A Leg turns its protocol into caller audio (signed 16-bit PCM at the leg's own rate, any chunk
length) plus events, and plays the agent's audio that it pulls from the Call at its own pace.
It knows nothing of the model. The Call does the rest: resampling to 24 kHz, the engine slot,
voice activity, barge-in, transcripts, call events.

Usage (all on the event loop)::

    call = calls.start_call(CallInfo(...), leg)   # raises NoFreeSlot when full
    call.feed_caller_audio(pcm_int16)              # every received chunk
    call.on_dtmf("5")
    pcm = call.pull_agent_audio(160)               # each 20 ms of the leg's clock (silence if none)
    call.on_leg_closed(EndReason.CALLER_HANGUP)    # BYE, stop, socket closed

Owns: the Leg and Call protocols and the end reasons. Must not import engine or legs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["CallInfo", "CallLike", "EndReason", "EndResult", "LegTransport"]


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

    @property
    def result(self) -> EndResult:
        if self is EndReason.ERROR:
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


class LegTransport(Protocol):
    """What a Call may ask of its Leg."""

    @property
    def rate_hz(self) -> int:
        """Sample rate of the PCM the leg feeds and pulls (8000 for Twilio/SIP, 48000 WebRTC)."""
        ...

    def clear_playout(self) -> None:
        """Drop agent audio already queued on the far side (Twilio ``clear``); no-op if none.

        A leg that sends ahead of real time may also expose ``queued_ms: int`` (agent audio
        sent but not yet played); the Call reads it just before a clear to time the barge-in.
        """
        ...

    def request_hangup(self, reason: EndReason) -> None:
        """End the call from our side (BYE, close the socket); non-blocking, idempotent."""
        ...


class CallLike(Protocol):
    """What a Leg may ask of its Call."""

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
