"""The one WAV reader: every reader agrees about a file, and every problem is one WavError."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from voicegate.audio.wav import inspect_wav, read_wav, read_wav_int16, write_wav
from voicegate.errors import AudioError, WavError


def riff(*chunks: tuple[bytes, bytes]) -> bytes:
    body = b"WAVE"
    for chunk_id, data in chunks:
        body += chunk_id + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt(tag: int, channels: int, rate_hz: int, bits: int, *, sub_tag: int | None = None) -> bytes:
    block = channels * (bits // 8)
    head = struct.pack("<HHIIHH", tag, channels, rate_hz, rate_hz * block, block, bits)
    if sub_tag is None:
        return head
    return head + struct.pack("<HHIH", 22, bits, 0, sub_tag) + b"\0" * 14


def test_written_int16_and_float_round_trip_through_every_reader(tmp_path: Path) -> None:
    ints = (np.sin(np.arange(16000) * 0.05) * 12000).astype(np.int16)
    write_wav(tmp_path / "i.wav", ints, 8000)
    write_wav(tmp_path / "f.wav", ints.astype(np.float32) / 32767.0, 8000)
    for name in ("i.wav", "f.wav"):
        samples, rate = read_wav_int16(tmp_path / name)
        assert rate == 8000
        np.testing.assert_array_equal(samples, ints)
        pcm, rate = read_wav(tmp_path / name)
        np.testing.assert_array_equal(pcm, ints.astype(np.float32) / 32768.0)
        info = inspect_wav(tmp_path / name)
        assert (info.rate_hz, info.channels, info.bits, info.frames) == (8000, 1, 16, 16000)
        assert info.peak == pytest.approx(float(np.max(np.abs(pcm))))
    with wave.open(str(tmp_path / "i.wav")) as w:  # the standard library reads it the same way
        assert np.frombuffer(w.readframes(w.getnframes()), "<i2").tolist() == ints.tolist()


def test_extensible_stereo_float_with_a_list_chunk_and_odd_padding(tmp_path: Path) -> None:
    left = np.linspace(-0.5, 0.5, 8000, dtype=np.float32)
    frames = np.stack([left, -left], axis=1).astype("<f4").tobytes()
    raw = riff(
        (b"LIST", b"odd"),  # a chunk of odd length is padded to even before the next one
        (b"fmt ", fmt(0xFFFE, 2, 16000, 32, sub_tag=3)),
        (b"data", frames),
    )
    (tmp_path / "x.wav").write_bytes(raw)
    pcm, rate = read_wav(tmp_path / "x.wav")
    assert rate == 16000
    np.testing.assert_array_equal(pcm, left)  # the first channel only
    info = inspect_wav(tmp_path / "x.wav")
    assert info.is_float and info.channels == 2 and info.peak == pytest.approx(0.5)
    with pytest.raises(WavError, match="expected mono 16-bit PCM, got 2 channels of 32 bits"):
        read_wav_int16(tmp_path / "x.wav")


def test_the_first_chunk_of_a_kind_wins_for_every_reader(tmp_path: Path) -> None:
    first = struct.pack("<4h", 1000, 2000, 3000, 4000)
    raw = riff((b"fmt ", fmt(1, 1, 8000, 16)), (b"data", first), (b"data", b"\0" * 8))
    (tmp_path / "two.wav").write_bytes(raw)
    samples, _ = read_wav_int16(tmp_path / "two.wav")
    assert samples.tolist() == [1000, 2000, 3000, 4000]
    pcm, _ = read_wav(tmp_path / "two.wav")
    assert pcm.tolist() == pytest.approx([s / 32768 for s in samples.tolist()])
    assert inspect_wav(tmp_path / "two.wav").peak == pytest.approx(4000 / 32768)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"RIFF....WAVEjunk", "no 'fmt ' chunk"),
        (riff((b"fmt ", fmt(1, 1, 8000, 16))), "no 'data' chunk"),
        (riff((b"fmt ", fmt(1, 1, 8000, 16)), (b"data", b"\0" * 9))[:-4], "data chunk truncated"),
        (riff((b"fmt ", fmt(7, 1, 8000, 8)), (b"data", b"\0" * 8)), "8-bit PCM"),
        (riff((b"fmt ", fmt(1, 1, 1000, 16)), (b"data", b"\0" * 8)), "sample rate 1000 Hz"),
    ],
)
def test_every_problem_is_one_error_type_naming_the_file(
    tmp_path: Path, raw: bytes, reason: str
) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(raw)
    for read in (read_wav, read_wav_int16):
        with pytest.raises(WavError, match=reason) as caught:
            read(path)
        assert str(path) in str(caught.value)
        assert isinstance(caught.value, AudioError) and isinstance(caught.value, ValueError)
    with pytest.raises(WavError, match=reason):
        inspect_wav(path)


def test_unreadable_files_chain_the_os_error(tmp_path: Path) -> None:
    with pytest.raises(WavError, match="cannot read") as caught:
        read_wav(tmp_path / "absent.wav")
    assert isinstance(caught.value.__cause__, WavError)
    assert isinstance(caught.value.__cause__.__cause__, FileNotFoundError)
    big = tmp_path / "big.wav"
    write_wav(big, np.zeros(100, np.int16), 8000)
    with pytest.raises(WavError, match="at most 100"):
        inspect_wav(big, max_bytes=100)
