"""Call events built from a Call's data: one function per event type (voicegate.events models).

Owns: the mapping from call state to ``call.started``, ``call.ended``, ``transcript.agent``,
``bargein``, ``dtmf``, ``call.transfer`` and ``error`` events. Pure: builds models, emits nothing.
"""

from __future__ import annotations

from voicegate.calls.bargein import BargeInRecord
from voicegate.calls.dynamics import Dynamics
from voicegate.calls.flow import FlowTrigger
from voicegate.calls.recording import CallRecorder, RecordingResult
from voicegate.calls.transcript import AgentSegment
from voicegate.contracts import CallInfo, EndReason, TransferTarget
from voicegate.engine.base import ReanchorReport
from voicegate.events.schema import (
    BargeIn,
    CallDynamics,
    CallEnded,
    CallError,
    CallerSpeech,
    CallReanchored,
    CallStarted,
    CallTransfer,
    Dtmf,
    RecordingEnded,
    RecordingStarted,
    TranscriptAgent,
)

__all__ = [
    "bargein",
    "caller_speech",
    "dtmf",
    "ended",
    "error",
    "reanchored",
    "recording_ended",
    "recording_started",
    "segment",
    "started",
    "transfer",
]

MAX_TEXT = 8192
MAX_DETAIL = 2048


def started(info: CallInfo) -> CallStarted:
    return CallStarted(
        call_id=info.call_id,
        leg=info.leg,
        t_ms=0,
        persona=info.persona,
        from_=info.from_,
        to=info.to,
        leg_call_ref=info.leg_call_ref,
    )


def ended(
    info: CallInfo,
    *,
    t_ms: int,
    reason: EndReason,
    detail: str,
    frames: int,
    underruns: int,
    bargeins: int,
    dynamics: Dynamics,
    counters: dict[str, int | float],
) -> CallEnded:
    return CallEnded(
        call_id=info.call_id,
        leg=info.leg,
        t_ms=t_ms,
        reason=reason.value,
        result=reason.result.value,
        detail=detail[:MAX_DETAIL],
        duration_ms=t_ms,
        frames=frames,
        underruns=underruns,
        bargeins=bargeins,
        dynamics=CallDynamics(
            caller_talk_ms=dynamics.caller_talk_ms,
            agent_talk_ms=dynamics.agent_talk_ms,
            overlap_ms=dynamics.overlap_ms,
            backchannels=dynamics.backchannels,
            response_gaps=len(dynamics.response_gaps_ms),
            response_gap_p50_ms=dynamics.response_gap_p50_ms,
            response_gap_p90_ms=dynamics.response_gap_p90_ms,
        ),
        counters=counters,
    )


def segment(info: CallInfo, seg: AgentSegment) -> TranscriptAgent:
    return TranscriptAgent(
        call_id=info.call_id,
        leg=info.leg,
        t_ms=seg.end_ms,
        text=seg.text[:MAX_TEXT],
        start_ms=seg.start_ms,
        end_ms=seg.end_ms,
        is_heard=seg.is_heard,
        cut_at_ms=seg.cut_at_ms,
        cut_text=seg.cut_text[:MAX_TEXT],
    )


def bargein(info: CallInfo, rec: BargeInRecord) -> BargeIn:
    return BargeIn(
        call_id=info.call_id,
        leg=info.leg,
        t_ms=rec.agent_stop_ms,
        caller_onset_ms=rec.caller_onset_ms,
        agent_stop_ms=rec.agent_stop_ms,
        latency_ms=rec.latency_ms,
        discarded_ms=rec.discarded_ms,
        cut_text=rec.cut_text[:MAX_TEXT],
    )


def dtmf(info: CallInfo, t_ms: int, digit: str) -> Dtmf:
    return Dtmf(call_id=info.call_id, leg=info.leg, t_ms=t_ms, digit=digit)


def error(info: CallInfo, t_ms: int, code: str, exc: BaseException) -> CallError:
    return CallError(
        call_id=info.call_id,
        leg=info.leg,
        t_ms=t_ms,
        code=code,
        message=f"{type(exc).__name__}: {exc}"[:MAX_DETAIL],
        is_fatal=True,
    )


def transfer(
    info: CallInfo,
    t_ms: int,
    target: TransferTarget,
    trigger: FlowTrigger,
    result: str,
    detail: str,
    latency_ms: float | None,
) -> CallTransfer:
    return CallTransfer(
        call_id=info.call_id,
        leg=info.leg,
        t_ms=t_ms,
        trigger=trigger.trigger,
        trigger_detail=trigger.detail[:256],
        destination=target.destination,
        to=target.to,
        handoff_id=target.handoff_id,
        result=result,
        detail=detail[:2048],
        latency_ms=None if latency_ms is None else int(latency_ms),
    )


def reanchored(info: CallInfo, t_ms: int, r: ReanchorReport) -> CallReanchored:
    return CallReanchored(
        call_id=info.call_id,
        leg=info.leg,
        t_ms=t_ms,
        prompt_frames=r.prompt_frames,
        kept_frames=r.kept_frames,
        chunks=r.chunks,
        compute_ms=round(r.compute_ms, 3),
        position_before=r.position_before,
        position_after=r.position_after,
    )


def caller_speech(info: CallInfo, start_ms: int, end_ms: int) -> CallerSpeech:
    return CallerSpeech(
        call_id=info.call_id, leg=info.leg, t_ms=end_ms, start_ms=start_ms, end_ms=end_ms
    )


def recording_started(
    info: CallInfo, rec: CallRecorder, has_announcement: bool
) -> RecordingStarted:
    return RecordingStarted(
        call_id=info.call_id,
        leg=info.leg,
        t_ms=0,
        path=str(rec.path),
        rate_hz=rec.rate_hz,
        announcement=has_announcement,
    )


def recording_ended(
    info: CallInfo, t_ms: int, result: RecordingResult, end_reason: EndReason | None = None
) -> RecordingEnded:
    if result.error:
        status = "failed"
    elif result.is_kept:
        status = "complete"
    else:
        status = "discarded"
    if result.error or result.is_kept:
        detail = result.error
    elif end_reason is EndReason.CALLER_HANGUP or end_reason is None:
        detail = "the caller left during the recording announcement"
    else:  # the call ended from our side (fault, drain, limit) before the caller consented
        detail = f"the call ended ({end_reason.value}) during the recording announcement"
    return RecordingEnded(
        call_id=info.call_id,
        leg=info.leg,
        t_ms=t_ms,
        path=str(result.path),
        duration_ms=result.duration_ms,
        size_bytes=result.size_bytes,
        status=status,
        detail=detail[:MAX_DETAIL],
    )
