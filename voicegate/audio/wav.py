"""The one WAV reader (and a 16-bit writer): RIFF chunks, format checks, the first channel.

Usage::

    info = inspect_wav(path)                 # format, length and peak; raises WavError
    pcm_f32, rate_hz = read_wav(path)        # first channel in [-1, 1], any PCM/float WAV
    pcm_s16, rate_hz = read_wav_int16(path)  # mono 16-bit PCM only, samples as they are
    write_wav(path, pcm_f32, rate_hz)        # mono 16-bit PCM

Voice clips (persona validation and the engine), offline calls and the bundled caller
recordings all read through ``_parse`` here, so they agree about what a file holds.
Accepted: PCM 8/16/24/32-bit and float 32/64-bit (WAVE_FORMAT_EXTENSIBLE too), 1-8 channels,
8-192 kHz. Every problem is a ``WavError`` (an ``AudioError`` and a ``ValueError``).
Owns: parsing and writing WAV files. Reads or writes one file; imports numpy and
``voicegate.errors`` only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voicegate.errors import WavError

__all__ = ["WavInfo", "inspect_wav", "read_wav", "read_wav_int16", "write_wav"]

MAX_CHANNELS = 8
MIN_RATE_HZ = 8_000
MAX_RATE_HZ = 192_000

_PCM = 0x0001
_FLOAT = 0x0003
_EXTENSIBLE = 0xFFFE


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


@dataclass(frozen=True, slots=True)
class _Wav:
    """A checked header and its sample bytes (whole frames only)."""

    fmt_tag: int
    channels: int
    rate_hz: int
    bits: int
    block_align: int
    dtype: np.dtype[np.generic]  # of one stored sample; <i4 stands in for packed 24-bit
    data: bytes

    @property
    def frames(self) -> int:
        return len(self.data) // self.block_align

    @property
    def is_24_bit(self) -> bool:
        return self.fmt_tag == _PCM and self.bits == 24


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
    if fmt_tag == _PCM and bits == 24:
        return np.dtype("<i4")
    if fmt_tag == _PCM and bits in (16, 32):
        return np.dtype(f"<i{bits // 8}")
    if fmt_tag == _FLOAT and bits in (32, 64):
        return np.dtype(f"<f{bits // 8}")
    kind = "float" if fmt_tag == _FLOAT else "PCM"
    raise WavError(f"unsupported sample format: {bits}-bit {kind} (use 16-bit PCM)")


def _parse(raw: bytes) -> _Wav:
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
    dtype = _dtype(fmt_tag, bits)
    sample_bytes = 3 if fmt_tag == _PCM and bits == 24 else dtype.itemsize
    if block_align != channels * sample_bytes:
        raise WavError(f"block align {block_align} does not match {channels} x {bits}-bit samples")
    data = chunks.get(b"data")
    if data is None:
        raise WavError("no 'data' chunk")
    frames = len(data) // block_align
    return _Wav(fmt_tag, channels, rate_hz, bits, block_align, dtype, data[: frames * block_align])


def _first_channel(wav: _Wav) -> npt.NDArray[np.float64]:
    """The first channel as float64 in [-1, 1]; float files must be finite."""
    body = np.frombuffer(wav.data, dtype=np.uint8)
    if wav.is_24_bit:
        # three little-endian bytes, sign-extended through the top byte
        triples = body.reshape(wav.frames, wav.block_align)[:, :3].astype(np.int32)
        first = ((triples[:, 0] << 8 | triples[:, 1] << 16 | triples[:, 2] << 24) >> 8).astype(
            np.float64
        )
    else:
        first = body.view(wav.dtype).reshape(wav.frames, wav.channels)[:, 0].astype(np.float64)
    if wav.dtype.kind == "u":
        return (first - 128.0) / 128.0
    if wav.dtype.kind == "i":
        scaled: npt.NDArray[np.float64] = first / float(2 ** (wav.bits - 1))
        return scaled
    if not np.all(np.isfinite(first)):
        raise WavError("float samples include NaN or infinity")
    return first


def _read(path: Path, max_bytes: int | None = None) -> _Wav:
    try:
        if max_bytes is not None and (size := path.stat().st_size) > max_bytes:
            raise WavError(f"file is {size} bytes; expected at most {max_bytes}")
        raw = path.read_bytes()
    except OSError as exc:
        raise WavError(f"cannot read: {exc.strerror or exc}") from exc
    return _parse(raw)


def inspect_wav(path: Path, *, max_bytes: int | None = None) -> WavInfo:
    """Read and check ``path`` (refusing files over ``max_bytes``); raises WavError with a
    reason a person can act on, without the path (the caller names the file its own way)."""
    wav = _read(Path(path), max_bytes)
    first = _first_channel(wav)
    peak = float(np.max(np.abs(first))) if wav.frames else 0.0
    return WavInfo(wav.rate_hz, wav.channels, wav.bits, wav.dtype.kind == "f", wav.frames, peak)


def read_wav(path: Path | str) -> tuple[npt.NDArray[np.float32], int]:
    """First channel of a WAV file as float32 in [-1, 1], and its rate; WavError names the path."""
    try:
        wav = _read(Path(path))
        return np.ascontiguousarray(_first_channel(wav), dtype=np.float32), wav.rate_hz
    except WavError as exc:
        raise WavError(f"{path}: {exc}") from exc


def read_wav_int16(path: Path | str) -> tuple[npt.NDArray[np.int16], int]:
    """Read a mono 16-bit PCM WAV: ``(samples, rate_hz)``; WavError names the path."""
    try:
        wav = _read(Path(path))
    except WavError as exc:
        raise WavError(f"{path}: cannot read WAV: {exc}") from exc
    if wav.channels != 1 or wav.fmt_tag != _PCM or wav.bits != 16:
        raise WavError(
            f"{path}: expected mono 16-bit PCM, got {wav.channels} channels of {wav.bits} bits"
        )
    return np.frombuffer(wav.data, dtype="<i2").astype(np.int16), wav.rate_hz


def write_wav(
    path: Path, pcm: npt.NDArray[np.float32] | npt.NDArray[np.int16], rate_hz: int
) -> None:
    """Write mono 16-bit PCM: int16 samples as they are, float samples in [-1, 1] scaled."""
    if pcm.dtype == np.int16:
        ints = np.asarray(pcm, dtype="<i2").tobytes()
    else:
        floats = np.asarray(pcm, dtype=np.float32)
        ints = (np.clip(floats, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
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
