"""Call: caller frames complete just before the engine's ticks when the slot tells its schedule.

Simulated time only: chunks "arrive" at set times on an injected clock and the slot double
answers ``next_tick_at`` from a tick grid of a chosen phase.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from utils import (
    ExactResampler,
    LoopbackLeg,
    ManualClock,
    RecordingEvents,
    ScheduledSlot,
    run_call,
    tone,
)

from voicegate.calls import CallInfo, CallManager, EndReason
from voicegate.calls.call import Call
from voicegate.calls.framing import ALIGN_CHECK_FRAMES, ALIGN_MARGIN_S
from voicegate.engine import BatchedEngine, EchoModel, PersonaPrompt, TickMode
from voicegate.engine.base import FRAME_SAMPLES
from voicegate.events.schema import CallEnded

RATE = 8000
CHUNK = 160  # 20 ms at 8 kHz
CHUNK_S = 0.02
UP = 3  # 8 kHz -> 24 kHz
TICK_S = 0.08


def make_call(clock: ManualClock, slot: object, events: RecordingEvents | None = None) -> Call:
    call = Call(
        CallInfo("ph", "twilio", "p"),
        LoopbackLeg(RATE),
        events if events is not None else RecordingEvents(),
        resampler_factory=ExactResampler,
        vad_factory=lambda rate: _NoVad(),
        clock=clock,
    )
    call.bind(slot)  # type: ignore[arg-type]
    return call


class _NoVad:
    is_speech = False
    speech_start_ms = 0
    speech_stop_ms = 0

    def process(self, pcm: npt.NDArray[np.int16]) -> bool:
        return False


def feed(call: Call, clock: ManualClock, pcm: npt.NDArray[np.int16], arrivals: list[float]) -> None:
    for k, t in enumerate(arrivals):
        clock.now = t
        call.feed_caller_audio(pcm[k * CHUNK : (k + 1) * CHUNK])


def caller_audio(seconds: float) -> npt.NDArray[np.int16]:
    rng = np.random.default_rng(3)
    return (rng.standard_normal(int(seconds * RATE)) * 2000).astype(np.int16)


@pytest.mark.parametrize("phase_ms", [0.0, 3.0, 7.9, 8.0, 8.1, 13.0, 20.0, 27.5, 41.0, 63.0, 79.9])
def test_frames_complete_on_the_last_chunk_before_the_tick(phase_ms: float) -> None:
    clock = ManualClock()
    start = clock.now
    slot = ScheduledSlot(clock, first_tick=start + phase_ms / 1000)
    call = make_call(clock, slot)
    pcm = caller_audio(2.0)
    n = len(pcm) // CHUNK
    feed(call, clock, pcm, [start + 0.0013 + k * CHUNK_S for k in range(n)])
    leads = slot.leads()
    assert len(leads) >= 23
    # every frame waits at most one chunk plus the margin, never less than the margin
    assert all(ALIGN_MARGIN_S - 1e-9 <= d < ALIGN_MARGIN_S + CHUNK_S for d in leads), leads
    # the model hears the padding silence, then the caller's audio exactly, nothing dropped
    pad = call.phase_pad_samples
    assert 0 <= pad < FRAME_SAMPLES and call.phase_drop_samples == 0
    heard = np.concatenate([f for _, f in slot.pushes])
    assert not heard[:pad].any()
    expected = np.repeat(pcm.astype(np.float32) / 32768.0, UP)
    assert np.array_equal(heard[pad:], expected[: len(heard) - pad])
    # the caller clock still counts what the leg fed
    assert call.caller_ms == 2000 and call.frames_pushed == len(slot.pushes)


def test_without_a_schedule_frames_are_cut_as_fed() -> None:
    clock = ManualClock()
    slot = ScheduledSlot(clock, first_tick=None)  # next_tick_at() is None: offline/manual
    call = make_call(clock, slot)
    pcm = caller_audio(1.0)
    feed(call, clock, pcm, [clock.now + 0.007 + k * CHUNK_S for k in range(len(pcm) // CHUNK)])
    assert call.phase_pad_samples == 0 and call.phase_drop_samples == 0
    heard = np.concatenate([f for _, f in slot.pushes])
    expected = np.repeat(pcm.astype(np.float32) / 32768.0, UP)
    assert len(heard) == 12 * FRAME_SAMPLES and np.array_equal(heard, expected[: len(heard)])
    # pushes happen on every 4th chunk from the call's first sample
    assert [round((t - slot.pushes[0][0]) / CHUNK_S) for t, _ in slot.pushes] == list(
        range(0, 4 * len(slot.pushes), 4)
    )


def test_a_drifting_caller_is_rephased_by_dropping_one_chunk_at_a_time() -> None:
    clock = ManualClock()
    start = clock.now
    slot = ScheduledSlot(clock, first_tick=start + 0.031)
    events = RecordingEvents()
    call = make_call(clock, slot, events)
    pcm = caller_audio(12.0)
    period = CHUNK_S * 0.995  # the caller's clock runs 0.5% fast: 0.4 ms earlier every frame
    feed(call, clock, pcm, [start + 0.002 + k * period for k in range(len(pcm) // CHUNK)])
    leads = slot.leads()
    drift_per_check = ALIGN_CHECK_FRAMES * 4 * CHUNK_S * 0.005
    assert call.phase_drop_samples > 0 and call.phase_drop_samples % (CHUNK * UP) == 0
    # 60 ms of drift in 12 s: about three chunks dropped, none more than needed
    assert 2 <= call.phase_drop_samples // (CHUNK * UP) <= 4
    assert min(leads) >= ALIGN_MARGIN_S - 1e-9
    assert max(leads) < ALIGN_MARGIN_S + CHUNK_S + 2 * drift_per_check
    assert call.caller_ms == 12_000
    call.on_leg_closed(EndReason.CALLER_HANGUP)
    (ended,) = events.of_type(CallEnded)
    assert ended.counters["phase_drop_samples"] == call.phase_drop_samples
    assert ended.counters["phase_pad_samples"] == call.phase_pad_samples


def test_one_late_chunk_costs_no_caller_audio() -> None:
    clock = ManualClock()
    start = clock.now
    slot = ScheduledSlot(clock, first_tick=start + 0.05)
    call = make_call(clock, slot)
    pcm = caller_audio(3.0)
    arrivals = [start + 0.004 + k * CHUNK_S for k in range(len(pcm) // CHUNK)]
    for k in (40, 41, 42, 43, 90):  # network jitter: chunks 15-30 ms late, then a burst
        arrivals[k] += 0.03 if k != 90 else 0.015
    feed(call, clock, pcm, arrivals)
    assert call.phase_drop_samples == 0
    heard = np.concatenate([f for _, f in slot.pushes])
    pad = call.phase_pad_samples
    expected = np.repeat(pcm.astype(np.float32) / 32768.0, UP)
    assert np.array_equal(heard[pad:], expected[: len(heard) - pad])


def test_manual_ticks_keep_the_echo_round_trip_in_samples() -> None:
    engine = BatchedEngine(EchoModel(), mode=TickMode.MANUAL)
    engine.start()
    try:
        engine.load_persona(PersonaPrompt("p", "You echo.", "NATF0"))
        leg = LoopbackLeg(RATE)
        clock = ManualClock()
        calls = CallManager(
            engine,
            RecordingEvents(),
            resampler_factory=ExactResampler,
            vad_factory=lambda rate: _NoVad(),
            clock=clock,
        )
        call = calls.start_call(CallInfo("m1", "sip", "p"), leg)
        assert call.slot is not None and call.slot.next_tick_at() is None  # type: ignore[attr-defined]
        caller = np.zeros(2 * RATE, dtype=np.int16)
        caller[800:1600] = tone(800)
        out = run_call(call, caller, tick=engine.tick, leg=leg, extra_frames=20)
        call.on_leg_closed(EndReason.CALLER_HANGUP)
    finally:
        engine.close()
    delay = int(np.flatnonzero(out)[0]) - int(np.flatnonzero(caller)[0])
    assert delay == 160 * RATE // 1000  # the frame, echo's tick, the lead: as before
    assert call.phase_pad_samples == 0 and call.phase_drop_samples == 0
