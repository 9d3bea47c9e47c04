"""The SIP trunk leg: an asyncio SIP user-agent server (UDP, TCP) with RTP media.

Modules: ``message`` (SIP parsing under limits, responses, TCP framing), ``sdp`` (offer/answer),
``rtp`` (packets, reorder buffer, RFC 4733 DTMF), ``auth`` (digest, allow-list, INVITE rate),
``media`` (one call's RTP port, the shared 20 ms pacer), ``transaction`` (timers, retransmission),
``dialog`` (the INVITE dialog state machine, the Call's leg), ``server`` (listeners and
dispatch), ``metrics``.

Usage (in the app's lifespan)::

    sip = SipServer(SipConfig.from_settings(settings), calls=call_manager, router=numbers,
                    events=LegEvents(event_log))
    await sip.start()
    ...
    await sip.close()
"""

from __future__ import annotations

from voicegate.legs.sip.dialog import Dialog, DialogState
from voicegate.legs.sip.metrics import SipStats
from voicegate.legs.sip.server import SipConfig, SipServer
from voicegate.legs.sip.transaction import Peer, SipTimers

__all__ = ["Dialog", "DialogState", "Peer", "SipConfig", "SipServer", "SipStats", "SipTimers"]
