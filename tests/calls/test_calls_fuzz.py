"""A Call under random leg behaviour: any chunk sizes, pulls, ticks, digits and an end.

Invariants: every pull returns exactly what was asked, nothing raises or reports an error, the
call ends exactly once with a consistent call.ended, and the slot is freed.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from utils import (
    SILENCE,
    EnergyVad,
    LoopbackLeg,
    RecordingEvents,
    ScriptedEngine,
    frozen_clock,
    speech,
)

from voicegate.calls import CallInfo, CallManager, EndReason
from voicegate.events.schema import CallEnded, CallError

_op = st.one_of(
    st.tuples(st.just("feed"), st.integers(0, 3000)),
    st.tuples(st.just("pull"), st.integers(1, 2000)),
    st.tuples(st.just("tick"), st.integers(1, 3)),
    st.tuples(st.just("dtmf"), st.sampled_from(["1", "#", "x"])),
)


@settings(max_examples=40, deadline=None)
@given(
    rate=st.sampled_from([8000, 16000, 48000]),
    ops=st.lists(_op, max_size=80),
    seed=st.integers(0, 2**16),
)
def test_random_leg_behaviour_keeps_the_call_consistent(rate: int, ops: list, seed: int) -> None:
    rng = np.random.default_rng(seed)
    talk = rng.random(64) < 0.5
    engine = ScriptedEngine(
        lambda c, k, f: (speech(), " w") if talk[k % 64] else (SILENCE, ""), max_slots=1
    )
    events = RecordingEvents()
    leg = LoopbackLeg(rate, queued_ms=int(rng.integers(0, 100)))
    calls = CallManager(
        engine,  # type: ignore[arg-type]
        events,
        clock=frozen_clock,
        vad_factory=lambda r: EnergyVad(r),
    )
    call = calls.start_call(CallInfo("fuzz", "webrtc", "p"), leg)
    for op, arg in ops:
        if op == "feed":
            loud = rng.random() < 0.5
            pcm = (rng.standard_normal(arg) * (8000 if loud else 10)).astype(np.int16)
            call.feed_caller_audio(pcm)
        elif op == "pull":
            out = call.pull_agent_audio(arg)
            assert out.shape == (arg,) and out.dtype == np.int16
            leg.pulled += arg
        elif op == "tick":
            for _ in range(arg):
                engine.tick()
        else:
            call.on_dtmf(str(arg))
    assert not events.of_type(CallError)
    call.on_leg_closed(EndReason.CALLER_HANGUP)
    call.on_leg_closed(EndReason.MEDIA_TIMEOUT)
    (ended,) = events.of_type(CallEnded)
    assert ended.reason == "caller_hangup" and ended.frames == call.ticks
    assert ended.bargeins == len(leg.clears) == len(call.bargeins)
    assert engine.active_slots == 0 and calls.active_count == 0
    assert ended.dynamics is not None and ended.dynamics.overlap_ms <= min(
        ended.dynamics.caller_talk_ms, ended.dynamics.agent_talk_ms
    )
    for b in call.bargeins:
        assert 0 <= b.latency_ms <= 2000 and b.discarded_ms >= 0
    for seg in call.segments:
        assert seg.start_ms <= seg.end_ms
