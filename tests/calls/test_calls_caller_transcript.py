"""A Call with the engine's caller STT: transcript.caller segments on the call clock, the
barge-in's caller words, the caller's turn ends in call.ended and /metrics.

A scripted engine stands in for the STT's output (its text trails the caller's audio by
``DELAY`` frames, as the model's does); the tiny STT's own output is checked end to end in
tests/legs/twilio/test_caller_transcript.py.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry
from utils import (
    SILENCE,
    LoopbackLeg,
    RecordingEvents,
    ScriptedEngine,
    make_manager,
    run_call,
    speech,
    tone,
)

from voicegate.calls import CallConfig, CallInfo, EndReason
from voicegate.calls.flow import CallFlow
from voicegate.contracts import FlowAction, FlowRules
from voicegate.engine.base import TickOutput
from voicegate.events.schema import BargeIn, CallEnded, TranscriptCaller

RATE = 8000
MS = RATE // 1000
DELAY = 3  # frames the scripted STT's text trails the caller's audio
WORDS = [" wait", ",", " what", " about", " my", " card"]


class SttScriptedEngine(ScriptedEngine):
    """The agent talks until the caller is loud for 2 frames; the 'STT' spells WORDS over the
    caller's loud frames, ``DELAY`` frames late, with a turn-end probability."""

    def __init__(self) -> None:
        super().__init__(self._agent)
        self.loud: list[bool] = []
        self._loud_frames = 0

    def _agent(self, call_index: int, k: int, frame: npt.NDArray[np.float32]) -> tuple:
        if self._loud_frames >= 2:
            return SILENCE, ""
        return speech(), f" w{k}"

    def tick(self) -> None:
        self.ticks += 1
        for slot in self.slots:
            if not slot.is_active:
                continue
            frame = slot.inputs.popleft() if slot.inputs else SILENCE
            is_loud = float(np.abs(frame).max()) > 0.05
            self.loud.append(is_loud)
            self._loud_frames += is_loud
            pcm, text = self._script(slot.call_index, slot.frames, frame)
            k = slot.frames - DELAY
            piece, p_end = "", 0.9
            if k >= 0 and self.loud[k]:
                run = sum(self.loud[: k + 1]) - 1
                piece, p_end = (WORDS[run] if run < len(WORDS) else ""), 0.05
            out = TickOutput(
                frame_index=slot.frames,
                pcm=pcm,
                text_token=0,
                text=text,
                caller_token=7 if piece else 3,
                caller_text=piece,
                caller_end_of_turn=p_end,
                caller_delay_frames=DELAY,
            )
            slot.sink.on_tick(out)
            slot.frames += 1


def test_caller_words_segments_bargein_text_and_turn_end() -> None:
    engine = SttScriptedEngine()
    events = RecordingEvents()
    leg = LoopbackLeg(RATE, queued_ms=0)
    registry = CollectorRegistry()
    calls = make_manager(engine, events, config=CallConfig(prebuffer_ms=20), registry=registry)
    call = calls.start_call(CallInfo("c-stt", "twilio", "p"), leg)
    caller = np.zeros(4 * RATE, dtype=np.int16)
    caller[1000 * MS : 1480 * MS] = tone(480 * MS)  # 6 loud frames: 960..1440 ms
    run_call(call, caller, tick=engine.tick, leg=leg, extra_frames=10)
    (bargein,) = events.of_type(BargeIn)
    assert bargein.caller_onset_ms == 1000
    assert bargein.caller_text == "wait, what about my card"  # words within 1.5 s of the onset
    segments = events.of_type(TranscriptCaller)
    final = [s for s in segments if s.final]
    assert [s.text for s in final] == ["wait, what about my card"]
    (seg,) = final
    # the STT's text for frame k describes the audio of frame k - DELAY: the call clock
    assert seg.words[0] == ("wait,", 960, 1120)
    assert seg.words[-1] == ("card", 1360, 1440)
    assert (seg.start_ms, seg.end_ms) == (960, 1440)
    # the bargein event waited for the STT's words (1.5 s of audio after the onset)
    assert events.events.index(seg) < events.events.index(bargein)
    call.on_leg_closed(EndReason.CALLER_HANGUP)
    (ended,) = events.of_type(CallEnded)
    assert ended.dynamics is not None
    assert ended.dynamics.caller_turn_ends == 1
    # the turn-end probability rose on the frame after the last word's (its end at 1440 ms)
    lag = ended.dynamics.caller_turn_end_lag_p50_ms
    assert lag is not None and lag == (1440 // 80 + DELAY + 1) * 80 - 1440
    assert call.caller_turn_end_lags_ms == [int(lag)]
    count = registry.get_sample_value(
        "voicegate_caller_turn_end_lag_seconds_count", {"leg": "twilio"}
    )
    total = registry.get_sample_value(
        "voicegate_caller_turn_end_lag_seconds_sum", {"leg": "twilio"}
    )
    assert (count, total) == (1.0, lag / 1000.0)


def test_without_stt_output_bargein_goes_out_at_once_without_caller_text() -> None:
    engine = ScriptedEngine(SttScriptedEngine()._agent)
    events = RecordingEvents()
    leg = LoopbackLeg(RATE)
    calls = make_manager(engine, events, config=CallConfig(prebuffer_ms=20))
    call = calls.start_call(CallInfo("c-nostt", "twilio", "p"), leg)
    caller = np.zeros(2 * RATE, dtype=np.int16)
    caller[1000 * MS : 1480 * MS] = tone(480 * MS)
    run_call(call, caller, tick=engine.tick, leg=leg, extra_frames=2)
    assert events.of_type(TranscriptCaller) == []
    call.on_leg_closed(EndReason.CALLER_HANGUP)
    (ended,) = events.of_type(CallEnded)
    assert ended.dynamics is not None and ended.dynamics.caller_turn_ends == 0


def _personas(flow: FlowRules) -> object:
    class Personas:
        def get(self, name: str) -> object:
            class P:
                limits = None

                def flow_rules(self) -> FlowRules:
                    return flow

            return P()

    return Personas()


def test_a_caller_phrase_hangs_up_once_the_caller_is_silent() -> None:
    """call_flow.caller_says: the STT's words match the phrase; the hang-up waits for silence."""
    flow = FlowRules(caller_says=(("about my card", FlowAction("hangup")),), hangup_silence_ms=500)
    engine = SttScriptedEngine()
    events = RecordingEvents()
    leg = LoopbackLeg(RATE)
    calls = make_manager(
        engine, events, config=CallConfig(prebuffer_ms=20), personas=_personas(flow)
    )
    call = calls.start_call(CallInfo("c-says", "twilio", "p"), leg)
    caller = np.zeros(5 * RATE, dtype=np.int16)
    caller[1000 * MS : 1480 * MS] = tone(480 * MS)
    run_call(call, caller, tick=engine.tick, leg=leg)
    assert not call.is_active
    assert call.end_reason is EndReason.AGENT_HANGUP
    assert call.end_detail == "caller_says 'about my card'"
    # "card" is complete when the caller's segment closes (640 ms of pause after 1440 ms,
    # transcribed DELAY frames later); then 500 ms more of the caller's silence
    (ended,) = events.of_type(CallEnded)
    assert 1440 + 500 <= ended.duration_ms <= 1440 + 640 + (DELAY + 2) * 80 + 500


def test_caller_phrase_matching_on_word_boundaries() -> None:
    flow = CallFlow(FlowRules(caller_says=(("a person", FlowAction("transfer", "desk")),)))
    assert flow.on_caller_word("I", 100) is None
    assert flow.on_caller_word("want", 200) is None
    assert flow.on_caller_word("apersonal", 300) is None
    flow2 = CallFlow(FlowRules(caller_says=(("a person", FlowAction("transfer", "desk")),)))
    flow2.on_caller_word("talk", 100)
    flow2.on_caller_word("to", 150)
    flow2.on_caller_word("A", 200)
    trigger = flow2.on_caller_word("Person!", 300)
    assert trigger is not None
    assert (trigger.trigger, trigger.detail, trigger.action.destination) == (
        "caller_says",
        "a person",
        "desk",
    )
    assert flow2.on_caller_word("person", 400) is None  # the matched words are used up


def test_the_handoff_document_has_both_sides_in_time_order() -> None:
    from voicegate.calls.caller_words import CallerSegment
    from voicegate.calls.handoff import handoff_document
    from voicegate.calls.transcript import AgentSegment
    from voicegate.contracts import TransferTarget

    agent = [AgentSegment("Hello, how can I help?", 0, 1500), AgentSegment("Sure.", 3000, 3400)]
    caller = [CallerSegment("I lost my card", 1700, 2800, (("I", 1700, 1800),), is_final=True)]
    doc = handoff_document(
        CallInfo("c-h", "twilio", "p"),
        TransferTarget("desk", "+14155550123", "h1"),
        trigger="caller_says",
        trigger_detail="a person",
        call_ms=4000,
        segments=agent,
        counters={},
        caller_segments=caller,
    )
    assert [(e["speaker"], e["text"]) for e in doc["transcript"]] == [
        ("agent", "Hello, how can I help?"),
        ("caller", "I lost my card"),
        ("agent", "Sure."),
    ]
