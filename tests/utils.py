"""Shared test helpers (import as ``from utils import ...``: pytest puts tests/ on sys.path).

- ``LoopbackLeg``: an in-memory LegTransport that records clears and hang-ups.
- ``RecordingEvents``: an EventSink that keeps every emitted event.
- ``EnergyVad``: a deterministic voice detector with the audio VAD's interface (tests only).
- ``run_call()``: drive a Call on a simulated 20 ms clock, ticking an engine every 80 ms, and
  collect what the leg pulled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from voicegate.calls.base import EndReason

__all__ = ["EnergyVad", "LoopbackLeg", "RecordingEvents", "frozen_clock", "run_call", "tone"]


def frozen_clock() -> float:
    """A clock that never moves: with ``run_call`` every tick is pulled the moment it arrives."""
    return 0.0


class LoopbackLeg:
    """A LegTransport double: its clock is what it pulled; it records clears and hang-ups."""

    def __init__(self, rate_hz: int = 8000, queued_ms: int = 0) -> None:
        self._rate_hz = rate_hz
        self.queued_ms = queued_ms  # far-side audio the leg would report as queued
        self.clears: list[int] = []  # pulled samples at each clear
        self.hangups: list[EndReason] = []
        self.pulled = 0

    @property
    def rate_hz(self) -> int:
        return self._rate_hz

    def clear_playout(self) -> None:
        self.clears.append(self.pulled)

    def request_hangup(self, reason: EndReason) -> None:
        self.hangups.append(reason)


class RecordingEvents:
    """EventSink double: keeps events in order."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event: Any) -> None:
        self.events.append(event)

    def of_type(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]

    def types(self) -> list[str]:
        return [type(e).type for e in self.events]


class EnergyVad:
    """Speech = a chunk's peak above ``threshold``; speech ends after ``hangover_ms`` of quiet.

    Exposes ``speech_start_ms`` / ``speech_stop_ms`` in stream ms, as the audio VAD does.
    """

    def __init__(self, rate_hz: int = 8000, threshold: int = 1000, hangover_ms: int = 100) -> None:
        self.rate_hz = rate_hz
        self.threshold = threshold
        self.hangover_samples = rate_hz * hangover_ms // 1000
        self.samples = 0
        self.is_speech = False
        self.speech_start_ms = 0
        self.speech_stop_ms = 0
        self._last_loud_end = 0

    def process(self, pcm: npt.NDArray[np.int16]) -> bool:
        start = self.samples
        self.samples += len(pcm)
        if len(pcm) and int(np.abs(pcm.astype(np.int32)).max()) >= self.threshold:
            if not self.is_speech:
                loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) >= self.threshold)
                self.speech_start_ms = (start + int(loud[0])) * 1000 // self.rate_hz
                self.is_speech = True
            self._last_loud_end = self.samples
        elif self.is_speech and self.samples - self._last_loud_end >= self.hangover_samples:
            self.is_speech = False
            self.speech_stop_ms = self._last_loud_end * 1000 // self.rate_hz
        return self.is_speech


def tone(n: int, rate_hz: int = 8000, hz: float = 440.0, amp: float = 0.3) -> npt.NDArray[np.int16]:
    """A sine burst (int16)."""
    t = np.arange(n) / rate_hz
    return (np.sin(2 * np.pi * hz * t) * amp * 32767).astype(np.int16)


def run_call(
    call: Any,
    caller_pcm: npt.NDArray[np.int16],
    *,
    tick: Callable[[], object] | None,
    leg: LoopbackLeg | None = None,
    frame_ms: int = 20,
    tick_every: int = 4,
    extra_frames: int = 0,
    on_frame: Callable[[int], None] | None = None,
) -> npt.NDArray[np.int16]:
    """Feed ``caller_pcm`` in ``frame_ms`` chunks on a simulated clock and return what was pulled.

    Each step: feed one chunk, tick the engine every ``tick_every`` steps, pull one chunk.
    ``extra_frames`` steps of silence follow. Stops early when the call ends.
    """
    rate = call.rate_hz
    n = rate * frame_ms // 1000
    steps = (len(caller_pcm) + n - 1) // n + extra_frames
    padded = np.zeros(steps * n, dtype=np.int16)
    padded[: len(caller_pcm)] = caller_pcm
    out = []
    for k in range(steps):
        if not call.is_active:
            break
        if on_frame is not None:
            on_frame(k)
        call.feed_caller_audio(padded[k * n : (k + 1) * n])
        if tick is not None and k % tick_every == tick_every - 1:
            tick()
        out.append(call.pull_agent_audio(n).copy())
        if leg is not None:
            leg.pulled += n
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int16)
