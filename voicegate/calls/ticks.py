"""The tick ring: a call's engine ticks handed from the engine thread to its event loop.

The slot's ``on_tick`` runs on the ENGINE THREAD and only copies the tick into a preallocated
ring of ``TICK_RING`` frames and bumps a counter (single writer, single reader; CPython's GIL
orders the copy before the counter). The loop drains the ring whenever the leg feeds or pulls,
so no hop per tick is needed: the audio could not be played sooner than the next pull anyway,
and ``call_soon_threadsafe`` would cost a self-pipe write and a handle per call per tick. When
the loop falls more than ``TICK_RING`` ticks behind, the oldest are lost (counted).

Usage::

    ring = TickRing(clock, take)     # take(pcm, text, arrived_at) runs on the loop, in order
    ring = TickRing(clock, take, take_caller)  # + take_caller(frame, text, eot, delay) first,
                                     # for ticks that carry the caller STT's output
    ring.on_tick(out)                # engine thread, once per tick
    if ring.written != ring.read:    # event loop: cheap check, then
        ring.drain()

Owns: TickRing, TICK_RING. Allocates nothing per tick; imports numpy and engine.base only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from voicegate.engine.base import FRAME_SAMPLES, TickOutput

__all__ = ["TICK_RING", "TickRing"]

TICK_RING = 8  # engine -> loop frames (640 ms): the loop reads at least every 20 ms


class TickRing:
    """Engine thread -> event loop hand-over of one call's ticks (single writer, single reader)."""

    def __init__(
        self,
        clock: Callable[[], float],
        take: Callable[[npt.NDArray[np.float32], str, float], None],
        take_caller: Callable[[int, str, float, int], None] | None = None,
    ) -> None:
        self._clock = clock
        self._take = take  # (pcm, text, arrival time on ``clock``), on the loop
        # (frame index, caller text piece, end-of-turn probability, STT delay frames)
        self._take_caller = take_caller
        self._frame = [-1] * TICK_RING  # -1: the tick carried no caller STT output
        self._caller_text = [""] * TICK_RING
        self._caller_eot = [0.0] * TICK_RING
        self._caller_delay = 0
        self._pcm = np.zeros((TICK_RING, FRAME_SAMPLES), dtype=np.float32)
        self._text = [""] * TICK_RING
        self._time = [0.0] * TICK_RING  # clock() at arrival
        self.written = 0  # by the engine thread only
        self.read = 0  # by the loop only
        self.lost = 0  # ticks overwritten before the loop read them

    def on_tick(self, out: TickOutput) -> None:
        """ENGINE THREAD: copy the tick into the ring; the loop picks it up."""
        w = self.written
        i = w & (TICK_RING - 1)
        np.copyto(self._pcm[i], out.pcm)
        self._text[i] = out.text
        if out.caller_token >= 0:
            self._frame[i] = out.frame_index
            self._caller_text[i] = out.caller_text
            self._caller_eot[i] = out.caller_end_of_turn
            self._caller_delay = out.caller_delay_frames
        else:
            self._frame[i] = -1
        self._time[i] = self._clock()
        self.written = w + 1

    def drain(self) -> None:
        """Event loop: hand every tick not read yet to ``take``, oldest first."""
        w = self.written
        r = self.read
        if w - r > TICK_RING:
            self.lost += w - r - TICK_RING
            r = w - TICK_RING
        while r < w:
            i = r & (TICK_RING - 1)
            r += 1
            self.read = r
            frame = self._frame[i]
            if frame >= 0 and self._take_caller is not None:
                self._take_caller(
                    frame, self._caller_text[i], self._caller_eot[i], self._caller_delay
                )
            self._take(self._pcm[i], self._text[i], self._time[i])
