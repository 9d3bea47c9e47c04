"""TickRing: ticks from the engine thread reach the loop in order, copied, oldest lost first."""

from __future__ import annotations

import threading
import time

import numpy as np
import numpy.typing as npt

from voicegate.calls.ticks import TICK_RING, TickRing
from voicegate.engine.base import FRAME_SAMPLES, TickOutput


class Taken:
    def __init__(self) -> None:
        self.ticks: list[tuple[float, str, float]] = []

    def __call__(self, pcm: npt.NDArray[np.float32], text: str, arrived_at: float) -> None:
        self.ticks.append((float(pcm[0]), text, arrived_at))


def tick(k: int) -> TickOutput:
    pcm = np.full(FRAME_SAMPLES, k / 1000, dtype=np.float32)
    return TickOutput(frame_index=k, pcm=pcm, text_token=k, text=f" w{k}")


def test_ticks_are_taken_in_order_with_text_and_arrival_time() -> None:
    now = [10.0]
    taken = Taken()
    ring = TickRing(lambda: now[0], taken)
    for k in range(3):
        now[0] += 0.08
        ring.on_tick(tick(k))
    assert (ring.written, ring.read) == (3, 0)
    ring.drain()
    assert (ring.written, ring.read, ring.lost) == (3, 3, 0)
    assert [(round(p * 1000), t) for p, t, _ in taken.ticks] == [(0, " w0"), (1, " w1"), (2, " w2")]
    assert [round(a, 2) for _, _, a in taken.ticks] == [10.08, 10.16, 10.24]
    ring.drain()  # nothing new: nothing taken
    assert len(taken.ticks) == 3


def test_the_ring_copies_the_engine_buffer() -> None:
    taken = Taken()
    ring = TickRing(lambda: 0.0, taken)
    out = tick(5)
    ring.on_tick(out)
    out.pcm[:] = 0.0  # the engine reuses its buffer after the callback
    ring.drain()
    assert round(taken.ticks[0][0] * 1000) == 5


def test_a_late_reader_loses_the_oldest_ticks_and_counts_them() -> None:
    taken = Taken()
    ring = TickRing(lambda: 0.0, taken)
    for k in range(TICK_RING + 3):
        ring.on_tick(tick(k))
    ring.drain()
    assert ring.lost == 3
    assert [t for _, t, _ in taken.ticks] == [f" w{k}" for k in range(3, TICK_RING + 3)]


def test_a_writer_thread_hands_every_tick_over_in_order() -> None:
    """The engine thread writes while the loop drains; a reader that keeps up loses nothing
    (the writer here waits while the ring is nearly full, as 80 ms ticks against a loop that
    reads every 20 ms do)."""
    taken = Taken()
    ring = TickRing(lambda: 0.0, taken)
    n = 3000

    def engine() -> None:
        for k in range(n):
            while ring.written - ring.read >= TICK_RING - 1:
                time.sleep(0)
            ring.on_tick(tick(k))

    thread = threading.Thread(target=engine)
    thread.start()
    while ring.read < n:
        ring.drain()
        time.sleep(0)
    thread.join()
    assert ring.lost == 0 and ring.written == ring.read == n
    assert [round(p * 1000) for p, _, _ in taken.ticks] == list(range(n))
