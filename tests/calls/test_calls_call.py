"""Call: audio round trip, barge-in, transcripts, DTMF, limits, error isolation.

Driven on a simulated clock (``run_call``: one 20 ms leg frame per step, an engine tick every
fourth step) so every time below is exact, in samples of the leg's rate.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
import pytest
from utils import (
    SILENCE,
    EnergyVad,
    ExactResampler,
    LoopbackLeg,
    RecordingEvents,
    ScriptedEngine,
    make_manager,
    run_call,
    speech,
    tone,
)

from voicegate.calls import CallConfig, CallInfo, CallLimits, CallState, EndReason
from voicegate.engine import BatchedEngine, EchoModel, PersonaPrompt, TickMode
from voicegate.engine.base import ReanchorReport, TickOutput
from voicegate.events.schema import (
    BargeIn,
    CallEnded,
    CallError,
    CallerSpeech,
    CallReanchored,
    CallStarted,
    Dtmf,
    TranscriptAgent,
)

RATE = 8000
MS = RATE // 1000  # samples per ms


@pytest.fixture
def echo_engine():
    engine = BatchedEngine(EchoModel(), mode=TickMode.MANUAL)
    engine.start()
    engine.load_persona(PersonaPrompt("p", "You echo.", "NATF0"))
    yield engine
    engine.close()


def test_round_trip_through_echo_engine_has_the_expected_delay(echo_engine) -> None:
    events = RecordingEvents()
    leg = LoopbackLeg(RATE)
    calls = make_manager(echo_engine, events)
    call = calls.start_call(CallInfo("c1", "sip", "p", from_="a", to="b", leg_call_ref="x"), leg)
    caller = np.zeros(2 * RATE, dtype=np.int16)
    caller[800:1600] = tone(800)
    out = run_call(call, caller, tick=echo_engine.tick, leg=leg, extra_frames=20)
    # frame alignment (80 ms: the sample waits for its 1920-sample frame) + echo's one tick
    # (80 ms) + 20 ms primed - 20 ms because a step pulls after that step's tick
    delay = int(np.flatnonzero(out)[0]) - int(np.flatnonzero(caller)[0])
    assert delay == 160 * MS
    assert np.array_equal(out[800 + delay : 1600 + delay], caller[800:1600])
    assert call.playout.underruns == 0
    call.on_leg_closed(EndReason.CALLER_HANGUP)
    started = events.of_type(CallStarted)[0]
    assert (started.persona, started.from_, started.to, started.leg_call_ref) == (
        "p",
        "a",
        "b",
        "x",
    )
    ended = events.of_type(CallEnded)[0]
    assert ended.reason == "caller_hangup" and ended.result == "success"
    assert ended.frames == call.ticks > 0 and ended.underruns == 0
    assert ended.dynamics is not None
    assert ended.dynamics.caller_talk_ms == 100 and ended.dynamics.agent_talk_ms == 100
    assert ended.dynamics.response_gaps == 1  # the echo "answers" 60 ms after the caller stops
    assert not echo_engine.active_slots  # the slot is free at once


def agent_until_interrupted(yield_after_loud_frames: int = 2):
    """Script: speak ' w<k>' every tick until the caller's input was loud for N frames."""
    loud = [0]

    def script(call_index: int, k: int, frame: np.ndarray) -> tuple[np.ndarray, str]:
        if float(np.abs(frame).max()) > 0.05:
            loud[0] += 1
        if loud[0] >= yield_after_loud_frames:
            return SILENCE, ""
        return speech(), f" w{k}"

    return script


def test_scripted_barge_in_clears_and_reports() -> None:
    engine = ScriptedEngine(agent_until_interrupted())
    events = RecordingEvents()
    leg = LoopbackLeg(RATE, queued_ms=60)
    calls = make_manager(engine, events, config=CallConfig(prebuffer_ms=20))
    call = calls.start_call(CallInfo("c2", "twilio", "p"), leg)
    caller = np.zeros(2 * RATE, dtype=np.int16)
    caller[1000 * MS : 2000 * MS] = tone(1000 * MS)
    run_call(call, caller, tick=engine.tick, leg=leg, extra_frames=10)
    # The caller starts at 1000 ms. Their frame 12 (960-1040 ms) reaches the model at the tick
    # of step 51, frame 13 at step 55: the model yields, its tick 13 is silent. That tick is
    # read at step 55's pull, when 8800 samples (1100 ms) were pulled: the clear happens then.
    assert leg.clears == [8800]
    (b,) = events.of_type(BargeIn)
    assert b.caller_onset_ms == 1000
    assert b.agent_stop_ms == 1100 - 60  # the leg still had 60 ms queued: heard until 1040
    assert b.latency_ms == 40
    # queued here: content written (20 ms primed + 14 ticks) - content played (since step 3)
    assert b.discarded_ms == (160 + 14 * 640 - (8800 - 480)) // MS + 60
    assert call.bargeins[0].latency_ms == 40
    segs = events.of_type(TranscriptAgent)
    assert len(segs) == 1 and not segs[0].is_heard and segs[0].cut_at_ms == 1040
    assert segs[0].text == " ".join(f"w{k}" for k in range(13))
    assert segs[0].start_ms == 80  # tick 0 plays after 60 ms of pre-call silence and 20 primed
    call.on_leg_closed(EndReason.CALLER_HANGUP)
    ended = events.of_type(CallEnded)[0]
    assert ended.bargeins == 1
    assert ended.dynamics is not None and ended.dynamics.overlap_ms == 1040 - 1000


def test_cut_text_is_what_was_queued_but_never_played() -> None:
    # a leg that holds more agent audio (prebuffer 200 ms): the clear drops words not yet heard
    engine = ScriptedEngine(agent_until_interrupted())
    events = RecordingEvents()
    leg = LoopbackLeg(RATE)
    calls = make_manager(engine, events, config=CallConfig(prebuffer_ms=200, max_queue_ms=400))
    call = calls.start_call(CallInfo("c3", "twilio", "p"), leg)
    caller = np.zeros(2 * RATE, dtype=np.int16)
    caller[1000 * MS : 2000 * MS] = tone(1000 * MS)
    run_call(call, caller, tick=engine.tick, leg=leg, extra_frames=10)
    (b,) = events.of_type(BargeIn)
    # 200 ms primed: ticks play 200 ms later; at the clear (1100 ms pulled), ticks 11 and 12
    # (content from 1100 and 1180 ms) had not started
    assert b.cut_text == "w11 w12"
    (seg,) = events.of_type(TranscriptAgent)
    assert seg.text.endswith("w10") and not seg.is_heard and seg.cut_text == "w11 w12"
    assert call.segments[0].cut_text == "w11 w12"


def test_agent_that_keeps_talking_through_a_backchannel_is_not_cut() -> None:
    engine = ScriptedEngine(agent_until_interrupted(yield_after_loud_frames=99))
    events = RecordingEvents()
    leg = LoopbackLeg(RATE)
    calls = make_manager(engine, events)
    call = calls.start_call(CallInfo("c4", "twilio", "p"), leg)
    caller = np.zeros(3 * RATE, dtype=np.int16)
    caller[1000 * MS : 1300 * MS] = tone(300 * MS)  # "mm-hm"
    run_call(call, caller, tick=engine.tick, leg=leg)
    assert leg.clears == [] and not events.of_type(BargeIn)
    call.on_leg_closed(EndReason.CALLER_HANGUP)
    (seg,) = events.of_type(TranscriptAgent)
    assert seg.is_heard and seg.text.endswith("w36")  # every word had started playing
    assert events.of_type(CallEnded)[0].dynamics.overlap_ms == 300


def test_cut_on_caller_speech_mutes_at_onset_when_configured() -> None:
    engine = ScriptedEngine(agent_until_interrupted(yield_after_loud_frames=6))
    events = RecordingEvents()
    leg = LoopbackLeg(RATE)
    calls = make_manager(engine, events, config=CallConfig(is_cut_on_caller_speech=True))
    call = calls.start_call(CallInfo("c5", "twilio", "p"), leg)
    caller = np.zeros(2 * RATE, dtype=np.int16)
    caller[1000 * MS : 2000 * MS] = tone(1000 * MS)
    out = run_call(call, caller, tick=engine.tick, leg=leg)
    # the onset is seen while feeding step 50: the clear happens before that step's pull
    assert leg.clears == [50 * 160]
    (b,) = events.of_type(BargeIn)
    assert b.caller_onset_ms == 1000 and b.agent_stop_ms == 1000 and b.latency_ms == 0
    assert not out[50 * 160 :].any()  # muted until the model yielded, silent after


def test_transcript_segments_heard_on_the_playout_timeline() -> None:
    words = {2: " Hello", 3: " there", 10: " Bye"}

    def script(call_index: int, k: int, frame: np.ndarray) -> tuple[np.ndarray, str]:
        is_talking = 2 <= k <= 4 or 10 <= k <= 11
        return (speech() if is_talking else SILENCE), words.get(k, "")

    engine = ScriptedEngine(script)
    events = RecordingEvents()
    leg = LoopbackLeg(RATE)
    calls = make_manager(engine, events)
    call = calls.start_call(CallInfo("c6", "sip", "p"), leg)
    run_call(call, np.zeros(2 * RATE, dtype=np.int16), tick=engine.tick, leg=leg)
    segs = events.of_type(TranscriptAgent)
    # tick k plays from 80 + 80 k ms
    assert [(s.text, s.start_ms, s.end_ms, s.is_heard) for s in segs] == [
        ("Hello there", 240, 480, True),
        ("Bye", 880, 1040, True),
    ]
    assert call.playout.agent_intervals == [(240, 480), (880, 1040)]


def test_dtmf_events() -> None:
    engine = ScriptedEngine(lambda c, k, f: (SILENCE, ""))
    events = RecordingEvents()
    leg = LoopbackLeg(RATE)
    call = make_manager(engine, events).start_call(CallInfo("c7", "twilio", "p"), leg)
    run_call(call, np.zeros(RATE // 2, dtype=np.int16), tick=engine.tick, leg=leg)
    call.on_dtmf("5")
    call.on_dtmf("#")
    call.on_dtmf("not a digit")  # refused by the schema: logged, the call goes on
    digits = events.of_type(Dtmf)
    assert [(d.digit, d.t_ms) for d in digits] == [("5", 500), ("#", 500)]
    assert call.is_active


def test_max_duration_ends_the_call_and_frees_the_slot() -> None:
    engine = ScriptedEngine(lambda c, k, f: (speech(), ""))
    events = RecordingEvents()
    leg = LoopbackLeg(RATE)
    calls = make_manager(engine, events, limits=CallLimits(max_duration_s=1.0))
    call = calls.start_call(CallInfo("c8", "twilio", "p"), leg)
    run_call(call, tone(3 * RATE), tick=engine.tick, leg=leg)
    assert call.state is CallState.ENDED and call.end_reason is EndReason.MAX_DURATION
    assert leg.hangups == [EndReason.MAX_DURATION]
    assert engine.active_slots == 0 and calls.active_count == 0
    ended = events.of_type(CallEnded)[0]
    assert ended.reason == "max_duration" and ended.duration_ms == 1000
    call.on_leg_closed(EndReason.CALLER_HANGUP)  # the leg's close afterwards changes nothing
    assert len(events.of_type(CallEnded)) == 1 and call.end_reason is EndReason.MAX_DURATION


def test_silence_timeout_counts_from_the_callers_last_speech() -> None:
    engine = ScriptedEngine(lambda c, k, f: (speech(), ""))  # the agent talking does not count
    events = RecordingEvents()
    leg = LoopbackLeg(RATE)
    calls = make_manager(engine, events, limits=CallLimits(silence_timeout_s=1.0))
    call = calls.start_call(CallInfo("c9", "twilio", "p"), leg)
    caller = np.zeros(5 * RATE, dtype=np.int16)
    caller[500 * MS : 1500 * MS] = tone(1000 * MS)
    run_call(call, caller, tick=engine.tick, leg=leg)
    assert call.end_reason is EndReason.SILENCE_TIMEOUT
    assert leg.hangups == [EndReason.SILENCE_TIMEOUT]
    # speech stopped at 1500 ms (EnergyVad backdates its stop): the timeout is at 2500 ms
    assert events.of_type(CallEnded)[0].duration_ms == 2500


def test_media_that_stops_mid_speech_is_silence_for_the_silence_timeout() -> None:
    engine = ScriptedEngine(lambda c, k, f: (speech(), ""))
    events = RecordingEvents()
    leg = LoopbackLeg(RATE)
    calls = make_manager(engine, events, limits=CallLimits(silence_timeout_s=1.0))
    call = calls.start_call(CallInfo("c10", "twilio", "p"), leg)
    n = 20 * MS
    speaking = tone(1000 * MS)
    for k in range(300):  # 6 s of the leg's 20 ms send clock
        if not call.is_active:
            break
        if k < 50:  # the caller speaks for 1 s, then its media stops mid-word
            call.feed_caller_audio(speaking[k * n : (k + 1) * n])
        if k % 4 == 3:
            engine.tick()
        call.pull_agent_audio(n)
    assert call.end_reason is EndReason.SILENCE_TIMEOUT
    assert leg.hangups == [EndReason.SILENCE_TIMEOUT]
    # the last caller audio came at 1000 ms: the timeout is 1 s later on the playout clock
    assert events.of_type(CallEnded)[0].duration_ms == 2000


def test_an_error_in_one_call_ends_only_that_call() -> None:
    class Boom(ExactResampler):
        def process(self, x: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
            if self.in_rate == RATE and len(x) and int(np.abs(x).max()) == 12345:
                raise RuntimeError("resampler exploded")
            return super().process(x)

    engine = ScriptedEngine(lambda c, k, f: (f, ""))  # echo with no delay
    events = RecordingEvents()
    calls = make_manager(engine, events, resampler_factory=Boom)
    leg_a, leg_b = LoopbackLeg(RATE), LoopbackLeg(RATE)
    a = calls.start_call(CallInfo("ca", "twilio", "p"), leg_a)
    b = calls.start_call(CallInfo("cb", "twilio", "p"), leg_b)
    bad = np.full(160, 12345, dtype=np.int16)
    good = tone(160)
    out_b = []
    for k in range(40):
        a.feed_caller_audio(bad if k == 10 else good)
        b.feed_caller_audio(good)
        if k % 4 == 3:
            engine.tick()
        a.pull_agent_audio(160)
        out_b.append(b.pull_agent_audio(160).copy())
    assert a.end_reason is EndReason.ERROR and leg_a.hangups == [EndReason.ERROR]
    (err,) = events.of_type(CallError)
    assert err.call_id == "ca" and err.is_fatal and "resampler exploded" in err.message
    assert b.is_active and calls.active_count == 1 and leg_b.hangups == []
    assert np.abs(np.concatenate(out_b)[-1600:]).max() > 5000  # b still hears its audio
    a.on_leg_closed(EndReason.CALLER_HANGUP)
    assert [e.reason for e in events.of_type(CallEnded)] == ["error"]


class HoldResampler:
    """Stateful sample-and-hold resampler for any rate pair (no filter, no delay)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self.n_in = 0
        self.n_out = 0

    def process(self, x: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
        y = x.astype(np.float32) / (32768.0 if x.dtype == np.int16 else 1.0)
        end = (self.n_in + len(y)) * self.out_rate // self.in_rate
        idx = np.arange(self.n_out, end) * self.in_rate // self.out_rate - self.n_in
        self.n_in += len(y)
        self.n_out = end
        return y[idx]


@pytest.mark.parametrize("rate", [16_000, 48_000])
def test_wideband_legs_round_trip_and_detect_the_caller(rate: int) -> None:
    engine = ScriptedEngine(lambda c, k, f: (f, ""))  # echo in the same tick
    events = RecordingEvents()
    leg = LoopbackLeg(rate)
    calls = make_manager(engine, events, resampler_factory=HoldResampler)
    call = calls.start_call(CallInfo("w1", "webrtc", "p"), leg)
    ms = rate // 1000
    caller = np.zeros(2 * rate, dtype=np.int16)
    caller[500 * ms : 1000 * ms] = tone(500 * ms, rate, amp=0.5)
    out = run_call(call, caller, tick=engine.tick, leg=leg, extra_frames=10)
    # frame alignment (80 ms); the same-tick echo and the primed 20 ms cancel out
    delay = int(np.flatnonzero(np.abs(out) > 8000)[0]) - int(
        np.flatnonzero(np.abs(caller) > 8000)[0]
    )
    assert abs(delay - 80 * ms) <= 2
    seg_in = caller[500 * ms : 1000 * ms].astype(np.float64)
    seg_out = out[500 * ms + 80 * ms : 1000 * ms + 80 * ms].astype(np.float64)
    assert np.corrcoef(seg_in, seg_out)[0, 1] > 0.95
    call.on_leg_closed(EndReason.CALLER_HANGUP)
    ended = events.of_type(CallEnded)[0]
    assert ended.dynamics.caller_talk_ms == 500  # the VAD ran at 8/16 kHz on this leg
    assert ended.dynamics.agent_talk_ms == 500


def test_engine_thread_hands_ticks_over_without_a_hop() -> None:
    # a real engine thread (offline mode ticks as soon as the slot has a frame)
    engine = BatchedEngine(EchoModel(), mode=TickMode.OFFLINE)
    engine.start()
    try:
        engine.load_persona(PersonaPrompt("p", "You echo.", "NATF0"))
        events = RecordingEvents()
        leg = LoopbackLeg(RATE)
        calls = make_manager(engine, events, config=CallConfig(max_queue_ms=1000))
        call = calls.start_call(CallInfo("t1", "sip", "p"), leg)
        caller = tone(8 * 640 + 1, hz=300.0)  # 8 frames (the ring's size), then one sample
        call.feed_caller_audio(caller[:-1])
        for _ in range(2000):  # wait for the engine thread, without asserting any time
            if engine.stats().ticks >= 8:
                break
            time.sleep(0.005)
        assert engine.stats().ticks == 8
        call.feed_caller_audio(caller[-1:])  # any leg call reads the ring
        assert call.ticks == 8 and call.ticks_lost == 0
        out = np.concatenate([call.pull_agent_audio(160).copy() for _ in range(33)])
        # echo: tick k returns frame k-1; 20 ms primed first
        assert np.array_equal(out[160 + 640 : 160 + 8 * 640], caller[: 7 * 640])
        call.on_leg_closed(EndReason.CALLER_HANGUP)
    finally:
        engine.close()


def test_each_start_plays_the_prebuffer_after_the_tick_arrived() -> None:
    now = [0.0]
    dc = np.full(1920, 0.25, dtype=np.float32)
    engine = ScriptedEngine(lambda c, k, f: (dc, ""))
    leg = LoopbackLeg(RATE)
    calls = make_manager(engine, RecordingEvents(), clock=lambda: now[0])
    call = calls.start_call(CallInfo("lead", "sip", "p"), leg)
    now[0] = 10.000
    engine.tick()  # arrives at 10.000 s
    now[0] = 10.015  # the leg's next pull comes 15 ms later
    out = call.pull_agent_audio(160)
    assert not out[:40].any() and out[40:].any()  # 5 ms of lead: 20 ms after arrival
    for _ in range(3):
        call.pull_agent_audio(160)
    out = call.pull_agent_audio(160)  # the tick ran out 40 samples into this pull
    assert out[:40].all() and not out[40:].any() and call.playout.underruns == 1
    now[0] = 10.090
    engine.tick()  # a late tick primes again
    now[0] = 10.095
    out = call.pull_agent_audio(160)
    assert not out[:120].any() and out[120:].all()


def test_caller_chunks_of_any_length_make_the_same_engine_frames() -> None:
    from collections import deque

    engine = ScriptedEngine(lambda c, k, f: (SILENCE, ""))
    calls = make_manager(engine, RecordingEvents())
    even = calls.start_call(CallInfo("e", "twilio", "p"), LoopbackLeg(RATE))
    odd = calls.start_call(CallInfo("o", "twilio", "p"), LoopbackLeg(RATE))
    for slot in engine.slots:
        slot.inputs = deque()  # keep every pushed frame
    x = tone(10 * 640, hz=700.0)
    for k in range(40):
        even.feed_caller_audio(x[k * 160 : (k + 1) * 160])
    sizes = [7, 333, 1, 160, 999, 2, 640, 1279]
    pos = 0
    k = 0
    while pos < len(x):
        n = sizes[k % len(sizes)]
        odd.feed_caller_audio(x[pos : pos + n])
        pos += n
        k += 1
    assert odd.frames_pushed == even.frames_pushed == 10
    got_even = np.concatenate(list(engine.slots[0].inputs))
    got_odd = np.concatenate(list(engine.slots[1].inputs))
    assert np.array_equal(got_even, got_odd)
    assert got_even.shape == (10 * 1920,) and np.abs(got_even).max() > 0.2


def test_agent_that_starts_after_the_callers_onset_was_not_interrupted() -> None:
    # The VAD confirms the caller 200 ms late; by then an echoing agent has started. The agent
    # was not audible at the onset, so its later silence is no barge-in.
    engine = ScriptedEngine(lambda c, k, f: (f, ""))  # echo
    events = RecordingEvents()
    leg = LoopbackLeg(RATE)
    calls = make_manager(engine, events, vad_factory=lambda r: EnergyVad(r, confirm_ms=200))
    call = calls.start_call(CallInfo("late", "twilio", "p"), leg)
    caller = np.zeros(3 * RATE, dtype=np.int16)
    caller[1000 * MS : 2000 * MS] = tone(1000 * MS)
    run_call(call, caller, tick=engine.tick, leg=leg)
    assert call.playout.agent_intervals and call.playout.agent_intervals[0][0] > 1000
    assert leg.clears == [] and not events.of_type(BargeIn)


def test_a_new_agent_turn_after_a_natural_end_is_no_barge_in() -> None:
    # The agent (an echo, 100 ms late) finished speaking just before the caller's second
    # sentence and starts its next turn before the VAD confirms that sentence: the model was
    # already silent at the onset, so when that next turn ends it is no barge-in.
    engine = ScriptedEngine(lambda c, k, f: (f, ""))
    events = RecordingEvents()
    leg = LoopbackLeg(RATE)
    calls = make_manager(engine, events, vad_factory=lambda r: EnergyVad(r, confirm_ms=200))
    call = calls.start_call(CallInfo("turns", "twilio", "p"), leg)
    caller = np.zeros(4 * RATE, dtype=np.int16)
    caller[500 * MS : 1500 * MS] = tone(1000 * MS)
    caller[1650 * MS : 2500 * MS] = tone(850 * MS)
    run_call(call, caller, tick=engine.tick, leg=leg)
    call.on_leg_closed(EndReason.CALLER_HANGUP)
    # the agent was audible (within the slack) at the second onset, and spoke again after it
    assert call.playout.was_audible_at(1650, 100)
    assert [iv for iv in call.playout.agent_intervals if iv[0] > 1650]
    assert leg.clears == [] and not events.of_type(BargeIn)


def test_a_leg_that_reports_its_close_during_hangup_keeps_our_reason() -> None:
    class EagerLeg(LoopbackLeg):
        call = None

        def request_hangup(self, reason: EndReason) -> None:
            super().request_hangup(reason)
            self.call.on_leg_closed(EndReason.CALLER_HANGUP)  # e.g. the socket closes at once

    engine = ScriptedEngine(lambda c, k, f: (SILENCE, ""))
    events = RecordingEvents()
    leg = EagerLeg(RATE)
    calls = make_manager(engine, events, limits=CallLimits(max_duration_s=0.5))
    call = calls.start_call(CallInfo("eager", "sip", "p"), leg)
    leg.call = call
    run_call(call, np.zeros(RATE, dtype=np.int16), tick=engine.tick, leg=leg)
    assert call.end_reason is EndReason.MAX_DURATION and leg.hangups == [EndReason.MAX_DURATION]
    assert [e.reason for e in events.of_type(CallEnded)] == ["max_duration"]


def test_a_reanchor_report_from_the_engine_becomes_a_call_reanchored_event() -> None:
    engine = ScriptedEngine(lambda c, k, f: (SILENCE, ""))
    events = RecordingEvents()
    leg = LoopbackLeg(RATE)
    call = make_manager(engine, events).start_call(CallInfo("c-re", "twilio", "p"), leg)
    report = ReanchorReport(310, 1500, 12, 61.5, 2750, 1810)
    call.on_tick(TickOutput(0, SILENCE, 3, "", reanchor=report))  # as the engine thread does
    assert events.of_type(CallReanchored) == []  # handed over, emitted on the loop
    call.pull_agent_audio(160)
    (event,) = events.of_type(CallReanchored)
    assert (event.prompt_frames, event.kept_frames, event.chunks) == (310, 1500, 12)
    assert (event.position_before, event.position_after, event.compute_ms) == (2750, 1810, 61.5)


def test_each_caller_turn_becomes_one_caller_speech_event() -> None:
    # the page's caller lane: one event per turn, when it ends (an open turn at the call's end)
    engine = ScriptedEngine(lambda c, k, f: (np.zeros_like(f), ""))
    events = RecordingEvents()
    leg = LoopbackLeg(RATE)
    calls = make_manager(engine, events)
    call = calls.start_call(CallInfo("v1", "twilio", "p"), leg)
    caller = np.zeros(3 * RATE, dtype=np.int16)
    caller[500 * MS : 1000 * MS] = tone(500 * MS)
    caller[2500 * MS :] = tone(500 * MS)
    assert call.activity == "silence"
    run_call(call, caller, tick=engine.tick, leg=leg)
    assert [(e.start_ms, e.end_ms) for e in events.of_type(CallerSpeech)] == [(500, 1000)]
    assert call.activity == "caller"  # the second turn is still open
    call.on_leg_closed(EndReason.CALLER_HANGUP)
    turns = [(e.start_ms, e.end_ms) for e in events.of_type(CallerSpeech)]
    assert turns == [(500, 1000), (2500, 3000)]
    ended = events.of_type(CallEnded)[0]
    assert ended.dynamics is not None and ended.dynamics.caller_talk_ms == 1000
    assert call.activity == "ended"
