"""The Call: one phone call between its Leg and its engine slot, from admission to its end.

Caller side (event loop): ``feed_caller_audio`` resamples the leg's PCM to 24 kHz, hands it to
the ``CallerFramer`` (``framing``: 1920-sample frames for ``slot.push``, in phase with the
engine's ticks) and runs the caller's voice activity. Agent side: the slot's ``on_tick`` runs
on the ENGINE THREAD and only copies the tick into the ``TickRing`` (``ticks``); the loop
drains it whenever the leg feeds or pulls, and ``pull_agent_audio`` serves exactly the leg's
frame from the ``PlayoutBuffer``. Barge-in, the transcript, limits and events follow from the
agent's and the caller's voice activity.

Timelines are in ms since the call started: the caller clock counts samples received from the
leg, the playout clock samples the leg pulled (the caller hears a pulled sample at its playout
time; a leg that sends ahead reports ``queued_ms``). Barge-in, transcripts and dynamics use
them; the only clock read is the injected ``clock`` that times the playout lead, so tests drive
a call sample by sample.

Owns: Call, CallState. Imports audio (through factories), events, engine.base, the contracts
and the calls modules; never a concrete engine or a leg.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Protocol

import numpy as np
import numpy.typing as npt

from voicegate.calls import report
from voicegate.calls.bargein import BargeInRecord, BargeInTracker
from voicegate.calls.caller_words import CallerSegment, CallerWords
from voicegate.calls.dynamics import Dynamics, analyse
from voicegate.calls.flow import CallFlow, FlowTrigger
from voicegate.calls.framing import CallerFramer
from voicegate.calls.handoff import HandoffPoster, handoff_document
from voicegate.calls.options import CallConfig, CallLimits
from voicegate.calls.playout import TICK_MS, PlayoutBuffer
from voicegate.calls.recording import CallRecorder, RecordingResult
from voicegate.calls.ticks import TickRing
from voicegate.calls.transcript import AgentSegment, TranscriptSegmenter
from voicegate.calls.voice import SUBBLOCK_MS, AgentVoice, CallerVoice, VadLike
from voicegate.contracts import (
    CallInfo,
    EndReason,
    EventSink,
    FlowAction,
    FlowRules,
    LegTransport,
    TransferOutcome,
    TransferTarget,
)
from voicegate.engine.base import MODEL_RATE_HZ, ReanchorReport, Slot, TickOutput
from voicegate.errors import InvalidStateError
from voicegate.events.schema import Event

__all__ = ["Call", "CallState", "ResamplerLike"]

# a barge-in's caller text: the words starting from a little before the onset (VAD onsets lag
# a word's first sound) to this long after it
BARGEIN_LEAD_MS = 300
BARGEIN_WORDS_MS = 1500

log = logging.getLogger("voicegate.calls")

AUDIBLE_SLACK_MS = 100


class ResamplerLike(Protocol):
    """What the Call needs of ``voicegate.audio.StreamingResampler``."""

    def process(
        self, x: npt.NDArray[np.int16] | npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]: ...


def _default_resampler(in_rate_hz: int, out_rate_hz: int) -> ResamplerLike:
    from voicegate.audio import StreamingResampler

    resampler: ResamplerLike = StreamingResampler(in_rate_hz, out_rate_hz)
    return resampler


def _default_vad(rate_hz: int) -> VadLike:
    from voicegate.audio import VoiceActivityDetector

    vad: VadLike = VoiceActivityDetector(rate_hz=rate_hz)
    return vad


class CallState(enum.Enum):
    ACTIVE = "active"  # joined its slot, audio flows
    ENDED = "ended"  # slot freed, call.ended emitted


_TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    CallState.ACTIVE: frozenset({CallState.ENDED}),
    CallState.ENDED: frozenset(),
}


_DEFAULT_CONFIG = CallConfig()
_NO_LIMITS = CallLimits()


class Call:
    """One call: implements ``CallLike`` for its leg and ``SlotSink`` for its engine slot.

    Built by ``CallManager.start_call``; a leg then calls, on the event loop::

        call.feed_caller_audio(pcm)        # int16 at leg.rate_hz, any length
        pcm = call.pull_agent_audio(n)     # exactly n int16 samples; a view valid until the next pull
        call.on_dtmf("5")
        call.on_leg_closed(EndReason.CALLER_HANGUP)
    """

    def __init__(
        self,
        info: CallInfo,
        leg: LegTransport,
        events: EventSink,
        *,
        limits: CallLimits = _NO_LIMITS,
        config: CallConfig = _DEFAULT_CONFIG,
        resampler_factory: Callable[[int, int], ResamplerLike] = _default_resampler,
        vad_factory: Callable[[int], VadLike] = _default_vad,
        on_end: Callable[[Call], None] | None = None,
        on_bargein: Callable[[Call, BargeInRecord], None] | None = None,
        flow: FlowRules | None = None,
        on_transfer: Callable[[Call, str, float | None], None] | None = None,
        handoff: HandoffPoster | None = None,
        new_handoff_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        clock: Callable[[], float] = time.monotonic,
        recorder: CallRecorder | None = None,
        announcement: npt.NDArray[np.int16] | None = None,
        on_announced: Callable[[Call], None] | None = None,
        on_recorded: Callable[[Call, RecordingResult], None] | None = None,
    ) -> None:
        self.info = info
        # recording (calls/recording.py) and the consent announcement played before the slot
        self.recorder = recorder
        self._announcement = (
            announcement if announcement is not None and len(announcement) else None
        )
        self._announce_pos = 0
        self._announce_out = np.zeros(0, dtype=np.int16)
        self._on_announced = on_announced
        self._on_recorded = on_recorded
        self._has_started = False
        self._flow = CallFlow(flow) if flow is not None and not flow.is_empty else None
        # named destinations count even without rules: the call API transfers to them
        self._destinations = dict(flow.destinations) if flow is not None else {}
        self._handoff_urls = dict(flow.handoff_urls) if flow is not None else {}
        self._on_transfer = on_transfer
        self._handoff = handoff
        self._new_handoff_id = new_handoff_id
        # a transfer asked of the leg: (target, trigger, clock() when asked); None when none
        self._transfer: tuple[TransferTarget, FlowTrigger, float] | None = None
        self.transfers: list[tuple[TransferTarget, str]] = []  # (target, outcome)
        self._clock = clock
        self._leg = leg
        # optional on a leg: the agent's words as they are played (pipecat's text frames)
        self._leg_text: Callable[[int, str], None] | None = getattr(leg, "on_agent_text", None)
        self._events = events
        self._limits = limits
        self._config = config
        self._on_end = on_end
        self._on_bargein = on_bargein
        rate = int(leg.rate_hz)
        self.rate_hz = rate
        self._state = CallState.ACTIVE
        self._slot: Slot | None = None
        self.end_reason: EndReason | None = None
        self.end_detail = ""
        # caller side
        self._in_rs = resampler_factory(rate, MODEL_RATE_HZ)
        self._framer = CallerFramer(rate, clock, config.caller_frame_margin_ms / 1000)
        self._caller_samples = 0
        self._caller = CallerVoice(rate, vad_factory) if config.is_caller_vad_enabled else None
        # engine thread -> loop
        self._ticks = TickRing(clock, self._take_tick, self._take_caller)
        # caller STT (when the engine runs one): words, segments and barge-in texts
        self._words: CallerWords | None = None
        self._bind_caller_ms = 0
        self._pending_bargeins: list[BargeInRecord] = []  # waiting for the STT's words
        self.caller_segments: list[CallerSegment] = []
        self._reanchors: deque[ReanchorReport] = deque()  # engine thread -> loop
        self._prime_time = 0.0  # arrival of the tick that primed the playout
        self.ticks = 0
        # agent side
        self._out_rs: ResamplerLike | None = (
            None if rate == MODEL_RATE_HZ else resampler_factory(MODEL_RATE_HZ, rate)
        )
        self._agent = AgentVoice(
            speech_dbfs=config.agent_speech_dbfs, silence_ms=config.agent_silence_ms
        )
        self._segmenter = TranscriptSegmenter(
            pad_run_ms=config.transcript_pad_run_ms,
            silence_run_ms=config.transcript_silence_run_ms,
        )
        self.playout = PlayoutBuffer(
            rate,
            prebuffer_ms=config.prebuffer_ms,
            max_queue_ms=config.max_queue_ms,
            on_tick_played=self._on_tick_played,
        )
        self._bargein = BargeInTracker(config.bargein_grace_ms, config.bargein_max_latency_ms)
        self._model_silent_since_ms: int | None = 0  # caller clock; None while the model speaks
        self._last_model_silence = (0, 0)  # the model's previous silence on the caller clock
        self._is_muting = False
        self._muted_text: list[str] = []
        self.bargeins: list[BargeInRecord] = []
        self.segments: list[AgentSegment] = []
        self.dtmf_digits: list[str] = []
        self.errors = 0
        self.dynamics: Dynamics | None = None
        self._max_ms = int(limits.max_duration_s * 1000) if limits.max_duration_s > 0 else 0
        self._silence_ms = (
            int(limits.silence_timeout_s * 1000) if limits.silence_timeout_s > 0 else 0
        )
        self._last_caller_voice_ms = 0

    # --- life cycle --------------------------------------------------------------------------

    @property
    def call_id(self) -> str:
        return self.info.call_id

    @property
    def state(self) -> CallState:
        return self._state

    @property
    def is_active(self) -> bool:
        return self._state is CallState.ACTIVE

    @property
    def fallback_say(self) -> str:
        """The persona's ``call_flow.fallback_say``: what a leg that learns of an unanswered
        transfer after the call left us says to the caller (Twilio's ``<Dial action>``)."""
        return self._flow.rules.fallback_say if self._flow is not None else ""

    @property
    def slot(self) -> Slot | None:
        return self._slot

    @property
    def leg(self) -> LegTransport:
        return self._leg

    def _set_state(self, state: CallState) -> None:
        if state not in _TRANSITIONS[self._state]:
            raise InvalidStateError(
                f"call {self.call_id}: cannot go from {self._state.value} to {state.value}"
            )
        self._state = state

    def bind(self, slot: Slot) -> None:
        """Attach the engine slot this call joined (the manager does this) and announce it."""
        if self._slot is not None:
            raise InvalidStateError(
                f"call {self.call_id}: already bound to slot {self._slot.index}"
            )
        self._slot = slot
        self._bind_caller_ms = self.caller_ms
        self._framer.bind(slot)
        self.announce()
        # the model's clocks start with the slot: silence counts from the agent's first word
        self._last_caller_voice_ms = self.caller_ms

    def announce(self) -> None:
        """Emit ``call.started`` (and ``recording.started``) once: at the join, or at the
        answer when the consent announcement plays before the slot is joined."""
        if self._has_started:
            return
        self._has_started = True
        info = self.info
        self._emit(lambda: report.started(info))
        rec = self.recorder
        if rec is not None:
            has_announcement = self._announcement is not None
            self._emit(lambda: report.recording_started(info, rec, has_announcement))

    @property
    def is_announcing(self) -> bool:
        """True while the recording announcement plays (no slot yet; caller audio not fed)."""
        return self._announcement is not None

    @property
    def caller_turn_end_lags_ms(self) -> list[int]:
        """Per caller turn end the STT signalled: ms after the caller's last word."""
        return self._words.turn_end_lags_ms if self._words is not None else []

    @property
    def frames_pushed(self) -> int:
        """Caller frames completed for the slot."""
        return self._framer.frames_pushed

    @property
    def phase_pad_samples(self) -> int:
        """24 kHz silence added ahead of the caller's audio to phase its frames (``framing``)."""
        return self._framer.phase_pad_samples

    @property
    def phase_drop_samples(self) -> int:
        """24 kHz caller audio dropped to re-phase its frames (``framing``)."""
        return self._framer.phase_drop_samples

    @property
    def ticks_lost(self) -> int:
        """Ticks the loop read too late: overwritten in the tick ring."""
        return self._ticks.lost

    @property
    def caller_ms(self) -> int:
        return self._caller_samples * 1000 // self.rate_hz

    @property
    def now_ms(self) -> int:
        """Call time: the later of the caller clock and the playout clock."""
        return max(self._caller_samples, self.playout.played) * 1000 // self.rate_hz

    @property
    def activity(self) -> str:
        """Who is speaking now, for the live calls view: ``transferring``, ``both``,
        ``caller``, ``agent``, ``silence`` or ``ended``."""
        if self._state is CallState.ENDED:
            return "ended"
        if self._transfer is not None:
            return "transferring"
        is_caller = self._caller is not None and self._caller.is_speech
        is_agent = self._agent.is_speaking
        if is_caller and is_agent:
            return "both"
        return "caller" if is_caller else "agent" if is_agent else "silence"

    def end(self, reason: EndReason, detail: str = "") -> None:
        """End the call from our side: hang up the leg and free the slot now; idempotent."""
        if self._state is CallState.ENDED:
            return
        self._finish(reason, detail)  # first: a leg may report its close from request_hangup
        try:
            self._leg.request_hangup(reason)
        except Exception:
            log.exception("call %s: leg hang-up failed", self.call_id)

    def on_leg_closed(self, reason: EndReason) -> None:
        """The leg is gone (BYE, stop, socket closed): free the slot now; idempotent."""
        self._finish(reason, "")

    def _finish(self, reason: EndReason, detail: str) -> None:
        if self._state is CallState.ENDED:
            return
        self._set_state(CallState.ENDED)
        self.end_reason = reason
        self.end_detail = detail
        if self._announcement is not None and reason is EndReason.CALLER_HANGUP:
            detail = self.end_detail = "caller left during the recording announcement"
        if self._slot is not None:
            try:
                self._slot.leave()
            except Exception:
                log.exception("call %s: leaving slot failed", self.call_id)
        try:
            self._wrap_up(reason, detail)
        except Exception:
            log.exception("call %s: wrapping up failed", self.call_id)
        self._finish_recording()
        if self._on_end is not None:
            self._on_end(self)

    def _finish_recording(self) -> None:
        rec = self.recorder
        if rec is None:
            return
        on_recorded = self._on_recorded
        # a caller who left during the announcement did not consent: nothing is kept
        is_discard = self._announcement is not None
        end = max(self._caller_samples, self.playout.played)
        try:
            rec.finish(
                end,
                None if on_recorded is None else (lambda result: on_recorded(self, result)),
                is_discard=is_discard,
            )
        except Exception:
            log.exception("call %s: finishing the recording failed", self.call_id)

    def _wrap_up(self, reason: EndReason, detail: str) -> None:
        now = self.now_ms
        self._bargein.cancel()
        unplayed = self.playout.unplayed_text() + "".join(self._muted_text)
        seg = self._segmenter.flush(now, unplayed)
        if seg is not None:
            self._emit_segment(seg)
        if self._words is not None:
            caller_seg = self._words.flush()
            if caller_seg is not None:
                self._emit_caller_segment(caller_seg)
        self._report_bargeins(is_ending=True)
        self.playout.close_intervals()
        caller_intervals: list[tuple[int, int]] = []
        if self._caller is not None:
            was_speaking = self._caller.is_speech
            self._caller.close(self.caller_ms)
            caller_intervals = self._caller.intervals
            if was_speaking:
                self._emit_caller_turn(self._caller.last_stop_ms)
        self.dynamics = dyn = analyse(caller_intervals, self.playout.agent_intervals)
        slot_stats = self._slot.stats if self._slot is not None else None
        counters: dict[str, int | float] = {
            "overruns": self.playout.overruns,
            "ticks_lost": self.ticks_lost,
            "caller_frames": self.frames_pushed,
            "phase_pad_samples": self.phase_pad_samples,  # 24 kHz, see calls/framing.py
            "phase_drop_samples": self.phase_drop_samples,
            "slot_underruns": slot_stats.underruns if slot_stats else 0,
            "slot_overruns": slot_stats.overruns if slot_stats else 0,
            "errors": self.errors,
            "dtmf": len(self.dtmf_digits),
        }
        info = self.info
        self._emit(
            lambda: report.ended(
                info,
                t_ms=now,
                reason=reason,
                detail=detail,
                frames=self.ticks,
                underruns=self.playout.underruns,
                bargeins=len(self.bargeins),
                dynamics=dyn,
                counters=counters,
                caller_turn_end_lags_ms=(
                    self._words.turn_end_lags_ms if self._words is not None else ()
                ),
            )
        )
        log.info(
            "call %s ended: %s %s, %d ms, %d frames, %d underruns, %d barge-ins",
            info.call_id,
            reason.value,
            detail,
            now,
            self.ticks,
            self.playout.underruns,
            len(self.bargeins),
        )

    def fail(self, exc: BaseException, code: str = "internal") -> None:
        """An error inside this call: report it and end this call only (EndReason.ERROR)."""
        self.errors += 1
        log.error("call %s: %s: %r", self.call_id, code, exc, exc_info=exc)
        info = self.info
        now = self.now_ms
        self._emit(lambda: report.error(info, now, code, exc))
        self.end(EndReason.ERROR, f"{code}: {type(exc).__name__}")

    # --- engine thread -----------------------------------------------------------------------

    def on_tick(self, out: TickOutput) -> None:
        """SlotSink: ENGINE THREAD. Copy the tick into the ring; the loop picks it up."""
        self._ticks.on_tick(out)
        if out.reanchor is not None:  # rare (a long call's context rebuilt): a deque hop
            self._reanchors.append(out.reanchor)

    # --- leg -> call (event loop) ------------------------------------------------------------

    def feed_caller_audio(self, pcm: npt.NDArray[np.int16]) -> None:
        """The caller's audio at the leg's rate, any length."""
        if self._state is not CallState.ACTIVE:
            return
        try:
            if self.recorder is not None:
                self.recorder.caller(pcm, self._caller_samples)
            self._caller_samples += len(pcm)
            caller = self._caller
            if caller is not None:
                change = caller.feed(pcm)
                if change is not None:
                    self._on_caller_change(change[0], change[1])
            if self._announcement is None:  # the model hears nothing of the announcement time
                self._framer.feed(self._in_rs.process(pcm), len(pcm))
            ticks = self._ticks
            if ticks.written != ticks.read:
                ticks.drain()
            self._check_limits()
        except Exception as exc:
            self.fail(exc, "caller_audio")

    def pull_agent_audio(self, n_samples: int) -> npt.NDArray[np.int16]:
        """Exactly ``n_samples`` of agent audio (silence when none): a view valid until the next pull."""
        if self._state is not CallState.ACTIVE:
            return np.zeros(n_samples, dtype=np.int16)
        try:
            ticks = self._ticks
            if ticks.written != ticks.read:
                ticks.drain()
            pb = self.playout
            at = pb.played
            if self._announcement is not None:
                out = self._pull_announcement(n_samples)
            elif pb.is_lead_pending:
                waited_s = self._clock() - self._prime_time
                out = pb.pull(n_samples, int(waited_s * self.rate_hz))
            else:
                out = pb.pull(n_samples)
            if self.recorder is not None:
                self.recorder.agent(out, at)
            self._check_limits()
            return out
        except Exception as exc:
            self.fail(exc, "agent_audio")
            return np.zeros(n_samples, dtype=np.int16)

    def _pull_announcement(self, n: int) -> npt.NDArray[np.int16]:
        clip = self._announcement
        assert clip is not None
        pos = self._announce_pos
        take = min(n, len(clip) - pos)
        if len(self._announce_out) < n:
            self._announce_out = np.zeros(n, dtype=np.int16)
        out = self._announce_out[:n]  # a view valid until the next pull, as the playout's
        out[:take] = clip[pos : pos + take]
        out[take:] = 0
        self._announce_pos = pos + take
        self.playout.play_external(n)
        if self._announce_pos >= len(clip):
            self._announcement = None
            log.info("call %s: recording announcement played (%d ms)", self.call_id, self.now_ms)
            if self._on_announced is not None:
                self._on_announced(self)  # joins the slot
        return out

    def on_dtmf(self, digit: str) -> None:
        """A DTMF digit from the caller."""
        if self._state is not CallState.ACTIVE:
            return
        self.dtmf_digits.append(digit)
        info = self.info
        now = self.caller_ms
        self._last_caller_voice_ms = max(self._last_caller_voice_ms, now)  # the caller is there
        self._emit(lambda: report.dtmf(info, now, digit))
        if self._flow is not None:
            self._act(self._flow.on_dtmf(digit, now))

    # --- caller side -------------------------------------------------------------------------

    def _on_caller_change(self, is_speech: bool, t_ms: int) -> None:
        if not is_speech:
            self._last_caller_voice_ms = t_ms
            self._bargein.on_caller_stop(t_ms)
            self._emit_caller_turn(t_ms)
            return
        # audible when the caller started, not when the VAD confirmed it (~200 ms later); the
        # slack bridges the agent's pauses between words
        is_audible = self.playout.was_audible_at(t_ms, AUDIBLE_SLACK_MS)
        if self._config.is_cut_on_caller_speech and is_audible and self._agent.is_speaking:
            self._is_muting = True
            self._bargein.cancel()
            self._fire_bargein(t_ms)
            return
        onset = self._bargein.on_caller_onset(
            t_ms,
            is_agent_audible=is_audible,
            model_silent_since_ms=self._model_silence_at(t_ms),
        )
        if onset is not None:
            self._fire_bargein(onset)

    # --- agent side --------------------------------------------------------------------------

    def _take_tick(self, pcm: npt.NDArray[np.float32], text: str, arrived_at: float) -> None:
        while self._reanchors:
            self._emit_reanchored(self._reanchors.popleft())
        if not self.playout.is_primed:
            self._prime_time = arrived_at
        self._process_tick(pcm, text)

    def _process_tick(self, pcm: npt.NDArray[np.float32], text: str) -> None:
        self.ticks += 1
        agent = self._agent
        bits, silent_back_ms = agent.analyse_tick(pcm)
        y = pcm if self._out_rs is None else self._out_rs.process(pcm)
        if self._is_muting:
            if agent.is_speaking:
                y = y * 0.0
                bits = 0
                if text:
                    self._muted_text.append(text)
                    text = ""
            else:
                self._is_muting = False
        self.playout.write_tick(y, text, bits)
        # model-side turn changes, placed on the caller clock (the tick arrived "now")
        started_back_ms = agent.started_back_ms
        if started_back_ms > silent_back_ms:  # started earlier in this tick than it fell silent
            self._on_model_speaking(started_back_ms)
            started_back_ms = -1
        if silent_back_ms >= 0:
            since = max(0, self.caller_ms - silent_back_ms)
            self._model_silent_since_ms = since
            onset = self._bargein.on_model_silent(since)
            if onset is not None:
                self._fire_bargein(onset)
        if started_back_ms >= 0:
            self._on_model_speaking(started_back_ms)

    def _on_model_speaking(self, started_back_ms: int) -> None:
        since = self._model_silent_since_ms
        if since is not None:
            self._last_model_silence = (since, max(since, self.caller_ms - started_back_ms))
            self._model_silent_since_ms = None

    def _model_silence_at(self, t_ms: int) -> int | None:
        """Start of the model's silence now, or of the one that covered ``t_ms``; else None."""
        since = self._model_silent_since_ms
        if since is not None:
            return since
        start, end = self._last_model_silence
        # the end is known to a 20 ms sub-block: a restart in the onset's sub-block still counts
        return start if start <= t_ms <= end + SUBBLOCK_MS else None

    def _on_tick_played(self, t_ms: int, text: str, is_speech: bool) -> None:
        seg = self._segmenter.on_tick(t_ms, t_ms + TICK_MS, text, is_speech)
        if seg is not None:
            self._emit_segment(seg)
        if text and self._leg_text is not None:
            self._leg_text(t_ms, text)
        if self._flow is not None:
            self._act(self._flow.on_agent_played(text, t_ms + TICK_MS))

    def _fire_bargein(self, onset_ms: int) -> None:
        pb = self.playout
        was_audible = pb.is_audible
        far_ms = int(getattr(self._leg, "queued_ms", 0) or 0)
        self._leg.clear_playout()
        dropped, had_speech, cut_text = pb.drop(max(0, pb.played_ms - far_ms))
        if self.recorder is not None:  # what the far side cleared was never heard
            self.recorder.cut(pb.played - far_ms * self.rate_hz // 1000)
        if self._muted_text:
            cut_text += "".join(self._muted_text)
            self._muted_text.clear()
        now = pb.played_ms
        if had_speech or was_audible:
            agent_stop = max(onset_ms, now - far_ms)
        else:
            agent_stop = max(onset_ms, pb.last_audible_end_ms)
        discarded_ms = dropped * 1000 // self.rate_hz + far_ms
        record = BargeInRecord(
            caller_onset_ms=onset_ms,
            agent_stop_ms=agent_stop,
            latency_ms=agent_stop - onset_ms,
            discarded_ms=discarded_ms,
            cut_text=cut_text.strip(),
        )
        self.bargeins.append(record)
        seg = self._segmenter.on_cut(agent_stop, cut_text, is_speech_cut=had_speech or was_audible)
        if seg is not None:
            self._emit_segment(seg)
        self._pending_bargeins.append(record)
        self._report_bargeins(is_ending=False)
        log.info(
            "call %s: barge-in at %d ms, agent stopped at %d ms (%d ms), %d ms dropped, cut %r",
            self.call_id,
            onset_ms,
            agent_stop,
            record.latency_ms,
            discarded_ms,
            record.cut_text,
        )
        if self._on_bargein is not None:
            self._on_bargein(self, record)

    # --- limits and events -------------------------------------------------------------------

    def _check_limits(self) -> None:
        now = self.now_ms
        if self._max_ms and now >= self._max_ms:
            self._on_limit(EndReason.MAX_DURATION, f"{self._max_ms} ms reached")
            return
        if self._announcement is not None:
            return  # no agent yet: its silence and flow rules start with the slot
        caller = self._caller
        flow = self._flow
        if flow is not None and self._transfer is None:
            is_speaking = caller is not None and caller.is_speech
            self._act(flow.poll(now, is_speaking, self._last_caller_voice_ms))
            if self._state is CallState.ENDED:
                return
        if self._silence_ms and caller is not None:  # without caller VAD there is no silence
            # speech lasts only as long as its audio keeps coming: media that stopped while the
            # caller spoke (a frozen peer) is silence from the last sample received
            last_voice_ms = self.caller_ms if caller.is_speech else self._last_caller_voice_ms
            if now - last_voice_ms >= self._silence_ms:
                self._on_limit(
                    EndReason.SILENCE_TIMEOUT, f"no caller speech for {self._silence_ms} ms"
                )

    # --- call flow: transfers and hang-ups ---------------------------------------------------

    def _on_limit(self, reason: EndReason, detail: str) -> None:
        """A limit was reached: the persona's action for it, else end with that reason."""
        if self._transfer is not None:
            return  # a transfer is on its way; its outcome ends or keeps the call
        flow = self._flow
        trigger = flow.on_limit(reason.value) if flow is not None else None
        if trigger is None:
            self.end(reason, detail)
        else:
            self._act(trigger, limit=(reason, detail))

    def _act(self, trigger: FlowTrigger | None, limit: tuple[EndReason, str] | None = None) -> None:
        if trigger is None or self._state is not CallState.ACTIVE or self._transfer is not None:
            return
        action = trigger.action
        said = f"{trigger.trigger} {trigger.detail!r}" if trigger.detail else trigger.trigger
        if action.kind == "hangup":
            log.info("call %s: call flow hangs up (%s)", self.call_id, said)
            if limit is not None:
                self.end(limit[0], limit[1])
            else:
                self.end(EndReason.AGENT_HANGUP, said)
            return
        flow = self._flow
        assert flow is not None
        to = flow.rules.destinations.get(action.destination, "")
        self._start_transfer(
            TransferTarget(action.destination, to, self._new_handoff_id()), trigger, said
        )

    def _start_transfer(self, target: TransferTarget, trigger: FlowTrigger, said: str) -> None:
        self._transfer = (target, trigger, self._clock())
        self._emit_transfer(target, trigger, "requested", said, None)
        log.info(
            "call %s: transfer to %s (%s) on %s", self.call_id, target.destination, target.to, said
        )
        url = self._handoff_urls.get(target.destination, "")
        if url and self._handoff is not None and getattr(self._leg, "transfer", None):
            document = handoff_document(
                self.info,
                target,
                trigger=trigger.trigger,
                trigger_detail=trigger.detail,
                call_ms=self.now_ms,
                segments=self.segments,
                counters={"bargeins": len(self.bargeins), "dtmf": len(self.dtmf_digits)},
                caller_segments=self.caller_segments,
            )
            # the desktop gets the call so far first; the transfer waits at most the POST's bound
            self._handoff.start(url, document, lambda: self._ask_leg(target))
            return
        self._ask_leg(target)

    def _ask_leg(self, target: TransferTarget) -> None:
        pending = self._transfer
        if self._state is not CallState.ACTIVE or pending is None or pending[0] != target:
            return  # the caller hung up while the handoff was being posted
        transfer = getattr(self._leg, "transfer", None)
        if not callable(transfer):
            self.on_transfer_result(
                target, TransferOutcome.UNSUPPORTED, f"a {self.info.leg} call cannot be transferred"
            )
            return
        try:
            transfer(target)
        except Exception as exc:
            log.exception("call %s: leg transfer failed", self.call_id)
            self.on_transfer_result(target, TransferOutcome.FAILED, f"leg error: {exc}")

    @property
    def destinations(self) -> dict[str, str]:
        """The persona's named transfer destinations (name -> number or SIP URI)."""
        return dict(self._destinations)

    @property
    def transfer_trigger(self) -> str | None:
        """The trigger of the transfer the leg is executing now (``dtmf``, ``engine_fault``, ...),
        or None when none is pending."""
        pending = self._transfer
        return pending[1].trigger if pending is not None else None

    def transfer_to(self, destination: str, to: str, trigger: str, detail: str = "") -> None:
        """Hand the caller to ``to`` outside the persona's rules (``trigger``: ``engine_fault``,
        ``overflow``, an operator): a ``call.transfer`` event follows; if it fails the call ends
        with ``engine_fault`` for an engine fault, else it stays."""
        if self._state is not CallState.ACTIVE or self._transfer is not None:
            return
        self._start_transfer(
            TransferTarget(destination, to, self._new_handoff_id()),
            FlowTrigger(trigger, detail, FlowAction("transfer", destination)),
            f"{trigger} {detail}".strip(),
        )

    def on_transfer_result(
        self, target: TransferTarget, outcome: TransferOutcome, detail: str
    ) -> None:
        """The leg's word on the transfer it was asked for (``LegControl``)."""
        pending = self._transfer
        if pending is None or pending[0] != target:
            log.warning("call %s: transfer result for no pending transfer", self.call_id)
            return
        _, trigger, asked_at = pending
        self._transfer = None
        latency_ms = max(0.0, (self._clock() - asked_at) * 1000)
        self.transfers.append((target, outcome.value))
        self._emit_transfer(target, trigger, outcome.value, detail, latency_ms)
        if self._on_transfer is not None:
            self._on_transfer(self, outcome.value, latency_ms / 1000)
        is_fault = trigger.trigger == EndReason.ENGINE_FAULT.value
        if outcome is TransferOutcome.HANDED_OFF:
            reason = (
                EndReason.OVERFLOW
                if is_fault or trigger.trigger == EndReason.OVERFLOW.value
                else EndReason.TRANSFERRED
            )
            self._finish(reason, f"to {target.destination} ({detail})".strip())
        elif is_fault:
            self.end(EndReason.ENGINE_FAULT, f"transfer to overflow failed: {detail}")
        elif outcome is TransferOutcome.UNSUPPORTED:
            self.end(EndReason.AGENT_HANGUP, detail)
        elif trigger.trigger in (EndReason.MAX_DURATION.value, EndReason.SILENCE_TIMEOUT.value):
            reason = EndReason(trigger.trigger)
            self.end(reason, f"transfer failed: {detail}")  # the limit still holds
        # else FAILED on a key or phrase: the caller stays with the agent

    def _emit_transfer(
        self,
        target: TransferTarget,
        trigger: FlowTrigger,
        result: str,
        detail: str,
        latency_ms: float | None,
    ) -> None:
        info = self.info
        now = self.now_ms
        self._emit(lambda: report.transfer(info, now, target, trigger, result, detail, latency_ms))

    def _emit_reanchored(self, done: ReanchorReport) -> None:
        info, now = self.info, self.now_ms
        self._emit(lambda: report.reanchored(info, now, done))
        log.info(
            "call %s: re-anchored (%d prompt + %d kept frames, %.1f ms)",
            info.call_id,
            done.prompt_frames,
            done.kept_frames,
            done.compute_ms,
        )

    # --- caller words (the engine's caller STT) -----------------------------------------------

    def _take_caller(self, frame_index: int, text: str, end_of_turn: float, delay: int) -> None:
        words = self._words
        if words is None:
            words = self._words = CallerWords(
                delay,
                offset_ms=self._bind_caller_ms,
                on_word=self._on_caller_word if self._flow is not None else None,
            )
        seg = words.on_frame(frame_index, text, end_of_turn)
        if seg is not None:
            self._emit_caller_segment(seg)
        if self._pending_bargeins:
            self._report_bargeins(is_ending=False)

    def _on_caller_word(self, word: str, start_ms: int, end_ms: int) -> None:
        if self._flow is not None and self._transfer is None and self.is_active:
            # a hang-up waits for the caller's silence after this word: the VAD's speech that
            # carried the word may end a little after the STT's word end
            self._act(self._flow.on_caller_word(word, max(end_ms, self._last_caller_voice_ms)))

    def _report_bargeins(self, *, is_ending: bool) -> None:
        """Barge-in events go out once the STT has transcribed the caller's first words after
        the onset (or at once without an STT, or when the call ends)."""
        words = self._words
        info = self.info
        while self._pending_bargeins:
            record = self._pending_bargeins[0]
            onset = record.caller_onset_ms
            caller_text = ""
            if words is not None:
                if not is_ending and words.covered_ms < onset + BARGEIN_WORDS_MS:
                    return
                caller_text = words.words_between(onset - BARGEIN_LEAD_MS, onset + BARGEIN_WORDS_MS)
            self._pending_bargeins.pop(0)
            self._emit(partial(report.bargein, info, record, caller_text))

    def _emit_caller_segment(self, seg: CallerSegment) -> None:
        if seg.is_final:
            self.caller_segments.append(seg)
        info = self.info
        self._emit(lambda: report.caller_segment(info, seg))

    def _emit_caller_turn(self, stop_ms: int) -> None:
        # once per caller turn (a VAD state change), never per frame: the page's caller lane
        caller = self._caller
        if caller is None:
            return
        info, onset = self.info, caller.onset_ms
        self._emit(lambda: report.caller_speech(info, onset, max(onset, stop_ms)))

    def _emit_segment(self, seg: AgentSegment) -> None:
        self.segments.append(seg)
        info = self.info
        self._emit(lambda: report.segment(info, seg))

    def _emit(self, build: Callable[[], Event]) -> None:
        # an event that cannot be built or queued must never take the call down
        try:
            self._events.emit(build())
        except Exception:
            log.exception("call %s: event dropped", self.call_id)

    def __repr__(self) -> str:
        return f"Call({self.call_id!r}, leg={self.info.leg}, state={self._state.value})"
