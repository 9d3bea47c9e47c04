"""G.711 mu-law and A-law as numpy lookup tables, bit-exact with CPython's ``audioop``.

Owns: the four tables (256-entry decode, 65536-entry encode indexed by ``int16 & 0xFFFF``) built
from the ITU-T G.711 segment rules, and table-based encode/decode. This is the fallback where
``audioop`` is missing and the independent check of it in tests.
Must not import any other voicegate module.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

MULAW_BIAS = 0x84
MULAW_CLIP = 8159  # largest 14-bit magnitude before the bias is added

# Top of each of the 8 segments, for 14-bit (mu-law) and 13-bit (A-law) magnitudes.
_MULAW_SEGMENT_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], np.int32)
_ALAW_SEGMENT_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], np.int32)


def _all_int16() -> npt.NDArray[np.int32]:
    """Every int16 value, ordered by its uint16 bit pattern (the encode tables' index)."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _build_mulaw_decode() -> npt.NDArray[np.int16]:
    code = (~np.arange(256, dtype=np.int32)) & 0xFF
    t = ((code & 0x0F) << 3) + MULAW_BIAS
    t = t << ((code & 0x70) >> 4)
    return np.where(code & 0x80, MULAW_BIAS - t, t - MULAW_BIAS).astype(np.int16)


def _build_mulaw_encode() -> npt.NDArray[np.uint8]:
    pcm = _all_int16() >> 2  # 14-bit
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), MULAW_CLIP) + (MULAW_BIAS >> 2)
    seg = np.searchsorted(_MULAW_SEGMENT_END, mag, side="left")
    code = (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    t = (code & 0x0F) << 4
    seg = (code & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(code & 0x80, t, -t).astype(np.int16)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    pcm = _all_int16() >> 3  # 13-bit
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = np.searchsorted(_ALAW_SEGMENT_END, mag, side="left")
    seg7 = np.minimum(seg, 7)
    quant = np.where(seg7 < 2, mag >> 1, mag >> np.maximum(seg7, 1)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (seg7 << 4) | quant)
    return (code ^ mask).astype(np.uint8)


MULAW_DECODE_TABLE = _build_mulaw_decode()
MULAW_ENCODE_TABLE = _build_mulaw_encode()
ALAW_DECODE_TABLE = _build_alaw_decode()
ALAW_ENCODE_TABLE = _build_alaw_encode()
for _table in (MULAW_DECODE_TABLE, MULAW_ENCODE_TABLE, ALAW_DECODE_TABLE, ALAW_ENCODE_TABLE):
    _table.flags.writeable = False


def table_decode(data: bytes, table: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """Decode G.711 bytes with a 256-entry table."""
    return table[np.frombuffer(data, dtype=np.uint8)]


def table_encode(pcm: npt.NDArray[np.int16], table: npt.NDArray[np.uint8]) -> bytes:
    """Encode int16 samples with a 65536-entry table."""
    return table[pcm.view(np.uint16)].tobytes()
