"""Calls: per-call state between a Leg and the Engine (see ``base`` for the contracts).

``CallManager.start_call(info, leg) -> Call`` admits a call into an engine slot; the leg then
drives the ``Call`` (``CallLike``): feed caller audio, pull agent audio, DTMF, leg closed.
"""

from __future__ import annotations

from voicegate.calls.bargein import BargeInRecord
from voicegate.calls.base import CallInfo, CallLike, EndReason, EndResult, LegTransport
from voicegate.calls.call import Call, CallState, EventSink
from voicegate.calls.dynamics import Dynamics, analyse
from voicegate.calls.manager import CallManager, PersonaSource, limits_of
from voicegate.calls.options import CallConfig, CallLimits
from voicegate.calls.transcript import AgentSegment, TranscriptSegmenter

__all__ = [
    "AgentSegment",
    "BargeInRecord",
    "Call",
    "CallConfig",
    "CallInfo",
    "CallLike",
    "CallLimits",
    "CallManager",
    "CallState",
    "Dynamics",
    "EndReason",
    "EndResult",
    "EventSink",
    "LegTransport",
    "PersonaSource",
    "TranscriptSegmenter",
    "analyse",
    "limits_of",
]
