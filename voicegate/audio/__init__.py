"""Audio building blocks for the legs: G.711 codecs, streaming resamplers, sample conversions.

Synchronous and pure (numpy in, numpy or bytes out); nothing here is ``async`` or does I/O.
``voicegate.audio`` imports nothing from the rest of voicegate but ``voicegate.errors``.
"""

from __future__ import annotations

from voicegate.audio.g711 import alaw_decode, alaw_encode, mulaw_decode, mulaw_encode
from voicegate.audio.pcm import float_to_int16, int16_to_float32
from voicegate.audio.resample import StreamingResampler

__all__ = [
    "StreamingResampler",
    "alaw_decode",
    "alaw_encode",
    "float_to_int16",
    "int16_to_float32",
    "mulaw_decode",
    "mulaw_encode",
]
