"""CallerVoice (decimation, transitions) and AgentVoice (speech bits, model-silent point)."""

from __future__ import annotations

import numpy as np
import pytest
from utils import EnergyVad, tone

from voicegate.calls.voice import AgentVoice, CallerVoice


class Recorder:
    def __init__(self, rate_hz: int) -> None:
        self.rate_hz = rate_hz
        self.chunks: list[np.ndarray] = []

    def process(self, pcm: np.ndarray) -> bool:
        self.chunks.append(pcm.copy())
        return False


def test_48k_is_decimated_to_8k_identically_whatever_the_chunking() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(-20000, 20000, 48_000, dtype=np.int16)
    whole = CallerVoice(48_000, Recorder)
    whole.feed(x)
    pieces = CallerVoice(48_000, Recorder)
    pos = 0
    for n in (7, 960, 1, 500, 13, 2000):
        pieces.feed(x[pos : pos + n])
        pos += n
    pieces.feed(x[pos:])
    a = np.concatenate(whole._vad.chunks)  # type: ignore[attr-defined]
    b = np.concatenate(pieces._vad.chunks)  # type: ignore[attr-defined]
    expected = (x.astype(np.int32).reshape(-1, 6).sum(axis=1) // 6).astype(np.int16)
    assert np.array_equal(a, expected) and np.array_equal(b, expected)
    assert whole._vad.rate_hz == 8000  # type: ignore[attr-defined]


@pytest.mark.parametrize(("leg", "vad"), [(8000, 8000), (16000, 16000), (24000, 8000)])
def test_vad_rate_for_each_leg_rate(leg: int, vad: int) -> None:
    assert CallerVoice(leg, Recorder)._vad.rate_hz == vad  # type: ignore[attr-defined]


def test_unsupported_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="11025"):
        CallerVoice(11025, Recorder)


def test_caller_transitions_and_intervals() -> None:
    cv = CallerVoice(8000, lambda r: EnergyVad(r, hangover_ms=100))
    x = np.zeros(16000, dtype=np.int16)
    x[4000:8000] = tone(4000)
    changes = [c for k in range(100) if (c := cv.feed(x[k * 160 : (k + 1) * 160])) is not None]
    assert changes == [(True, 500), (False, 1000)]
    assert cv.intervals == [(500, 1000)] and not cv.is_speech
    cv.feed(tone(160))
    cv.close(2100)
    assert cv.intervals[-1] == (2000, 2100)


def test_agent_voice_bits_and_silence_point() -> None:
    av = AgentVoice(speech_dbfs=-40.0, silence_ms=80)
    loud = np.full(1920, 0.1, dtype=np.float32)  # -20 dBFS
    quiet = np.full(1920, 0.001, dtype=np.float32)  # -60 dBFS
    assert av.analyse_tick(loud) == (0b1111, -1) and av.is_speaking
    half = loud.copy()
    half[960:] = 0.001
    assert av.analyse_tick(half) == (0b0011, -1)  # 40 ms quiet: not yet silent
    bits, back = av.analyse_tick(quiet)
    # the 80 ms of quiet completed at sub-block 1 of this tick; it began 40 ms before the tick
    assert bits == 0 and back == 120 and not av.is_speaking
    assert av.analyse_tick(quiet) == (0, -1)
