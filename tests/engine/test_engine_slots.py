"""The per-slot input ring: order, overruns, underruns and trimming of a standing queue."""

from __future__ import annotations

import numpy as np

from voicegate.engine.base import FRAME_SAMPLES
from voicegate.engine.slots import SlotState


def _frame(value: float) -> np.ndarray:
    return np.full(FRAME_SAMPLES, value, dtype=np.float32)


def _joined(capacity: int, trim: int) -> SlotState:
    state = SlotState(0, capacity, trim)
    state.active = True
    return state


def test_frames_pop_in_order_and_an_empty_ring_gives_silence_and_an_underrun() -> None:
    state = _joined(4, 0)
    out = np.empty(FRAME_SAMPLES, dtype=np.float32)
    for v in (1.0, 2.0):
        assert state.push(_frame(v), state.generation)
    assert state.pop_into(out) and out[0] == 1.0
    assert state.pop_into(out) and out[0] == 2.0
    assert not state.pop_into(out) and not out.any()
    assert state.stats.underruns == 1 and state.stats.overruns == 0


def test_a_full_ring_drops_its_oldest_frame() -> None:
    state = _joined(2, 0)
    out = np.empty(FRAME_SAMPLES, dtype=np.float32)
    for v in (1.0, 2.0, 3.0):
        state.push(_frame(v), state.generation)
    assert state.stats.overruns == 1
    state.pop_into(out)
    assert out[0] == 2.0


def _run_with_standing_queue(trim: int, ticks: int) -> tuple[SlotState, list[float]]:
    """A start-up burst of 3 frames, then one frame per tick: two frames wait at every tick."""
    state = _joined(4, trim)
    out = np.empty(FRAME_SAMPLES, dtype=np.float32)
    n = 0
    for _ in range(3):
        n += 1
        state.push(_frame(n), state.generation)
    popped: list[float] = []
    for _ in range(ticks):
        n += 1
        state.push(_frame(n), state.generation)
        state.pop_into(out)
        popped.append(float(out[0]))
    return state, popped


def test_without_trimming_a_standing_queue_lasts_the_whole_call() -> None:
    state, popped = _run_with_standing_queue(trim=0, ticks=60)
    assert state.queued() == 3 and popped[-1] == 60.0  # 3 frames (240 ms) behind to the end


def test_a_standing_queue_is_trimmed_back_to_one_frame() -> None:
    state, popped = _run_with_standing_queue(trim=12, ticks=60)
    assert state.queued() == 0  # each frame is now used at the first tick after it arrived
    assert state.stats.overruns == 3  # the 3 standing frames dropped one per trim, counted
    assert popped == sorted(popped) and len(set(popped)) == len(popped)  # order kept


def test_jitter_that_empties_the_queue_now_and_then_is_never_trimmed() -> None:
    state = _joined(4, 12)
    out = np.empty(FRAME_SAMPLES, dtype=np.float32)
    n = 0
    for tick in range(200):
        # two frames arrive together every other tick: the queue is deep, then empty
        if tick % 2 == 0:
            for _ in range(2):
                n += 1
                state.push(_frame(n), state.generation)
        state.pop_into(out)
    assert state.stats.overruns == 0 and state.stats.underruns == 0
