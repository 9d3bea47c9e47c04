"""WebRTC media: received frames to mono int16 at 48 kHz, and the agent's outbound audio track.

aiortc decodes Opus to 48 kHz stereo ``s16`` frames of 960 samples; the Call takes the caller's
audio at the leg's rate (48 kHz mono) and resamples it to the engine's 24 kHz itself, with state
across frames. The outbound ``AgentAudioTrack`` pulls 960 samples (20 ms) from the Call per
frame on a monotonic 20 ms clock with advancing ``pts``; aiortc's Opus encoder takes it from there.

Owns: ``to_mono_int16``, ``AgentAudioTrack``. Imports av, aiortc and numpy; knows the Call only
through ``pull_agent_audio``.
"""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

__all__ = [
    "FRAME_MS",
    "FRAME_SAMPLES",
    "RATE_HZ",
    "AgentAudioTrack",
    "MediaCounters",
    "to_mono_int16",
]

RATE_HZ = 48_000
FRAME_MS = 20
FRAME_SAMPLES = RATE_HZ * FRAME_MS // 1000  # 960
_TIME_BASE = fractions.Fraction(1, RATE_HZ)
# a loop stall longer than this is not caught up with a burst of frames: the clock restarts
_MAX_LAG_S = 0.2


@dataclass(slots=True)
class MediaCounters:
    """Per-session media counters (read by the leg's metrics and the benchmark)."""

    frames_in: int = 0
    frames_out: int = 0
    resampled_in: int = 0  # received frames that were not 48 kHz s16 and went through av
    clock_resets: int = 0  # outbound clock restarted after a stall longer than _MAX_LAG_S


class _Converter:
    """Turns any received audio frame into mono int16 at 48 kHz (fast path: s16 packed 48 kHz)."""

    def __init__(self, counters: MediaCounters) -> None:
        self._counters = counters
        self._resampler: av.AudioResampler | None = None

    def __call__(self, frame: av.AudioFrame) -> npt.NDArray[np.int16]:
        channels = len(frame.layout.channels)
        if frame.format.name == "s16" and frame.sample_rate == RATE_HZ:
            samples: npt.NDArray[np.int16] = (
                frame.to_ndarray().reshape(-1).astype(np.int16, copy=False)
            )
            if channels == 1:
                return samples
            return to_mono_int16(samples, channels)
        self._counters.resampled_in += 1
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE_HZ)
        parts = [
            f.to_ndarray().reshape(-1).astype(np.int16, copy=False)
            for f in self._resampler.resample(frame)
        ]
        if not parts:
            return np.zeros(0, dtype=np.int16)
        out: npt.NDArray[np.int16] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return out


def to_mono_int16(interleaved: npt.NDArray[np.int16], channels: int) -> npt.NDArray[np.int16]:
    """Average interleaved int16 channels into one (rounding toward minus infinity)."""
    if channels == 1:
        return interleaved
    if channels == 2:  # the usual case (Opus decodes to stereo): 3-4x faster than a reduce
        pair: npt.NDArray[np.int16] = (
            (interleaved[0::2].astype(np.int32) + interleaved[1::2]) >> 1
        ).astype(np.int16)
        return pair
    frames = interleaved.reshape(-1, channels).astype(np.int32)
    mono: npt.NDArray[np.int16] = (frames.sum(axis=1) // channels).astype(np.int16)
    return mono


class AgentAudioTrack(MediaStreamTrack):
    """The agent's voice to the browser: 20 ms mono 48 kHz frames pulled from the Call.

    ``pull(n)`` returns exactly ``n`` int16 samples (``Call.pull_agent_audio``); it is called
    once per 20 ms of ``clock`` (the loop's monotonic time), whatever the encoder's pace.
    """

    kind = "audio"

    def __init__(
        self,
        pull: Callable[[int], npt.NDArray[np.int16]],
        counters: MediaCounters,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        self._pull = pull
        self._counters = counters
        self._clock = clock
        self._start = 0.0
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        clock = self._clock or asyncio.get_running_loop().time
        now = clock()
        if self._pts == 0 and self._start == 0.0:
            self._start = now
        else:
            due = self._start + (self._pts + FRAME_SAMPLES) / RATE_HZ
            wait = due - now
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -_MAX_LAG_S:
                # the loop stalled: play on from now rather than burst the backlog
                self._counters.clock_resets += 1
                self._start = now - (self._pts + FRAME_SAMPLES) / RATE_HZ
            self._pts += FRAME_SAMPLES
        if self.readyState != "live":
            raise MediaStreamError
        pcm = self._pull(FRAME_SAMPLES)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE_HZ
        frame.pts = self._pts
        frame.time_base = _TIME_BASE
        self._counters.frames_out += 1
        return frame
