"""The bundled caller recordings (synthetic speech made with espeak-ng) for the demo and tests.

Owns: paths to ``voicegate/audio/data/caller_8k.wav`` (8 kHz mono s16, 8 s: "Hello, I would like
to check the balance of my savings account." ... "Yes, thank you.") and ``caller_24k.wav`` (the
same timeline at 24 kHz) and where the speech in them is (``caller.json``), read with
``voicegate.audio.wav``. Regenerate with ``python tests/data/audio/make_caller_wav.py``.
Reading package files is the only I/O; imports numpy, ``voicegate.audio.wav`` and
``voicegate.errors``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voicegate.audio.wav import read_wav_int16
from voicegate.errors import AudioError

__all__ = ["caller_speech_ms", "caller_wav_path", "load_caller"]

DATA_DIR = Path(__file__).resolve().parent / "data"
CALLER_RATES_HZ = (8000, 24000)


def caller_wav_path(rate_hz: int = 8000) -> Path:
    """Path of the bundled caller WAV at 8000 or 24000 Hz (mono, 16-bit)."""
    if rate_hz not in CALLER_RATES_HZ:
        raise AudioError(f"caller WAV: expected a rate in {CALLER_RATES_HZ}, got {rate_hz}")
    return DATA_DIR / f"caller_{rate_hz // 1000}k.wav"


def load_caller(rate_hz: int = 8000) -> npt.NDArray[np.int16]:
    """The bundled caller recording as int16 samples at ``rate_hz`` (8000 or 24000)."""
    samples, _ = read_wav_int16(caller_wav_path(rate_hz))
    return samples


def caller_speech_ms() -> list[tuple[int, int]]:
    """Where each spoken sentence of the caller recording starts and ends, in ms."""
    meta = json.loads((DATA_DIR / "caller.json").read_text())
    return [(int(s["start_ms"]), int(s["end_ms"])) for s in meta["speech"]]
