"""Calls: per-call state between a Leg and the Engine (the contracts are in ``voicegate.contracts``;
the ones a Leg uses are re-exported here).

``CallManager.start_call(info, leg) -> Call`` admits a call into an engine slot; the leg then
drives the ``Call`` (``CallLike``): feed caller audio, pull agent audio, DTMF, leg closed.

Timelines (every ``*_ms`` in events and records is ms since the call started):

- caller clock: samples the leg fed, at its rate. Caller voice activity (onsets, stops) lives
  here, backdated by the VAD to where speech began.
- playout clock: samples the leg pulled, silence included. A leg pulls at real time, so this
  is when the caller hears a sample (less ``leg.queued_ms`` for a leg that sends ahead). Agent
  audibility, transcript segment times and the agent's stop at a barge-in live here.
- model side: an engine tick is placed on the caller clock when it reaches the loop, less how
  far back in the tick the model fell silent or spoke up (20 ms sub-blocks).

Modules: ``call`` (the Call), ``playout`` (agent audio ring, playout clock), ``voice`` (both
parties' voice activity), ``bargein`` (decisions), ``transcript`` (segments), ``dynamics``
(talk/overlap/backchannels/response gaps), ``report`` (events), ``manager`` (admission, drain),
``faults`` (engine faults: calls to overflow or ended, admission held while the engine is rebuilt),
``metrics`` (Prometheus), ``options`` (limits, tuning).
"""

from __future__ import annotations

from voicegate.calls.bargein import BargeInRecord
from voicegate.calls.call import Call, CallState
from voicegate.calls.dynamics import Dynamics, analyse
from voicegate.calls.faults import FaultResponder
from voicegate.calls.manager import CallManager, PersonaSource, limits_of
from voicegate.calls.options import CallConfig, CallLimits
from voicegate.calls.transcript import AgentSegment, TranscriptSegmenter
from voicegate.contracts import CallInfo, CallLike, EndReason, EndResult, EventSink, LegTransport

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
    "FaultResponder",
    "LegTransport",
    "PersonaSource",
    "TranscriptSegmenter",
    "analyse",
    "limits_of",
]
