"""Caller framing: the caller's 24 kHz audio cut into the engine's 1920-sample frames, with the
frame boundaries placed just before the engine's ticks.

Frame phase: a serving engine takes every slot's frame at fixed 80 ms ticks, so a frame that
completes at an arbitrary moment waits 0-80 ms (mean 40) for its tick. When the slot tells the
tick schedule (``next_tick_at``, see ``engine.base.TickScheduled``), the first chunk after the
join is preceded by up to 60 ms of silence so that frames complete on the last caller chunk
that arrives at least the margin (``ALIGN_MARGIN_S`` unless set) before a tick; the wait is
then at most one chunk (20 ms) plus that margin. If the caller's chunks drift so that every one of
``ALIGN_CHECK_FRAMES`` frames could have waited for one more chunk, one chunk of caller audio
is dropped (at most one per check). Padding and dropping touch the model's input only: the
Call's caller clock still counts every sample the leg fed. Without a schedule (offline and
manual ticks, test doubles) frames are cut exactly as fed.

Usage (the Call, on the event loop)::

    framer = CallerFramer(leg_rate_hz, clock)
    framer.bind(slot)                    # after the join: frames go to slot.push from now on
    framer.feed(pcm_24k, n_leg_samples)  # every resampled caller chunk

Owns: CallerFramer and the alignment constants. The hot path (every 20 ms chunk) allocates
nothing but the rare phase copy; imports numpy and engine.base only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from voicegate.engine.base import FRAME_MS, FRAME_SAMPLES, MODEL_RATE_HZ, Slot

__all__ = ["ALIGN_CHECK_FRAMES", "ALIGN_MARGIN_S", "CallerFramer"]

# A frame should be complete this long before its tick. It covers what can still delay a
# chunk that arrived in time on the caller side (the event loop handling other calls' chunks
# first, the resampler's work) against the engine thread waking on time; a frame that misses
# its tick costs 80 ms (an underrun now and a frame waiting until the queue is trimmed), so the
# margin buys safety for a few ms of mean latency.
ALIGN_MARGIN_S = 0.008
# frames judged together before dropping a chunk to re-phase (640 ms): one late chunk (network
# jitter) must not cost caller audio, a lasting drift is fixed within a second or two
ALIGN_CHECK_FRAMES = 8
_TICK_S = FRAME_MS / 1000.0


class CallerFramer:
    """Cuts one call's caller audio (24 kHz float32) into frames for its engine slot."""

    def __init__(
        self, rate_hz: int, clock: Callable[[], float], margin_s: float = ALIGN_MARGIN_S
    ) -> None:
        if not 0 <= margin_s < _TICK_S:
            raise ValueError(f"caller framing: margin must be in [0, {_TICK_S}) s, got {margin_s}")
        self.rate_hz = rate_hz  # the leg's rate: chunk durations are judged on it
        self.margin_s = margin_s
        self._clock = clock
        self._slot: Slot | None = None
        self._frame = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        self._frame_fill = 0
        self.frames_pushed = 0
        # frame phase against the engine's ticks (None: no schedule, frames cut as fed)
        self._next_tick_at: Callable[[], float | None] | None = None
        self._is_phase_pending = False  # align at the next chunk (after the join)
        self._drop_left = 0  # 24 kHz samples still to drop to re-phase
        self._lead_min = float("inf")  # least wait for a tick over the frames being judged
        self._lead_frames = 0
        self.phase_pad_samples = 0  # 24 kHz silence added ahead of the caller's audio
        self.phase_drop_samples = 0  # 24 kHz caller audio dropped to re-phase

    def bind(self, slot: Slot) -> None:
        """Push frames to ``slot`` from now on, in phase with its ticks when it tells them."""
        self._slot = slot
        next_tick_at = getattr(slot, "next_tick_at", None)
        if callable(next_tick_at):
            self._next_tick_at = next_tick_at
            self._is_phase_pending = True

    def feed(self, x: npt.NDArray[np.float32], n_leg: int) -> None:
        """One caller chunk: ``x`` at 24 kHz, resampled from ``n_leg`` samples at the leg's rate."""
        next_tick_at = self._next_tick_at
        if next_tick_at is None:
            self._accumulate(x)
        else:
            self._accumulate_phased(x, n_leg, next_tick_at())

    def _accumulate(self, x: npt.NDArray[np.float32]) -> None:
        frame = self._frame
        fill = self._frame_fill
        n = len(x)
        pos = 0
        while pos < n:
            take = min(FRAME_SAMPLES - fill, n - pos)
            frame[fill : fill + take] = x[pos : pos + take]
            fill += take
            pos += take
            if fill == FRAME_SAMPLES:
                if self._slot is not None:
                    self._slot.push(frame)
                self.frames_pushed += 1
                fill = 0
        self._frame_fill = fill

    def _accumulate_phased(
        self, x: npt.NDArray[np.float32], n_leg: int, tick_at: float | None
    ) -> None:
        """``_accumulate`` with frames completing just before the engine's ticks."""
        chunk_s = n_leg / self.rate_hz
        if tick_at is None or not 0 < chunk_s < _TICK_S:
            self._accumulate(x)  # no schedule (now), or chunks too long to place
            if self.frames_pushed:
                self._is_phase_pending = False  # padding now would queue two frames
            return
        now = self._clock()
        if self._is_phase_pending:
            self._is_phase_pending = False
            self._align(tick_at - now, chunk_s, len(x))
        if self._drop_left:
            k = min(self._drop_left, len(x))
            self._drop_left -= k
            self.phase_drop_samples += k
            x = x[k:]
        pushed = self.frames_pushed
        self._accumulate(x)
        if self.frames_pushed == pushed:
            return
        # a frame completed with this chunk: judge how long it waits for its tick
        self._lead_min = min(self._lead_min, tick_at - now)
        self._lead_frames += 1
        if self._lead_frames < ALIGN_CHECK_FRAMES:
            return
        if self._lead_min > self.margin_s + chunk_s:  # each could have taken one more chunk
            self._drop_left = round(chunk_s * MODEL_RATE_HZ)
        self._lead_min = float("inf")
        self._lead_frames = 0

    def _align(self, to_tick_s: float, chunk_s: float, n_chunk: int) -> None:
        """Before the first frame: place the frame boundary so that a frame completes with the
        last chunk that arrives ``margin_s`` or more before a tick. ``to_tick_s``: from
        this chunk's arrival to the next tick; later chunks are expected every ``chunk_s``."""
        before_s = (to_tick_s - self.margin_s) % _TICK_S  # from now to the latest good moment
        later_chunks = int(before_s // chunk_s)  # chunks still arriving in time after this one
        fill_after = FRAME_SAMPLES - round(later_chunks * chunk_s * MODEL_RATE_HZ)
        want = (fill_after - n_chunk) % FRAME_SAMPLES  # fill this chunk must find
        fill = self._frame_fill
        keep = min(fill, want)  # audio already waiting stays, at the end of the silence
        frame = self._frame
        if keep:
            frame[want - keep : want] = frame[fill - keep : fill].copy()
        frame[: want - keep] = 0.0
        self.phase_pad_samples += want - keep
        self._frame_fill = want
