"""Whole clips for offline use (``voicegate call``, voice clips): resample to 24 kHz, normalise
loudness. Files are read and written with ``voicegate.audio.wav``.

Not for the live path (calls resample per frame with ``voicegate.audio``).

Owns: resample_clip, normalize_loudness. Imports numpy and voicegate.audio's StreamingResampler
(scipy, when installed, for ratios it does not serve).
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from voicegate.audio import StreamingResampler
from voicegate.errors import AudioError

__all__ = ["normalize_loudness", "resample_clip"]

log = logging.getLogger("voicegate.engine")

TARGET_LOUDNESS_DB = -24.0


def resample_clip(
    pcm: npt.NDArray[np.float32], rate_in_hz: int, rate_out_hz: int
) -> npt.NDArray[np.float32]:
    """Resample a whole clip; uses voicegate.audio's resampler when present, else scipy."""
    if rate_in_hz == rate_out_hz:
        return pcm.astype(np.float32, copy=False)
    try:
        resampler: StreamingResampler | None = StreamingResampler(rate_in_hz, rate_out_hz)
    except AudioError:  # a ratio it does not serve (e.g. 44.1 kHz): scipy below
        resampler = None
    if resampler is not None:
        # flush the filter's delay with zeros, then drop it so the clip stays aligned
        delay = int(resampler.delay_samples)
        tail = np.zeros(int(np.ceil(delay * rate_in_hz / rate_out_hz)) + 8, dtype=np.float32)
        out = np.concatenate([resampler.process(pcm), resampler.process(tail)])
        want = int(round(len(pcm) * rate_out_hz / rate_in_hz))
        return np.ascontiguousarray(out[delay : delay + want], dtype=np.float32)
    try:
        from math import gcd

        from scipy.signal import resample_poly
    except ImportError:  # last resort: linear interpolation (audible aliasing; offline only)
        log.warning("no resampler available (voicegate.audio, scipy): using linear interpolation")
        want = int(round(len(pcm) * rate_out_hz / rate_in_hz))
        x = np.arange(want) * (rate_in_hz / rate_out_hz)
        linear: npt.NDArray[np.float32] = np.interp(x, np.arange(len(pcm)), pcm).astype(np.float32)
        return linear
    g = gcd(rate_in_hz, rate_out_hz)
    poly: npt.NDArray[np.float32] = np.asarray(
        resample_poly(pcm, rate_out_hz // g, rate_in_hz // g), dtype=np.float32
    )
    return poly


def normalize_loudness(
    pcm: npt.NDArray[np.float32], target_db: float = TARGET_LOUDNESS_DB
) -> npt.NDArray[np.float32]:
    """Scale a clip to ``target_db`` RMS (dBFS), a stand-in for the reference's -24 LUFS
    (no K-weighting or gating); silence is returned unchanged."""
    rms = float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64)))) if len(pcm) else 0.0
    if rms < 1e-6:
        return pcm.astype(np.float32, copy=True)
    gain = 10.0 ** (target_db / 20.0) / rms
    scaled: npt.NDArray[np.float32] = np.clip(pcm * gain, -1.0, 1.0).astype(np.float32)
    return scaled
