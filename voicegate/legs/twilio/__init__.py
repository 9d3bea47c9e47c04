"""The Twilio Media Streams leg: signed webhooks, TwiML, the media WebSocket, and a simulator.

Modules: ``protocol`` (pure JSON messages both ways), ``twiml``, ``security`` (signatures,
one-time call tokens), ``playout`` (mark accounting), ``stream`` (one socket's owner, the Call's
``LegTransport``), ``routes`` (``TwilioLeg`` and its ``APIRouter``), ``metrics``, ``sim``
(Twilio's side, for the demo, tests and the load benchmark; import it from its module).
"""

from __future__ import annotations

from voicegate.legs.twilio.metrics import TwilioLegStats
from voicegate.legs.twilio.playout import PlayoutTracker
from voicegate.legs.twilio.routes import MEDIA_PATH, STATUS_PATH, VOICE_PATH, TwilioLeg
from voicegate.legs.twilio.security import CallGrant, CallTokens, SignatureChecker
from voicegate.legs.twilio.stream import TwilioMediaStream

__all__ = [
    "MEDIA_PATH",
    "STATUS_PATH",
    "VOICE_PATH",
    "CallGrant",
    "CallTokens",
    "PlayoutTracker",
    "SignatureChecker",
    "TwilioLeg",
    "TwilioLegStats",
    "TwilioMediaStream",
]
