"""Check a WAV voice clip without decoding libraries: RIFF chunks, format, length, samples.

The engine reads a clip, keeps its first channel, resamples to 24 kHz and Mimi-encodes it; here
we only make sure that will work and that the clip is 2-30 s long.
Owns: ``inspect_wav``. Pure (reads one file), imports nothing of voicegate.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MAX_CLIP_S", "MIN_CLIP_S", "WavError", "WavInfo", "inspect_wav"]

MIN_CLIP_S = 2.0
MAX_CLIP_S = 30.0
MAX_CHANNELS = 8
MIN_RATE_HZ = 8_000
MAX_RATE_HZ = 192_000
MAX_CLIP_BYTES = 64 * 1024 * 1024

_PCM = 0x0001
_FLOAT = 0x0003
_EXTENSIBLE = 0xFFFE


class WavError(ValueError):
    """The clip is not a WAV the engine can use; the message says why."""


@dataclass(frozen=True, slots=True)
class WavInfo:
    """What a clip is: rate, channels, sample format and length; ``peak`` of the first channel."""

    rate_hz: int
    channels: int
    bits: int
    is_float: bool
    frames: int
    peak: float

    @property
    def duration_s(self) -> float:
        return self.frames / self.rate_hz


def _chunks(raw: bytes) -> dict[bytes, bytes]:
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise WavError("not a WAV file (no RIFF/WAVE header)")
    out: dict[bytes, bytes] = {}
    pos = 12
    while pos + 8 <= len(raw):
        chunk_id = raw[pos : pos + 4]
        (size,) = struct.unpack_from("<I", raw, pos + 4)
        body = raw[pos + 8 : pos + 8 + size]
        if chunk_id == b"data" and len(body) < size:
            raise WavError(f"data chunk truncated: {len(body)} of {size} bytes present")
        out.setdefault(chunk_id, body)
        pos += 8 + size + (size & 1)
    return out


def _dtype(fmt_tag: int, bits: int) -> np.dtype[np.generic]:
    if fmt_tag == _PCM and bits == 8:
        return np.dtype(np.uint8)
    if fmt_tag == _PCM and bits in (16, 32):
        return np.dtype(f"<i{bits // 8}")
    if fmt_tag == _FLOAT and bits in (32, 64):
        return np.dtype(f"<f{bits // 8}")
    kind = "float" if fmt_tag == _FLOAT else "PCM"
    raise WavError(f"unsupported sample format: {bits}-bit {kind} (use 16-bit PCM)")


def inspect_wav(path: Path) -> WavInfo:
    """Read and check ``path``; raises WavError with a reason a person can act on."""
    try:
        size = path.stat().st_size
        if size > MAX_CLIP_BYTES:
            raise WavError(f"file is {size} bytes; a 30 s clip needs far less")
        raw = path.read_bytes()
    except OSError as exc:
        raise WavError(f"cannot read: {exc.strerror or exc}") from exc
    chunks = _chunks(raw)
    fmt = chunks.get(b"fmt ")
    if fmt is None or len(fmt) < 16:
        raise WavError("no 'fmt ' chunk")
    fmt_tag, channels, rate_hz, _, block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    if fmt_tag == _EXTENSIBLE and len(fmt) >= 26:
        (fmt_tag,) = struct.unpack_from("<H", fmt, 24)  # first two bytes of the sub-format GUID
    if channels < 1 or channels > MAX_CHANNELS:
        raise WavError(f"{channels} channels; expected 1 to {MAX_CHANNELS} (the first is used)")
    if not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ:
        raise WavError(f"sample rate {rate_hz} Hz; expected {MIN_RATE_HZ} to {MAX_RATE_HZ} Hz")
    is_24 = fmt_tag == _PCM and bits == 24
    dtype = np.dtype("<i4") if is_24 else _dtype(fmt_tag, bits)
    sample_bytes = 3 if is_24 else dtype.itemsize
    if block_align != channels * sample_bytes:
        raise WavError(f"block align {block_align} does not match {channels} x {bits}-bit samples")
    data = chunks.get(b"data")
    if data is None:
        raise WavError("no 'data' chunk")
    frames = len(data) // block_align
    body = np.frombuffer(data[: frames * block_align], dtype=np.uint8)
    if is_24:
        # first channel only: three little-endian bytes, sign-extended through the top byte
        triples = body.reshape(frames, block_align)[:, :3].astype(np.int32)
        first = ((triples[:, 0] << 8 | triples[:, 1] << 16 | triples[:, 2] << 24) >> 8).astype(
            np.float64
        )
    else:
        samples = body.view(dtype).reshape(frames, channels)
        first = samples[:, 0].astype(np.float64)
    if dtype.kind == "u":
        first = (first - 128.0) / 128.0
    elif dtype.kind == "i":
        first = first / float(2 ** (bits - 1))
    elif not np.all(np.isfinite(first)):
        raise WavError("float samples include NaN or infinity")
    peak = float(np.max(np.abs(first))) if frames else 0.0
    info = WavInfo(rate_hz, channels, bits, dtype.kind == "f", frames, peak)
    if not MIN_CLIP_S <= info.duration_s <= MAX_CLIP_S:
        raise WavError(
            f"clip is {info.duration_s:.2f} s long; a voice clip must be {MIN_CLIP_S:g} to "
            f"{MAX_CLIP_S:g} s"
        )
    return info
