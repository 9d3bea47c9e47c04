"""Sample-format conversions between int16 PCM and float32 in [-1, 1].

Owns: ``int16_to_float32`` and ``float_to_int16`` (rounding, clipping). Synchronous and pure;
must not import anything outside numpy and ``voicegate.audio``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["INT16_SCALE", "float_to_int16", "int16_to_float32"]

INT16_SCALE = 32768.0
_INV_INT16_SCALE = np.float32(1.0 / INT16_SCALE)


def int16_to_float32(
    samples: npt.NDArray[np.int16], out: npt.NDArray[np.float32] | None = None
) -> npt.NDArray[np.float32]:
    """Convert int16 samples to float32 in [-1, 1) (divide by 32768)."""
    if out is None:
        out = np.empty(samples.shape, dtype=np.float32)
    np.multiply(samples, _INV_INT16_SCALE, out=out)
    return out


def float_to_int16(
    samples: npt.NDArray[np.floating], out: npt.NDArray[np.int16] | None = None
) -> npt.NDArray[np.int16]:
    """Convert float samples in [-1, 1] to int16: times 32768, rounded, clipped to int16's range.

    ``out`` (same shape, int16) avoids one of the two allocations on the hot path.
    """
    if out is None:
        out = np.empty(samples.shape, dtype=np.int16)
    scaled = np.multiply(samples, INT16_SCALE, dtype=np.float32)
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768.0, 32767.0, out=scaled)
    out[...] = scaled
    return out
