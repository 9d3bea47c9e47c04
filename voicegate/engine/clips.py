"""Whole clips for offline use (``voicegate call``, voice clips): resample to 24 kHz, normalise
loudness (ITU-R BS.1770, pyloudnorm). Files are read and written with ``voicegate.audio.wav``.

Not for the live path (calls resample per frame with ``voicegate.audio``).

Owns: resample_clip, normalize_loudness. Imports numpy and voicegate.audio's StreamingResampler
(scipy, when installed, for ratios it does not serve), pyloudnorm (and so scipy) inside
``normalize_loudness`` only.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from voicegate.audio import StreamingResampler
from voicegate.engine.base import MODEL_RATE_HZ
from voicegate.errors import AudioError

__all__ = ["normalize_loudness", "resample_clip"]

log = logging.getLogger("voicegate.engine")

TARGET_LOUDNESS_LUFS = -24.0  # the public generator's voice-clip level
BS1770_BLOCK_S = 0.4  # gating block of ITU-R BS.1770-4


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
    pcm: npt.NDArray[np.float32],
    target_lufs: float = TARGET_LOUDNESS_LUFS,
    rate_hz: int = MODEL_RATE_HZ,
) -> npt.NDArray[np.float32]:
    """Scale a clip to ``target_lufs`` integrated loudness (ITU-R BS.1770-4: K-weighting,
    400 ms blocks, absolute and relative gates), measured by pyloudnorm as the public
    PersonaPlex generator measures its voice clips (-24 LUFS).

    A clip shorter than one 400 ms block is measured as one block of its own length.
    Silence (every block below the -70 LUFS gate) is returned unchanged. Not clipped: the
    generator hands the scaled clip to Mimi as it is.
    """
    import pyloudnorm  # scipy underneath: imported when a clip is prepared, not at start-up

    samples = np.asarray(pcm, dtype=np.float64)
    if samples.ndim != 1:
        raise AudioError(f"loudness: expected a mono clip, got shape {samples.shape}")
    if len(samples) < 2:
        return samples.astype(np.float32)
    block_s = min(BS1770_BLOCK_S, len(samples) / rate_hz)
    meter = pyloudnorm.Meter(rate_hz, block_size=block_s)
    loudness = float(meter.integrated_loudness(samples))
    if not np.isfinite(loudness):
        return samples.astype(np.float32)
    gain = 10.0 ** ((target_lufs - loudness) / 20.0)
    scaled: npt.NDArray[np.float32] = (samples * gain).astype(np.float32)
    return scaled
