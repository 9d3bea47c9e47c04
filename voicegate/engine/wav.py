"""WAV files for offline use (``voicegate call``, voice clips): read any PCM/float WAV, write
16-bit PCM, resample whole clips to 24 kHz, normalise loudness (ITU-R BS.1770, pyloudnorm).

Not for the live path (calls resample per frame with ``voicegate.audio``).

Owns: read_wav, write_wav, resample_clip, normalize_loudness. Imports numpy and
voicegate.audio's StreamingResampler (scipy, when installed, for ratios it does not serve),
pyloudnorm (and so scipy) inside ``normalize_loudness`` only.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voicegate.audio import StreamingResampler
from voicegate.engine.base import MODEL_RATE_HZ
from voicegate.errors import AudioError

__all__ = ["normalize_loudness", "read_wav", "resample_clip", "write_wav"]

log = logging.getLogger("voicegate.engine")

_PCM = 1
_FLOAT = 3
_EXTENSIBLE = 0xFFFE
TARGET_LOUDNESS_LUFS = -24.0  # the public generator's voice-clip level
BS1770_BLOCK_S = 0.4  # gating block of ITU-R BS.1770-4


def read_wav(path: Path) -> tuple[npt.NDArray[np.float32], int]:
    """First channel of a WAV file as float32 in [-1, 1], and its rate (PCM 8/16/24/32, float)."""
    data = Path(path).read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioError(f"{path}: expected a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None
    payload: bytes | None = None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, offset)
        body = data[offset + 8 : offset + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise AudioError(f"{path}: fmt chunk of {len(body)} bytes, expected >= 16")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            payload = body
        offset += 8 + size + (size & 1)
    if fmt is None or payload is None:
        raise AudioError(f"{path}: WAV without fmt or data chunk")
    tag, channels, rate, bits = fmt
    width = bits // 8
    if channels < 1 or width < 1 or rate < 1:
        raise AudioError(f"{path}: bad WAV format (channels={channels}, bits={bits}, rate={rate})")
    n = len(payload) // (width * channels)
    raw = payload[: n * width * channels]
    if tag == _FLOAT and bits in (32, 64):
        samples = np.frombuffer(raw, dtype=f"<f{width}").astype(np.float32)
    elif tag == _PCM and bits == 8:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif tag == _PCM and bits == 16:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif tag == _PCM and bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        samples = v.astype(np.float32) / float(1 << 23)
    elif tag == _PCM and bits == 32:
        samples = np.frombuffer(raw, dtype="<i4").astype(np.float32) / float(1 << 31)
    else:
        raise AudioError(f"{path}: unsupported WAV encoding (format {tag}, {bits} bits)")
    return np.ascontiguousarray(samples.reshape(n, channels)[:, 0]), rate


def write_wav(path: Path, pcm: npt.NDArray[np.float32], rate_hz: int) -> None:
    """Write mono 16-bit PCM."""
    ints = (np.clip(pcm, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(ints),
        b"WAVE",
        b"fmt ",
        16,
        _PCM,
        1,
        rate_hz,
        rate_hz * 2,
        2,
        16,
        b"data",
        len(ints),
    )
    Path(path).write_bytes(header + ints)


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
