"""VoiceGate's exception hierarchy.

    VoiceGateError
    +-- ConfigError                      bad settings or files named by settings
    +-- InvalidStateError                an operation in the wrong state (dialog, call, slot)
    +-- PersonaError                     a persona that cannot be loaded
    |   +-- PersonaValidationError       schema/YAML problems (carries every problem found)
    |   +-- UnknownPersona
    +-- RoutingError                     numbers.yaml problems, no route for a number
    +-- AudioError
    |   +-- CodecError (ValueError)
    |   +-- WavError (ValueError)         a WAV file that cannot be read or used
    +-- EventError                       the event log
    +-- RecordingError                   a call recording: its announcement, folder or upload
    +-- EngineError
    |   +-- NoFreeSlot                   every slot of the batch is taken
    |       +-- CallRefused              the call-start webhook refused the call (busy, no overflow)
    |   +-- CheckpointError              missing / extra / misshapen tensors, missing files
    +-- LegError
        +-- TwilioError
        |   +-- TwilioProtocolError (ValueError)
        +-- SipError
        |   +-- SipParseError (ValueError)
        |   |   +-- SipBadHeader         a control byte in a header (legs.sip.message; answered 400)
        |   +-- SdpError (ValueError)
        |   +-- RtpParseError (ValueError)
        +-- WebRtcError

A message says what was expected, what arrived, and the call_id where there is one.
Foreign exceptions are wrapped at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "AudioError",
    "CallRefused",
    "CheckpointError",
    "CodecError",
    "ConfigError",
    "EngineError",
    "EventError",
    "InvalidStateError",
    "LegError",
    "NoFreeSlot",
    "PersonaError",
    "PersonaValidationError",
    "RecordingError",
    "RoutingError",
    "RtpParseError",
    "SdpError",
    "SipError",
    "SipParseError",
    "TwilioError",
    "TwilioProtocolError",
    "UnknownPersona",
    "VoiceGateError",
    "WavError",
    "WebRtcError",
]


class VoiceGateError(Exception):
    """Base of every error VoiceGate raises on purpose."""


class ConfigError(VoiceGateError):
    """Settings, or a file they name, are wrong."""


class InvalidStateError(VoiceGateError):
    """An operation was attempted in a state that does not allow it."""


class PersonaError(VoiceGateError):
    """A persona cannot be loaded or used."""


class PersonaValidationError(PersonaError):
    """A persona file has problems; ``problems`` lists every one found."""

    def __init__(self, message: str, problems: list[object] | None = None) -> None:
        super().__init__(message)
        self.problems: list[object] = list(problems or [])


class UnknownPersona(PersonaError):
    """No persona of that name is loaded."""


class RoutingError(VoiceGateError):
    """The numbers file is wrong, or a number has no route."""


class AudioError(VoiceGateError):
    """Audio conversion failed."""


class CodecError(AudioError, ValueError):
    """Encoded audio is malformed."""


class WavError(AudioError, ValueError):
    """A WAV file is unreadable, malformed or in a format we do not read; the message says why."""


class EventError(VoiceGateError):
    """The event log failed."""


class RecordingError(VoiceGateError):
    """A call recording cannot be made, kept or uploaded (announcement, folder, storage)."""


class EngineError(VoiceGateError):
    """The model engine failed or refused."""


class NoFreeSlot(EngineError):
    """Every slot of the engine's batch is taken."""


class CallRefused(NoFreeSlot):
    """The operator's call-start webhook refused the call: answered busy, never overflowed."""


class CheckpointError(EngineError):
    """A checkpoint or model folder is incomplete or does not match the model."""


class LegError(VoiceGateError):
    """A telephony leg failed."""


class TwilioError(LegError):
    """The Twilio Media Streams leg failed."""


class TwilioProtocolError(TwilioError, ValueError):
    """A Twilio message is malformed."""


class SipError(LegError):
    """The SIP leg failed."""


class SipParseError(SipError, ValueError):
    """A SIP message is malformed."""


class SdpError(SipError, ValueError):
    """An SDP body is malformed or has nothing we can answer."""


class RtpParseError(SipError, ValueError):
    """An RTP packet is malformed."""


class WebRtcError(LegError):
    """The WebRTC leg failed."""
