"""The WebRTC leg: browser calls through aiortc (Opus at 48 kHz) on the same Call/engine path.

Modules: ``media`` (frame conversion, the agent's outbound track), ``ice`` (STUN and the
loopback-only mode), ``session`` (one peer connection, the Call's ``LegTransport``), ``routes``
(``WebRtcLeg`` and ``POST /webrtc/offer``). Bearer tokens are checked with ``voicegate.auth``.
"""

from __future__ import annotations

from voicegate.legs.webrtc.media import AgentAudioTrack, MediaCounters, to_mono_int16
from voicegate.legs.webrtc.routes import OFFER_PATH, Offer, WebRtcLeg
from voicegate.legs.webrtc.session import SdpRejected, WebRtcSession

__all__ = [
    "OFFER_PATH",
    "AgentAudioTrack",
    "MediaCounters",
    "Offer",
    "SdpRejected",
    "WebRtcLeg",
    "WebRtcSession",
    "to_mono_int16",
]
