"""WAV voice clips: inside the personas folder, readable, mono-able, 2-30 s (WAVs made here)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
from personas_helpers import write_raw_wav, write_wav

from voicegate.audio.wav import inspect_wav
from voicegate.errors import WavError
from voicegate.personas import read_persona


def persona_with_voice(folder: Path, voice: str, name: str = "clip") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"description: d\ntext_prompt: t\nvoice: {voice}\n")
    return path


def errors_at_voice(path: Path, folder: Path) -> list[str]:
    persona, problems = read_persona(path, folder)
    assert persona is None
    assert all((p.line, p.col) == (3, 8) for p in problems)
    return [p.message for p in problems if p.is_error]


def test_mono_clip_loads_and_reaches_the_engine_as_an_absolute_path(tmp_path: Path) -> None:
    clip = write_wav(tmp_path / "voices" / "sanni.wav", 3.0)
    persona, problems = read_persona(persona_with_voice(tmp_path, "voices/sanni.wav"), tmp_path)
    assert problems == [] and persona is not None
    assert persona.voice_path == clip.resolve()
    prompt = persona.to_prompt()
    assert prompt.voice_path == clip.resolve() and prompt.voice == str(clip.resolve())


@pytest.mark.parametrize(("channels", "rate_hz"), [(2, 48_000), (6, 16_000), (1, 8_000)])
def test_multichannel_and_other_rates_are_accepted(
    tmp_path: Path, channels: int, rate_hz: int
) -> None:
    write_wav(tmp_path / "v.wav", 2.5, channels=channels, rate_hz=rate_hz)
    persona, problems = read_persona(persona_with_voice(tmp_path, "v.wav"), tmp_path)
    assert persona is not None and problems == []


@pytest.mark.parametrize(
    ("seconds", "ok"), [(1.99, False), (2.0, True), (30.0, True), (30.5, False)]
)
def test_clip_length_bounds(tmp_path: Path, seconds: float, ok: bool) -> None:
    write_wav(tmp_path / "v.wav", seconds, rate_hz=8000)
    path = persona_with_voice(tmp_path, "v.wav")
    if ok:
        assert read_persona(path, tmp_path)[0] is not None
    else:
        [message] = errors_at_voice(path, tmp_path)
        assert f"clip is {seconds:.2f} s long; a voice clip must be 2 to 30 s" in message


def test_silent_clip_loads_with_a_warning(tmp_path: Path) -> None:
    write_wav(tmp_path / "v.wav", 3.0, is_silent=True)
    persona, problems = read_persona(persona_with_voice(tmp_path, "v.wav"), tmp_path)
    assert persona is not None
    assert [(p.severity, p.message) for p in problems] == [
        ("warning", "voice clip 'v.wav' is silent")
    ]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b"not a wav at all"), "no RIFF/WAVE header"),
        (lambda p: p.write_bytes(b""), "no RIFF/WAVE header"),
        (lambda p: write_raw_wav(p, 1, 0, 24000, 16, b""), "0 channels"),
        (lambda p: write_raw_wav(p, 1, 9, 24000, 16, b"\0" * 18), "9 channels"),
        (lambda p: write_raw_wav(p, 1, 1, 4000, 16, b"\0" * 16000), "sample rate 4000 Hz"),
        (lambda p: write_raw_wav(p, 1, 1, 24000, 12, b"\0" * 96000), "12-bit PCM"),
        (lambda p: write_raw_wav(p, 6, 1, 24000, 8, b"\0" * 96000), "8-bit PCM"),
        (
            lambda p: write_raw_wav(p, 3, 1, 24000, 32, np.full(72000, np.nan, "<f4").tobytes()),
            "NaN",
        ),
    ],
    ids=[
        "garbage",
        "empty",
        "no-channels",
        "too-many-channels",
        "low-rate",
        "12-bit",
        "alaw",
        "nan",
    ],
)
def test_unusable_clips_are_refused_with_a_reason(tmp_path: Path, make, reason: str) -> None:
    make(tmp_path / "v.wav")
    [message] = errors_at_voice(persona_with_voice(tmp_path, "v.wav"), tmp_path)
    assert message.startswith("voice clip 'v.wav': ") and reason in message


def test_truncated_data_chunk_is_refused(tmp_path: Path) -> None:
    clip = write_wav(tmp_path / "v.wav", 3.0)
    clip.write_bytes(clip.read_bytes()[:-1000])
    [message] = errors_at_voice(persona_with_voice(tmp_path, "v.wav"), tmp_path)
    assert "data chunk truncated" in message


def test_float_and_24_bit_clips_are_read(tmp_path: Path) -> None:
    samples = 0.5 * np.sin(np.arange(3 * 16000) * 0.1)
    write_raw_wav(tmp_path / "f.wav", 3, 1, 16000, 32, samples.astype("<f4").tobytes())
    ints = (samples * (2**23 - 1)).astype(np.int32)
    packed = b"".join(struct.pack("<i", int(v))[:3] for v in ints)
    write_raw_wav(tmp_path / "i24.wav", 1, 1, 16000, 24, packed)
    for name in ("f.wav", "i24.wav"):
        info = inspect_wav(tmp_path / name)
        assert info.duration_s == 3.0 and abs(info.peak - 0.5) < 1e-3


def test_missing_clip_and_folder_named_like_a_clip(tmp_path: Path) -> None:
    [message] = errors_at_voice(persona_with_voice(tmp_path, "voices/none.wav"), tmp_path)
    assert message == f"voice clip 'voices/none.wav' not found in {tmp_path}"
    (tmp_path / "dir.wav").mkdir()
    [message] = errors_at_voice(persona_with_voice(tmp_path, "dir.wav"), tmp_path)
    assert message == "voice clip 'dir.wav' is not a file"


@pytest.mark.parametrize(
    "voice", ["../outside.wav", "voices/../../outside.wav", "/tmp/outside.wav", "'C:\\x\\a.wav'"]
)
def test_paths_that_leave_the_folder_are_refused(tmp_path: Path, voice: str) -> None:
    personas = tmp_path / "personas"
    personas.mkdir()
    write_wav(tmp_path / "outside.wav", 3.0)
    [message] = errors_at_voice(persona_with_voice(personas, voice), personas)
    assert "leaves the personas folder" in message or "is absolute" in message


def test_symlink_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    personas = tmp_path / "personas"
    (personas / "voices").mkdir(parents=True)
    outside = write_wav(tmp_path / "secret" / "real.wav", 3.0)
    os.symlink(outside, personas / "voices" / "link.wav")
    os.symlink(tmp_path / "secret", personas / "dirlink")
    for voice in ("voices/link.wav", "dirlink/real.wav"):
        [message] = errors_at_voice(persona_with_voice(personas, voice), personas)
        assert f"resolves to {outside.resolve()}, outside the personas folder" in message


def test_symlink_inside_the_folder_is_fine(tmp_path: Path) -> None:
    real = write_wav(tmp_path / "voices" / "real.wav", 3.0)
    os.symlink(real, tmp_path / "voices" / "alias.wav")
    persona, _ = read_persona(persona_with_voice(tmp_path, "voices/alias.wav"), tmp_path)
    assert persona is not None and persona.voice_path == real.resolve()


def test_inspect_wav_reports_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(WavError, match="cannot read"):
        inspect_wav(tmp_path / "absent.wav")
