"""CallerFramer: the caller's 24 kHz audio cut into 1920-sample frames, in phase with the ticks.

Simulated time only: chunks "arrive" at set times on a hand-set clock, and the slot double
answers ``next_tick_at`` from a tick grid of a chosen phase.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from utils import ManualClock, ScheduledSlot

from voicegate.calls.framing import ALIGN_CHECK_FRAMES, ALIGN_MARGIN_S, CallerFramer
from voicegate.engine.base import FRAME_SAMPLES

LEG_RATE = 8000
CHUNK = 480  # 20 ms at 24 kHz (160 samples at the leg's 8 kHz)
CHUNK_S = 0.02


def audio(n: int, seed: int = 1) -> npt.NDArray[np.float32]:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, n).astype(np.float32)


def heard(slot: ScheduledSlot) -> npt.NDArray[np.float32]:
    return np.concatenate([f for _, f in slot.pushes]) if slot.pushes else np.zeros(0, np.float32)


def feed_chunks(
    framer: CallerFramer, clock: ManualClock, x: npt.NDArray[np.float32], arrivals: list[float]
) -> None:
    for k, t in enumerate(arrivals):
        clock.now = t
        framer.feed(x[k * CHUNK : (k + 1) * CHUNK], CHUNK // 3)


@pytest.mark.parametrize("sizes", [[1920], [480] * 8, [1000, 7, 2753, 1], [5000, 3000]])
def test_without_a_schedule_frames_are_cut_exactly_as_fed(sizes: list[int]) -> None:
    clock = ManualClock()
    slot = ScheduledSlot(clock, first_tick=None)
    framer = CallerFramer(LEG_RATE, clock)
    framer.bind(slot)
    x = audio(sum(sizes))
    pos = 0
    for n in sizes:
        framer.feed(x[pos : pos + n], n // 3)
        pos += n
    frames = len(x) // FRAME_SAMPLES
    assert framer.frames_pushed == len(slot.pushes) == frames
    assert np.array_equal(heard(slot), x[: frames * FRAME_SAMPLES])
    assert framer.phase_pad_samples == framer.phase_drop_samples == 0


def test_frames_before_the_slot_is_bound_are_counted_not_pushed() -> None:
    clock = ManualClock()
    framer = CallerFramer(LEG_RATE, clock)
    framer.feed(audio(2 * FRAME_SAMPLES + 100), 0)
    assert framer.frames_pushed == 2
    slot = ScheduledSlot(clock, first_tick=None)
    framer.bind(slot)
    framer.feed(audio(FRAME_SAMPLES), 0)
    assert framer.frames_pushed == 3 and len(slot.pushes) == 1


@pytest.mark.parametrize("margin_s", [ALIGN_MARGIN_S, 0.012])  # the default; a setting's
@pytest.mark.parametrize("phase_ms", [0.0, 5.0, 8.0, 19.9, 33.0, 61.0, 79.9])
def test_the_first_frame_is_padded_so_frames_complete_just_before_ticks(
    phase_ms: float, margin_s: float
) -> None:
    clock = ManualClock()
    start = clock.now
    slot = ScheduledSlot(clock, first_tick=start + phase_ms / 1000)
    framer = CallerFramer(LEG_RATE, clock, margin_s)
    framer.bind(slot)
    x = audio(50 * CHUNK)
    feed_chunks(framer, clock, x, [start + 0.001 + k * CHUNK_S for k in range(50)])
    leads = slot.leads()
    assert len(leads) >= 12
    assert all(margin_s - 1e-9 <= d < margin_s + CHUNK_S for d in leads), leads
    pad = framer.phase_pad_samples
    assert 0 <= pad < FRAME_SAMPLES and pad % CHUNK == 0 and framer.phase_drop_samples == 0
    out = heard(slot)
    assert not out[:pad].any() and np.array_equal(out[pad:], x[: len(out) - pad])


def test_a_caller_running_fast_loses_one_chunk_per_check_at_most() -> None:
    clock = ManualClock()
    start = clock.now
    slot = ScheduledSlot(clock, first_tick=start + 0.031)
    framer = CallerFramer(LEG_RATE, clock)
    framer.bind(slot)
    n = 400
    x = audio(n * CHUNK)
    period = CHUNK_S * 0.99  # 1% fast: 0.8 ms earlier every frame
    feed_chunks(framer, clock, x, [start + 0.002 + k * period for k in range(n)])
    dropped = framer.phase_drop_samples
    assert dropped > 0 and dropped % CHUNK == 0
    checks = framer.frames_pushed // ALIGN_CHECK_FRAMES
    assert dropped // CHUNK <= checks
    assert min(slot.leads()) >= ALIGN_MARGIN_S - 1e-9


def test_a_margin_of_a_tick_or_more_is_refused() -> None:
    with pytest.raises(ValueError, match="margin"):
        CallerFramer(LEG_RATE, ManualClock(), 0.08)


def test_chunks_longer_than_a_tick_are_not_phased() -> None:
    clock = ManualClock()
    slot = ScheduledSlot(clock, first_tick=clock.now + 0.03)
    framer = CallerFramer(LEG_RATE, clock)
    framer.bind(slot)
    x = audio(10 * 2400)
    for k in range(10):  # 100 ms chunks
        clock.now += 0.1
        framer.feed(x[k * 2400 : (k + 1) * 2400], 800)
    assert framer.phase_pad_samples == framer.phase_drop_samples == 0
    assert np.array_equal(heard(slot), x[: framer.frames_pushed * FRAME_SAMPLES])
