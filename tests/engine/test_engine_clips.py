"""Voice-clip loudness: ITU-R BS.1770-4 integrated loudness, checked on signals whose loudness
the standard itself states.

References:
- ITU-R BS.1770-4, Annex 1: "If a 0 dB FS, 1 kHz sine wave is applied to the left, centre, or
  right channel input, the indicated loudness will equal -3.01 LKFS." So a mono 997 Hz sine of
  peak level L dBFS reads L - 3.01 LUFS (-20 dBFS -> -23.01 LUFS).
- EBU Tech 3341 (2016), test case 1: a stereo 1 kHz sine at -23 dBFS reads -23.0 LUFS,
  within +-0.1 LU (the meter tolerance these tests use).
- BS.1770-4 gating: 400 ms blocks, blocks below -70 LUFS (absolute gate) are not counted, so
  silence added to a clip does not lower its loudness (an RMS level does drop by 3 dB when the
  clip's length doubles with silence).
"""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest

from voicegate.engine.clips import TARGET_LOUDNESS_LUFS, normalize_loudness
from voicegate.errors import AudioError

RATE = 24_000
TOLERANCE_LU = 0.1  # EBU Tech 3341's meter tolerance


def sine(peak_dbfs: float, seconds: float, hz: float = 997.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (10 ** (peak_dbfs / 20) * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def peak_dbfs(x: np.ndarray) -> float:
    return float(20 * np.log10(np.max(np.abs(x))))


def test_meter_reads_the_standards_reference_signals() -> None:
    meter = pyloudnorm.Meter(RATE)
    mono = sine(-20.0, 5.0).astype(np.float64)
    assert meter.integrated_loudness(mono) == pytest.approx(-23.01, abs=TOLERANCE_LU)
    stereo = np.stack([sine(-23.0, 20.0)] * 2, axis=1).astype(np.float64)
    assert meter.integrated_loudness(stereo) == pytest.approx(-23.0, abs=TOLERANCE_LU)


@pytest.mark.parametrize("level_dbfs", [-40.0, -20.0, -6.0, -1.0])
def test_a_sine_comes_out_at_minus_24_lufs(level_dbfs: float) -> None:
    assert TARGET_LOUDNESS_LUFS == -24.0
    out = normalize_loudness(sine(level_dbfs, 3.0))
    assert out.dtype == np.float32
    # -24 LUFS mono at 1 kHz is a sine of peak -24 + 3.01 = -20.99 dBFS (BS.1770-4 Annex 1)
    assert peak_dbfs(out) == pytest.approx(-20.99, abs=TOLERANCE_LU)


def test_silence_is_gated_out() -> None:
    tone = sine(-30.0, 4.0)
    with_gap = np.concatenate([tone, np.zeros(4 * RATE, np.float32)])
    out = normalize_loudness(with_gap)
    # loudness of the tone only: about the gain without the silence (the 400 ms blocks that
    # straddle the edge are half silent and pass the gate: 0.2 dB here)
    assert peak_dbfs(out[: len(tone)]) == pytest.approx(-20.99, abs=0.3)
    assert np.all(out[len(tone) + RATE // 2 :] == 0.0)
    # what RMS scaling to -24 dBFS did: 3 dB louder, because the silence halves the power
    rms_gain_db = -24.0 - 10 * np.log10(np.mean(np.square(with_gap, dtype=np.float64)))
    assert peak_dbfs(tone) + rms_gain_db == pytest.approx(-17.99, abs=TOLERANCE_LU)


def test_k_weighting_counts_low_frequencies_less() -> None:
    # the BS.1770 pre-filter's high-pass (RLB) attenuates 40 Hz: to read -24 LUFS it must be
    # louder than a 997 Hz sine, where the weighting is ~0 dB
    low = normalize_loudness(sine(-20.0, 3.0, hz=40.0))
    mid = normalize_loudness(sine(-20.0, 3.0))
    assert peak_dbfs(low) > peak_dbfs(mid) + 0.5


def test_silence_short_clips_and_bad_shapes() -> None:
    zeros = np.zeros(RATE, np.float32)
    assert np.array_equal(normalize_loudness(zeros), zeros)
    short = sine(-30.0, 0.2)  # shorter than one 400 ms block: one block of its own length
    assert peak_dbfs(normalize_loudness(short)) == pytest.approx(-20.99, abs=0.2)
    with pytest.raises(AudioError, match="mono"):
        normalize_loudness(np.zeros((10, 2), np.float32))
