"""The bundled caller recordings (synthetic speech made with espeak-ng) for the demo and tests.

Owns: paths to ``voicegate/audio/data/caller_8k.wav`` (8 kHz mono s16, 8 s: "Hello, I would like
to check the balance of my savings account." ... "Yes, thank you.") and ``caller_24k.wav`` (the
same timeline at 24 kHz), where the speech in them is (``caller.json``), and a small mono s16
WAV reader. Regenerate with ``python tests/data/audio/make_caller_wav.py``. Reading package files
is the only I/O; imports numpy, the standard library and ``voicegate.errors``.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voicegate.errors import AudioError

__all__ = ["caller_speech_ms", "caller_wav_path", "load_caller", "read_wav_int16"]

DATA_DIR = Path(__file__).resolve().parent / "data"
CALLER_RATES_HZ = (8000, 24000)


def caller_wav_path(rate_hz: int = 8000) -> Path:
    """Path of the bundled caller WAV at 8000 or 24000 Hz (mono, 16-bit)."""
    if rate_hz not in CALLER_RATES_HZ:
        raise AudioError(f"caller WAV: expected a rate in {CALLER_RATES_HZ}, got {rate_hz}")
    return DATA_DIR / f"caller_{rate_hz // 1000}k.wav"


def read_wav_int16(path: Path | str) -> tuple[npt.NDArray[np.int16], int]:
    """Read a mono 16-bit PCM WAV: ``(samples, rate_hz)``."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise AudioError(
                    f"{path}: expected mono 16-bit PCM, got {w.getnchannels()} channels "
                    f"of {8 * w.getsampwidth()} bits"
                )
            rate_hz = w.getframerate()
            frames = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise AudioError(f"{path}: cannot read WAV: {exc}") from exc
    return np.frombuffer(frames, dtype="<i2").astype(np.int16), rate_hz


def load_caller(rate_hz: int = 8000) -> npt.NDArray[np.int16]:
    """The bundled caller recording as int16 samples at ``rate_hz`` (8000 or 24000)."""
    samples, _ = read_wav_int16(caller_wav_path(rate_hz))
    return samples


def caller_speech_ms() -> list[tuple[int, int]]:
    """Where each spoken sentence of the caller recording starts and ends, in ms."""
    meta = json.loads((DATA_DIR / "caller.json").read_text())
    return [(int(s["start_ms"]), int(s["end_ms"])) for s in meta["speech"]]
