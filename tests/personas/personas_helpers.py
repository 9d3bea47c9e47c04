"""Helpers for the personas tests: WAV writing, a deadline poll, the repository's paths.

Imported as ``personas_helpers`` (pytest puts this folder on sys.path; the name is unique).
"""

from __future__ import annotations

import re
import struct
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
PERSONAS_DIR = REPO / "personas"
NUMBERS_FILE = REPO / "telephony" / "numbers.yaml"
DATA_DIR = REPO / "tests" / "data" / "personas"

# "# expect: LINE:COL SEVERITY: message start [-> suggestion]" lines atop captured bad files
EXPECT = re.compile(r"^# expect: (\d+):(\d+) (error|warning): (.*?)(?: -> (\S+))?$")


def write_wav(
    path: Path,
    seconds: float,
    *,
    rate_hz: int = 24_000,
    channels: int = 1,
    is_silent: bool = False,
    tone_hz: float = 220.0,
) -> Path:
    """A 16-bit PCM WAV of a tone (or silence) through the stdlib ``wave`` writer."""
    frames = int(round(seconds * rate_hz))
    t = np.arange(frames) / rate_hz
    mono = np.zeros(frames) if is_silent else 0.3 * np.sin(2 * np.pi * tone_hz * t)
    pcm = (np.repeat(mono[:, None], channels, axis=1) * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate_hz)
        out.writeframes(pcm.tobytes())
    return path


def write_raw_wav(
    path: Path, fmt_tag: int, channels: int, rate_hz: int, bits: int, data: bytes
) -> Path:
    """A WAV with any header values (for formats ``wave`` cannot write or refuses)."""
    block_align = channels * max(bits // 8, 1)
    fmt = struct.pack(
        "<HHIIHH", fmt_tag, channels, rate_hz, rate_hz * block_align, block_align, bits
    )
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def wait_until(predicate: Callable[[], bool], deadline_s: float = 2.0) -> bool:
    """Poll ``predicate`` until it holds or ``deadline_s`` passes (the product's 2 s promise)."""
    end = time.monotonic() + deadline_s
    while True:
        if predicate():
            return True
        if time.monotonic() > end:
            return predicate()
        time.sleep(0.01)
