"""The shared-memory rings: FIFO order across wraparound, full rings, the output record, a fuzz
of interleavings against a model, and a producer in another process."""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicegate.edge.rings import (
    CTL_IN_DROPPED,
    CTL_OUT_DROPPED,
    TEXT_BYTES,
    RingLayout,
    SlotRings,
)
from voicegate.engine.base import FRAME_SAMPLES, ReanchorReport, TickOutput


def frame(value: float) -> np.ndarray:
    return np.full(FRAME_SAMPLES, value, dtype=np.float32)


def blank() -> TickOutput:
    return TickOutput(0, np.zeros(FRAME_SAMPLES, dtype=np.float32), 0, "")


@pytest.fixture
def rings() -> Iterator[SlotRings]:
    r = SlotRings.create(RingLayout(3))
    try:
        yield r
    finally:
        r.close()


def test_inputs_keep_order_across_many_wraps(rings: SlotRings) -> None:
    n = 0
    got = []
    for burst in [1, 4, 3, 2, 4, 1, 1, 3] * 5:
        for _ in range(burst):
            assert rings.push_input(1, frame(n))
            n += 1
        while (view := rings.pop_input(1)) is not None:
            got.append(float(view[0]))
            assert float(view[-1]) == float(view[0])
            rings.release_input(1)
    assert got == [float(i) for i in range(n)]
    assert rings.pop_input(0) is None and rings.pop_input(2) is None  # other slots untouched


def test_a_full_input_ring_refuses_the_new_frame_and_counts_it(rings: SlotRings) -> None:
    cap = rings.layout.in_frames
    for i in range(cap + 3):
        assert rings.push_input(0, frame(i)) is (i < cap)
    assert rings.ctl[0, CTL_IN_DROPPED] == 3
    view = rings.pop_input(0)
    assert view is not None and float(view[0]) == 0.0  # the oldest stays first


def test_the_output_record_round_trips_text_and_reanchor(rings: SlotRings) -> None:
    report = ReanchorReport(10, 200, 3, 12.345, 2990, 250)
    pieces = ["", " héllo", "x" * (TEXT_BYTES + 10), "▁日本"]
    into = blank()
    for k in range(3 * rings.layout.out_frames):  # several wraps
        out = TickOutput(k, frame(k / 100), 1000 + k, pieces[k % 4], report if k % 5 == 2 else None)
        assert rings.put_output(2, out, 1)
        assert rings.take_output(2, into) == 1
        assert into.frame_index == k and into.text_token == 1000 + k
        assert into.text == pieces[k % 4].encode()[:TEXT_BYTES].decode("utf-8", "replace")
        assert np.array_equal(into.pcm, out.pcm)
        assert into.reanchor == (report if k % 5 == 2 else None)
    assert rings.take_output(2, into) == -1


def test_a_worker_that_does_not_read_loses_new_ticks_counted(rings: SlotRings) -> None:
    cap = rings.layout.out_frames
    for k in range(cap + 2):
        assert rings.put_output(0, TickOutput(k, frame(k), 0, ""), 1) is (k < cap)
    assert rings.ctl[0, CTL_OUT_DROPPED] == 2
    into = blank()
    assert rings.take_output(0, into) == 1 and into.frame_index == 0


def test_a_hand_over_skips_what_the_previous_call_left_and_its_late_tick(
    rings: SlotRings,
) -> None:
    rings.push_input(1, frame(1))  # the previous call's last frame, never pumped
    rings.put_output(1, TickOutput(7, frame(1), 0, "old"), 1)  # and its unread tick
    g = rings.generation(1)
    generation, in_start, out_start = rings.hand_over(1)
    assert generation == g + 1
    rings.skip_inputs_to(1, in_start)  # the engine's pump, first time it sees the new call
    rings.skip_outputs_to(1, out_start)  # the new worker, at join
    assert rings.queued_inputs(1) == 0 and rings.queued_outputs(1) == 0
    # the previous call's tick still in flight on the engine thread lands after the hand-over
    rings.put_output(1, TickOutput(8, frame(1), 0, "late"), generation - 1)
    rings.put_output(1, TickOutput(0, frame(2), 0, "new"), generation)
    into = blank()
    assert rings.take_output(1, into) == generation - 1  # the reader drops this one
    assert rings.take_output(1, into) == generation and into.text == "new"
    rings.push_input(1, frame(3))
    view = rings.pop_input(1)
    assert view is not None and float(view[0]) == 3.0


def test_attach_sees_the_same_memory_and_a_short_segment_is_refused(rings: SlotRings) -> None:
    other = SlotRings.attach(rings.name, rings.layout)
    try:
        other.push_input(2, frame(7))
        rings.publish(next_tick_at=12.5, active_slots=2)
        view = rings.pop_input(2)
        assert view is not None and float(view[0]) == 7.0
        assert other.read("next_tick_at") == 12.5 and other.read("active_slots") == 2
    finally:
        other.close()
    with pytest.raises(ValueError, match="the layout needs"):
        SlotRings.attach(rings.name, RingLayout(64))


def test_layout_rejects_rings_that_are_not_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        RingLayout(4, in_frames=3)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 6)), max_size=60))
def test_fuzz_interleavings_match_a_bounded_fifo(ops: list[tuple[bool, int]]) -> None:
    rings = SlotRings.create(RingLayout(1, in_frames=4, out_frames=4))
    try:
        model: deque[int] = deque()
        out_model: deque[int] = deque()
        dropped = out_dropped = 0
        seq = 0
        into = blank()
        for is_push, count in ops:
            for _ in range(count):
                if is_push:
                    ok = rings.push_input(0, frame(seq))
                    assert ok is (len(model) < 4)
                    if ok:
                        model.append(seq)
                    else:
                        dropped += 1
                    ok = rings.put_output(0, TickOutput(seq, frame(seq), seq, str(seq)), 1)
                    if ok:
                        out_model.append(seq)
                    else:
                        out_dropped += 1
                    seq += 1
                else:
                    view = rings.pop_input(0)
                    if not model:
                        assert view is None
                    else:
                        assert view is not None and float(view[0]) == model.popleft()
                        rings.release_input(0)
                    got = rings.take_output(0, into)
                    assert (got == 1) is bool(out_model)
                    if got == 1:
                        want = out_model.popleft()
                        assert (into.frame_index, into.text) == (want, str(want))
                        assert float(into.pcm[5]) == want
            assert rings.queued_inputs(0) == len(model)
        assert rings.ctl[0, CTL_IN_DROPPED] == dropped
        assert rings.ctl[0, CTL_OUT_DROPPED] == out_dropped
    finally:
        rings.close()


def _produce(name: str, slots: int, n: int) -> None:
    rings = SlotRings.attach(name, RingLayout(slots))
    try:
        sent = 0
        while sent < n:
            if rings.push_input(0, frame(sent)):
                sent += 1
            else:
                rings.ctl[0, CTL_IN_DROPPED] -= 1  # a retry, not a loss, in this test
    finally:
        rings.close()


def test_a_producer_in_another_process_delivers_every_frame_in_order() -> None:
    n = 3000
    rings = SlotRings.create(RingLayout(1))
    try:
        proc = mp.get_context("spawn").Process(target=_produce, args=(rings.name, 1, n))
        proc.start()
        got = 0
        while got < n:
            view = rings.pop_input(0)
            if view is None:
                assert proc.is_alive() or rings.queued_inputs(0) > 0, "producer died"
                continue
            # the whole frame is the producer's, never a half-written one
            assert float(view[0]) == got and float(view[-1]) == got
            rings.release_input(0)
            got += 1
        proc.join(10)
        assert proc.exitcode == 0
    finally:
        rings.close()
