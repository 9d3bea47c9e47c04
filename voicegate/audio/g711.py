"""G.711 codecs: mu-law (PCMU) and A-law (PCMA) <-> 16-bit linear PCM, bit-exact with ``audioop``.

Owns: ``mulaw_encode``/``mulaw_decode``/``alaw_encode``/``alaw_decode``. They use ``audioop``
(about 0.1-0.5 us per 20 ms) and fall back to the numpy tables of ``_g711_tables`` where it is
missing; both give identical bytes. Synchronous and pure; imports nothing from voicegate but
``voicegate.audio`` and ``voicegate.errors`` (no asyncio).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from voicegate.audio import _g711_tables as _tables
from voicegate.audio._audioop import audioop as _audioop
from voicegate.audio.pcm import float_to_int16
from voicegate.errors import CodecError

__all__ = ["alaw_decode", "alaw_encode", "mulaw_decode", "mulaw_encode"]

SAMPLE_WIDTH_BYTES = 2
_INT16 = np.dtype(np.int16)


def _as_int16(
    pcm: npt.NDArray[np.generic] | bytes | bytearray | memoryview,
) -> npt.NDArray[np.int16]:
    if type(pcm) is np.ndarray and pcm.dtype is _INT16 and pcm.flags.c_contiguous:
        return pcm  # type: ignore[return-value]  # hot path: contiguous int16 frame
    if isinstance(pcm, (bytes, bytearray, memoryview)):
        if len(pcm) % SAMPLE_WIDTH_BYTES:
            raise CodecError(f"G.711 encode: expected whole 16-bit samples, got {len(pcm)} bytes")
        return np.frombuffer(pcm, dtype=np.int16)
    arr = np.asarray(pcm)
    if arr.dtype == np.int16:
        return np.ascontiguousarray(arr).reshape(-1)
    if arr.dtype.kind == "f":
        return float_to_int16(arr.reshape(-1))
    raise CodecError(f"G.711 encode: expected int16 or float samples, got dtype {arr.dtype}")


def mulaw_encode(pcm: npt.NDArray[np.generic] | bytes) -> bytes:
    """Encode 16-bit PCM (int16 array, native-endian bytes, or float in [-1, 1]) to mu-law bytes.

    Float input is rounded and clipped as :func:`~voicegate.audio.pcm.float_to_int16` does.
    """
    samples = _as_int16(pcm)
    if _audioop is not None:
        return _audioop.lin2ulaw(samples, SAMPLE_WIDTH_BYTES)  # type: ignore[no-any-return]
    return _tables.table_encode(samples, _tables.MULAW_ENCODE_TABLE)  # pragma: no cover


def alaw_encode(pcm: npt.NDArray[np.generic] | bytes) -> bytes:
    """Encode 16-bit PCM (int16 array, native-endian bytes, or float in [-1, 1]) to A-law bytes."""
    samples = _as_int16(pcm)
    if _audioop is not None:
        return _audioop.lin2alaw(samples, SAMPLE_WIDTH_BYTES)  # type: ignore[no-any-return]
    return _tables.table_encode(samples, _tables.ALAW_ENCODE_TABLE)  # pragma: no cover


def mulaw_decode(data: bytes | bytearray | memoryview) -> npt.NDArray[np.int16]:
    """Decode mu-law bytes to int16 samples (one per byte). The array is read-only."""
    if _audioop is not None:
        return np.frombuffer(_audioop.ulaw2lin(data, SAMPLE_WIDTH_BYTES), dtype=np.int16)
    return _tables.table_decode(bytes(data), _tables.MULAW_DECODE_TABLE)  # pragma: no cover


def alaw_decode(data: bytes | bytearray | memoryview) -> npt.NDArray[np.int16]:
    """Decode A-law bytes to int16 samples (one per byte). The array is read-only."""
    if _audioop is not None:
        return np.frombuffer(_audioop.alaw2lin(data, SAMPLE_WIDTH_BYTES), dtype=np.int16)
    return _tables.table_decode(bytes(data), _tables.ALAW_DECODE_TABLE)  # pragma: no cover
