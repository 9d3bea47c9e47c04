"""The bundled caller recordings: format, length, timeline, and the WAV reader's errors."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from voicegate.audio import caller_speech_ms, caller_wav_path, load_caller, read_wav_int16
from voicegate.errors import AudioError


@pytest.mark.parametrize("rate_hz", [8000, 24000])
def test_caller_wav_is_mono_s16_of_the_stated_rate_and_6_to_8_s(rate_hz: int) -> None:
    path = caller_wav_path(rate_hz)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, rate_hz)
        assert 6.0 <= w.getnframes() / rate_hz <= 8.5


def test_speech_is_where_the_timeline_says_and_silence_elsewhere() -> None:
    pcm = load_caller(8000).astype(np.float64)
    segments = caller_speech_ms()
    assert len(segments) == 2 and segments[0][1] < segments[1][0]

    def rms_dbfs(a_ms: int, b_ms: int) -> float:
        part = pcm[a_ms * 8 : b_ms * 8]
        return float(10 * np.log10(np.mean(part**2) / 32768**2 + 1e-12))

    for start_ms, end_ms in segments:
        assert rms_dbfs(start_ms, end_ms) > -35.0
    assert rms_dbfs(0, segments[0][0] - 20) < -70.0  # lead silence
    assert rms_dbfs(segments[0][1] + 50, segments[1][0] - 20) < -70.0  # the pause
    assert rms_dbfs(segments[1][1] + 50, len(pcm) // 8) < -70.0  # tail


def test_8k_and_24k_share_one_timeline() -> None:
    assert abs(len(load_caller(24000)) - 3 * len(load_caller(8000))) <= 3


def test_read_wav_rejects_stereo_and_garbage(tmp_path: Path) -> None:
    stereo = tmp_path / "stereo.wav"
    with wave.open(str(stereo), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00" * 400)
    with pytest.raises(AudioError, match="mono 16-bit"):
        read_wav_int16(stereo)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav")
    with pytest.raises(AudioError, match="cannot read"):
        read_wav_int16(junk)
    with pytest.raises(AudioError, match="16000"):
        caller_wav_path(16000)
