"""The WebRTC leg: browser calls through aiortc (Opus at 48 kHz) on the same Call/engine path.

Modules: ``media`` (frame conversion, the agent's outbound track), ``ice`` (STUN and the
loopback-only mode), ``session`` (one peer connection, the Call's ``LegTransport``), ``routes``
(``WebRtcLeg`` and ``POST /webrtc/offer``), ``auth`` (bearer tokens, shared with ``voicegate.web``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from voicegate.legs.webrtc.auth import bearer_matches

if TYPE_CHECKING:
    from voicegate.legs.webrtc.media import AgentAudioTrack, MediaCounters, to_mono_int16
    from voicegate.legs.webrtc.routes import OFFER_PATH, Offer, WebRtcLeg
    from voicegate.legs.webrtc.session import SdpRejected, WebRtcSession

# ``auth`` is standard library only and ``voicegate.web`` imports it; the rest needs aiortc and
# av, which a gateway with VOICEGATE_WEBRTC_ENABLED=false must not import (they may not even
# be installed there), so it loads on first use.
_LAZY = {
    "AgentAudioTrack": "media",
    "MediaCounters": "media",
    "OFFER_PATH": "routes",
    "Offer": "routes",
    "SdpRejected": "session",
    "WebRtcLeg": "routes",
    "WebRtcSession": "session",
    "to_mono_int16": "media",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'voicegate.legs.webrtc' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"voicegate.legs.webrtc.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "OFFER_PATH",
    "AgentAudioTrack",
    "MediaCounters",
    "Offer",
    "SdpRejected",
    "WebRtcLeg",
    "WebRtcSession",
    "bearer_matches",
    "to_mono_int16",
]
