"""The Call with the real audio package: StreamingResampler delays and the real VAD.

The logic tests elsewhere use exact test resamplers; here the production defaults run.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import resample_poly
from utils import (
    SILENCE,
    LoopbackLeg,
    RecordingEvents,
    ScriptedEngine,
    frozen_clock,
    run_call,
    speech,
)

from voicegate.audio import StreamingResampler, caller_speech_ms, load_caller
from voicegate.calls import CallInfo, CallManager, EndReason
from voicegate.engine import BatchedEngine, EchoModel, PersonaPrompt, TickMode
from voicegate.events.schema import BargeIn, CallEnded

RATE = 8000


def test_echo_round_trip_delay_is_the_frames_plus_the_resamplers() -> None:
    engine = BatchedEngine(EchoModel(), mode=TickMode.MANUAL)
    engine.start()
    try:
        engine.load_persona(PersonaPrompt("p", "You echo.", "NATF0"))
        leg = LoopbackLeg(RATE)
        calls = CallManager(engine, RecordingEvents(), clock=frozen_clock)
        call = calls.start_call(CallInfo("a1", "sip", "p"), leg)
        rng = np.random.default_rng(7)
        caller = np.zeros(3 * RATE, dtype=np.int16)
        caller[RATE : RATE + 4000] = (rng.standard_normal(4000) * 3000).astype(np.int16)
        # band-limit the burst so the resamplers pass it unchanged (telephone band)
        caller = resample_poly(resample_poly(caller.astype(np.float64), 1, 2), 2, 1).astype(
            np.int16
        )
        out = run_call(call, caller, tick=engine.tick, leg=leg, extra_frames=10)
        call.on_leg_closed(EndReason.CALLER_HANGUP)
    finally:
        engine.close()
    up = StreamingResampler(RATE, 24_000)
    down = StreamingResampler(24_000, RATE)
    expected = (160 + up.delay_ms + down.delay_ms) * RATE / 1000
    corr = np.correlate(out.astype(np.float64), caller.astype(np.float64)[RATE : RATE + 4000])
    lag = int(np.argmax(corr)) - RATE
    assert abs(lag - expected) <= 1.0, (lag, expected)
    peak = corr.max() / np.dot(
        caller[RATE : RATE + 4000].astype(np.float64), caller[RATE : RATE + 4000]
    )
    assert peak > 0.9  # the echo comes back at nearly full level


def test_real_vad_finds_the_caller_and_drives_a_barge_in() -> None:
    clip = load_caller(RATE)  # bundled recording; its sentences are listed by caller_speech_ms()
    truth = caller_speech_ms()
    loud = [0]

    def script(c: int, k: int, frame: np.ndarray) -> tuple[np.ndarray, str]:
        if float(np.abs(frame).max()) > 0.05:
            loud[0] += 1
        return (SILENCE, "") if loud[0] >= 4 else (speech(), " w")

    engine = ScriptedEngine(script)
    events = RecordingEvents()
    leg = LoopbackLeg(RATE)
    calls = CallManager(engine, events, clock=frozen_clock)  # production resamplers and VAD
    call = calls.start_call(CallInfo("a2", "twilio", "p"), leg)
    run_call(call, clip, tick=engine.tick, leg=leg)
    call.on_leg_closed(EndReason.CALLER_HANGUP)
    (b,) = events.of_type(BargeIn)
    assert abs(b.caller_onset_ms - truth[0][0]) <= 150
    assert 0 <= b.latency_ms <= 1000 and len(leg.clears) == 1
    dyn = events.of_type(CallEnded)[0].dynamics
    spoken = sum(e - s for s, e in truth)
    assert dyn is not None and abs(dyn.caller_talk_ms - spoken) <= 800
