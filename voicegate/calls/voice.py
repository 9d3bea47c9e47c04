"""Voice activity of both parties of a call.

``CallerVoice`` runs the audio package's VoiceActivityDetector over the caller's audio at 8 or
16 kHz: a leg at 8/16 kHz feeds it as is, a faster leg (48 kHz WebRTC) is decimated by an
integer factor with a boxcar average, which is cheap and good enough for a speech detector
(its nulls fall on the 8 kHz multiples that would alias onto DC). Onsets and stops are reported
in caller-clock ms, as the detector backdates them.

``AgentVoice`` decides, per 20 ms sub-block of the model's 24 kHz output, whether the agent
speaks (energy above a threshold) and when the model has fallen silent (``silence_ms`` of
quiet after speech): the Call's barge-in trigger.

Owns: CallerVoice, AgentVoice. Imports numpy and the VAD factory it is given; no asyncio.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from voicegate.calls.playout import SUBBLOCKS_PER_TICK

__all__ = ["AgentVoice", "CallerVoice", "VadLike"]


class VadLike(Protocol):
    """What the Call needs of ``voicegate.audio.VoiceActivityDetector``."""

    def process(self, pcm: npt.NDArray[np.int16]) -> bool: ...


SUBBLOCK_MS = 20
TICK_SAMPLES = 1920  # one engine tick at 24 kHz (engine.base.FRAME_SAMPLES)


class CallerVoice:
    """Caller speech detection at the leg's rate; ``feed`` returns a transition or None.

    A transition is ``(is_speech, t_ms)``: True with the onset time, False with the stop time.
    """

    __slots__ = (
        "_carry",
        "_carry_n",
        "_factor",
        "_rate_hz",
        "_samples",
        "_vad",
        "_vad_rate_hz",
        "intervals",
        "is_speech",
        "last_stop_ms",
        "onset_ms",
    )

    def __init__(self, leg_rate_hz: int, vad_factory: Callable[[int], VadLike]) -> None:
        if leg_rate_hz in (8000, 16000):
            vad_rate = leg_rate_hz
        elif leg_rate_hz % 8000 == 0:
            vad_rate = 8000
        else:
            raise ValueError(f"caller VAD: leg rate {leg_rate_hz} Hz is not a multiple of 8 kHz")
        self._rate_hz = leg_rate_hz
        self._vad_rate_hz = vad_rate
        self._factor = leg_rate_hz // vad_rate
        self._vad = vad_factory(vad_rate)
        self._carry = np.zeros(self._factor, dtype=np.int32)
        self._carry_n = 0
        self._samples = 0  # at the VAD's rate
        self.is_speech = False
        self.onset_ms = 0
        self.last_stop_ms = 0
        self.intervals: list[tuple[int, int]] = []

    def feed(self, pcm: npt.NDArray[np.int16]) -> tuple[bool, int] | None:
        x = pcm if self._factor == 1 else self._decimate(pcm)
        if len(x) == 0:
            return None
        self._samples += len(x)
        is_speech = bool(self._vad.process(x))
        if is_speech == self.is_speech:
            return None
        now_ms = self._samples * 1000 // self._vad_rate_hz
        self.is_speech = is_speech
        if is_speech:
            self.onset_ms = _time_attr(self._vad, "speech_start_ms", now_ms)
            return True, self.onset_ms
        stop = max(self.onset_ms, _time_attr(self._vad, "speech_stop_ms", now_ms))
        self.intervals.append((self.onset_ms, stop))
        self.last_stop_ms = stop
        return False, stop

    def close(self, now_ms: int) -> None:
        """Close an open speech interval at the call's end."""
        if self.is_speech:
            self.is_speech = False
            self.intervals.append((self.onset_ms, max(self.onset_ms, now_ms)))
            self.last_stop_ms = now_ms

    def _decimate(self, pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        f = self._factor
        if self._carry_n == 0 and len(pcm) % f == 0:  # the usual case: whole 10/20 ms frames
            x: npt.NDArray[np.int16] | npt.NDArray[np.int32] = pcm
        else:
            x = np.concatenate((self._carry[: self._carry_n], pcm.astype(np.int32)))
        n = len(x) // f * f
        rest = len(x) - n
        if rest:
            self._carry[:rest] = x[n:]
        self._carry_n = rest
        sums = np.add.reduce(x[:n].reshape(-1, f), axis=1, dtype=np.int32)
        out: npt.NDArray[np.int16] = (sums // f).astype(np.int16)
        return out


def _time_attr(vad: object, name: str, default: int) -> int:
    value = getattr(vad, name, None)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    return default


class AgentVoice:
    """Agent speech per 20 ms sub-block of model output, and the model-silent transition."""

    __slots__ = (
        "_energy",
        "_silence_subblocks",
        "_squares",
        "_threshold",
        "is_speaking",
        "quiet_run",
        "started_back_ms",
    )

    def __init__(self, *, speech_dbfs: float = -42.0, silence_ms: int = 80) -> None:
        # mean square of float samples in [-1, 1] for a full-scale reference of 1.0
        self._threshold = math.pow(10.0, speech_dbfs / 10.0)
        self._silence_subblocks = max(1, silence_ms // SUBBLOCK_MS)
        self._energy = np.zeros(SUBBLOCKS_PER_TICK, dtype=np.float32)
        self._squares = np.zeros(
            (SUBBLOCKS_PER_TICK, TICK_SAMPLES // SUBBLOCKS_PER_TICK), np.float32
        )
        self.is_speaking = False
        self.quiet_run = 0  # consecutive quiet sub-blocks
        self.started_back_ms = -1  # last tick: how long before its end speech (re)started

    def analyse_tick(self, pcm_24k: npt.NDArray[np.float32]) -> tuple[int, int]:
        """Speech bits of the tick's sub-blocks, and how long before the tick's end the model
        fell silent (ms; -1 when it did not fall silent in this tick)."""
        blocks = pcm_24k.reshape(SUBBLOCKS_PER_TICK, -1)
        np.multiply(blocks, blocks, out=self._squares)
        np.add.reduce(self._squares, axis=1, out=self._energy)
        thresh = self._threshold * blocks.shape[1]
        bits = 0
        silent_back_ms = -1
        self.started_back_ms = -1
        for s in range(SUBBLOCKS_PER_TICK):
            if self._energy[s] >= thresh:
                bits |= 1 << s
                self.quiet_run = 0
                if not self.is_speaking:
                    self.is_speaking = True
                    self.started_back_ms = (SUBBLOCKS_PER_TICK - s) * SUBBLOCK_MS
            else:
                self.quiet_run += 1
                if self.is_speaking and self.quiet_run >= self._silence_subblocks:
                    self.is_speaking = False
                    silent_back_ms = (self.quiet_run + SUBBLOCKS_PER_TICK - 1 - s) * SUBBLOCK_MS
        return bits, silent_back_ms
