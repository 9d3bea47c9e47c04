"""Per-slot input rings and the Slot handle a call holds.

A slot is a row of the batch. Its input ring holds whole 1920-sample caller frames in a
preallocated array; ``push`` (any thread) copies into it, the tick thread pops one frame per
tick. A full ring drops its oldest frame (overrun); an empty ring at a tick gives silence
(underrun). Each join bumps the slot's generation, so a handle kept after ``leave`` is inert.

A standing queue is latency on every reply: a start-up burst or one late tick can leave two or
more frames waiting at every tick for the rest of the call (measured on the Twilio path: +240 to
+320 ms per reply). With ``trim_after_ticks`` set (serving mode), a ring that still holds a
frame after the pop for that many ticks in a row drops its oldest frame, as a jitter buffer
shrinks, counted as an overrun; a queue that jitter empties now and then is never trimmed.

Owns: SlotState, SlotHandle. Imports numpy and the engine contract only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from voicegate.engine.base import (
    FRAME_SAMPLES,
    ReanchorReport,
    SlotSink,
    SlotStats,
    TickOutput,
)

__all__ = ["SlotHandle", "SlotState"]


class SlotState:
    """One row's bookkeeping; guarded by ``lock`` (push/pop) and the engine lock (join/leave)."""

    __slots__ = (
        "active",
        "count",
        "deep_ticks",
        "frames",
        "generation",
        "head",
        "index",
        "lock",
        "notify",
        "output",
        "persona_key",
        "reanchor",
        "ring",
        "sink",
        "stats",
        "trim_after_ticks",
    )

    def __init__(self, index: int, capacity_frames: int, trim_after_ticks: int = 0) -> None:
        if capacity_frames < 1:
            raise ValueError(f"input ring needs at least 1 frame, got {capacity_frames}")
        self.index = index
        self.lock = threading.Lock()
        self.ring: npt.NDArray[np.float32] = np.zeros(
            (capacity_frames, FRAME_SAMPLES), dtype=np.float32
        )
        self.head = 0  # index of the oldest queued frame
        self.count = 0  # frames queued
        self.trim_after_ticks = trim_after_ticks  # 0: never trim a standing queue
        self.deep_ticks = 0  # consecutive pops that left a frame waiting
        self.generation = 0
        self.active = False
        self.notify: Callable[[], None] | None = None  # offline mode: wake the tick thread
        self.persona_key = ""
        self.sink: SlotSink | None = None
        self.stats = SlotStats()
        self.frames = 0  # live frames delivered since join
        self.reanchor: ReanchorReport | None = None  # for the next output (long calls)
        self.output = TickOutput(
            frame_index=0,
            pcm=np.zeros(FRAME_SAMPLES, dtype=np.float32),
            text_token=0,
            text="",
        )

    def clear_ring(self) -> None:
        with self.lock:
            self.head = 0
            self.count = 0
            self.deep_ticks = 0

    def keep_newest(self, frames: int) -> None:
        """Drop all but the newest ``frames`` queued frames (counted as overruns): a call that
        waited for its own prompt starts without a standing queue."""
        with self.lock:
            extra = self.count - frames
            if extra > 0:
                self.head = (self.head + extra) % self.ring.shape[0]
                self.count -= extra
                self.stats.overruns += extra

    def push(self, pcm: npt.NDArray[np.float32], generation: int) -> bool:
        """Queue a copy of ``pcm``; False if the slot was left or rejoined since."""
        capacity = self.ring.shape[0]
        with self.lock:
            if generation != self.generation or not self.active:
                return False
            if self.count == capacity:
                self.head = (self.head + 1) % capacity
                self.count -= 1
                self.stats.overruns += 1
            tail = (self.head + self.count) % capacity
            np.copyto(self.ring[tail], pcm, casting="same_kind")
            self.count += 1
        if self.notify is not None:
            self.notify()
        return True

    def pop_into(self, out: npt.NDArray[np.float32]) -> bool:
        """Move the oldest frame into ``out``; silence and an underrun when none is queued."""
        with self.lock:
            if self.count == 0:
                out.fill(0.0)
                self.stats.underruns += 1
                return False
            capacity = self.ring.shape[0]
            if self.trim_after_ticks and self.count > 1:
                self.deep_ticks += 1
                if self.deep_ticks >= self.trim_after_ticks:
                    self.head = (self.head + 1) % capacity
                    self.count -= 1
                    self.stats.overruns += 1
                    self.deep_ticks = 0
            else:
                self.deep_ticks = 0
            np.copyto(out, self.ring[self.head])
            self.head = (self.head + 1) % capacity
            self.count -= 1
            return True

    def queued(self) -> int:
        return self.count


class SlotHandle:
    """The ``Slot`` a call holds: push frames, read counters, leave."""

    __slots__ = ("_generation", "_leave", "_next_tick_at", "_persona_key", "_state", "_stats")

    def __init__(
        self,
        state: SlotState,
        generation: int,
        leave: Callable[[SlotState, int], None],
        *,
        next_tick_at: Callable[[], float | None] | None = None,
    ) -> None:
        self._state = state
        self._generation = generation
        self._leave = leave
        self._next_tick_at = next_tick_at
        # kept by the handle so a call can read its final counters after leaving
        self._stats = state.stats
        self._persona_key = state.persona_key

    @property
    def index(self) -> int:
        return self._state.index

    @property
    def persona_key(self) -> str:
        return self._persona_key

    @property
    def stats(self) -> SlotStats:
        return self._stats

    @property
    def is_active(self) -> bool:
        state = self._state
        return state.active and state.generation == self._generation

    def push(self, pcm: npt.NDArray[np.float32]) -> None:
        """Queue one 1920-sample 24 kHz frame (float32 in [-1, 1]); thread-safe; copies."""
        if pcm.shape != (FRAME_SAMPLES,):
            raise ValueError(
                f"slot {self.index}: expected a ({FRAME_SAMPLES},) frame, got {pcm.shape}"
            )
        self._state.push(pcm, self._generation)

    def leave(self) -> None:
        self._leave(self._state, self._generation)

    def next_tick_at(self) -> float | None:
        """When the engine's next tick takes its frames (monotonic clock); None without a
        tick schedule (offline, manual mode) -- see ``voicegate.engine.base.TickScheduled``."""
        return None if self._next_tick_at is None else self._next_tick_at()

    def __repr__(self) -> str:
        return (
            f"SlotHandle(index={self.index}, persona={self.persona_key!r}, active={self.is_active})"
        )
