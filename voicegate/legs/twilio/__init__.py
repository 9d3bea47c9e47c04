"""The Twilio Media Streams leg: signed webhooks, TwiML, the media WebSocket, and a simulator.

Modules: ``protocol`` (pure JSON messages both ways), ``twiml``, ``security`` (signatures,
one-time call tokens), ``playout`` (mark accounting), ``nextsteps`` (what the ``<Connect
action>`` answers per CallSid: dial a transfer or the overflow, or hang up), ``stream`` (one
socket's owner, the Call's ``LegTransport`` and ``LegControl``), ``routes`` (``TwilioLeg`` and its ``APIRouter``), ``metrics``, ``sim``
(Twilio's side, for the demo, tests and the load benchmark; import it from its module).
"""

from __future__ import annotations

from voicegate.legs.twilio.metrics import TwilioLegStats
from voicegate.legs.twilio.nextsteps import NextStep, NextSteps
from voicegate.legs.twilio.playout import PlayoutTracker
from voicegate.legs.twilio.routes import (
    DIAL_STATUS_PATH,
    MEDIA_PATH,
    NEXT_PATH,
    STATUS_PATH,
    VOICE_PATH,
    WHISPER_PATH,
    TwilioLeg,
)
from voicegate.legs.twilio.security import (
    CallGrant,
    CallTokens,
    SignatureChecker,
    SignedCallTokens,
)
from voicegate.legs.twilio.stream import TwilioMediaStream

__all__ = [
    "DIAL_STATUS_PATH",
    "MEDIA_PATH",
    "NEXT_PATH",
    "STATUS_PATH",
    "VOICE_PATH",
    "WHISPER_PATH",
    "CallGrant",
    "CallTokens",
    "NextStep",
    "NextSteps",
    "PlayoutTracker",
    "SignatureChecker",
    "SignedCallTokens",
    "TwilioLeg",
    "TwilioLegStats",
    "TwilioMediaStream",
]
