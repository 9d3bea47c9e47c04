"""Frame conversion, the outbound track's clock, ICE helpers and bearer checks (no network)."""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from voicegate.auth import bearer_matches
from voicegate.legs.webrtc.ice import keep_loopback_candidates, rtc_configuration
from voicegate.legs.webrtc.media import (
    FRAME_SAMPLES,
    RATE_HZ,
    AgentAudioTrack,
    MediaCounters,
    _Converter,
    to_mono_int16,
)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_to_mono_averages_channels(channels: int) -> None:
    rng = np.random.default_rng(channels)
    frames = rng.integers(-32768, 32768, size=(480, channels), dtype=np.int16)
    mono = to_mono_int16(frames.reshape(-1), channels)
    expected = np.floor(frames.astype(np.float64).mean(axis=1)).astype(np.int16)
    assert mono.dtype == np.int16 and np.array_equal(mono, expected)


def _frame(pcm: np.ndarray, layout: str, rate: int, fmt: str = "s16") -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format=fmt, layout=layout)
    frame.sample_rate = rate
    frame.time_base = fractions.Fraction(1, rate)
    frame.pts = 0
    return frame


def test_converter_fast_path_and_resampling_path() -> None:
    counters = MediaCounters()
    convert = _Converter(counters)
    left = np.arange(FRAME_SAMPLES, dtype=np.int16)
    stereo = np.stack([left, left + 2], axis=1).reshape(-1)
    out = convert(_frame(stereo, "stereo", RATE_HZ))
    assert np.array_equal(out, left + 1) and counters.resampled_in == 0
    # a 16 kHz mono frame (another codec) goes through libswresample to 48 kHz
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(3200) / 16000)).astype(np.int16)
    total = 0
    for i in range(10):
        total += len(convert(_frame(tone[i * 320 : (i + 1) * 320], "mono", 16000)))
    assert counters.resampled_in == 10
    assert abs(total - 10 * FRAME_SAMPLES) <= FRAME_SAMPLES  # 3x the samples, less the filter delay


async def test_agent_track_pulls_960_samples_per_20_ms_with_advancing_pts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    pulled: list[int] = []
    slept: list[float] = []

    def pull(n: int) -> np.ndarray:
        pulled.append(n)
        return np.full(n, len(pulled), dtype=np.int16)

    counters = MediaCounters()
    track = AgentAudioTrack(pull, counters, clock=lambda: now[0])
    real_sleep = asyncio.sleep

    async def fake_sleep(s: float) -> None:
        slept.append(s)
        now[0] += s
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    frames = [await track.recv() for _ in range(5)]
    now[0] += 1.0  # a 1 s stall: play on from now, do not burst 50 frames
    frames.append(await track.recv())
    assert counters.clock_resets == 1
    monkeypatch.undo()
    assert pulled == [FRAME_SAMPLES] * 6
    assert [f.pts for f in frames] == [i * FRAME_SAMPLES for i in range(6)]
    assert all(f.sample_rate == RATE_HZ and f.samples == FRAME_SAMPLES for f in frames)
    assert slept == pytest.approx([0.02] * 4)
    assert frames[2].to_ndarray()[0, 0] == 3 and counters.frames_out == 6
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


def test_keep_loopback_candidates() -> None:
    sdp = "\r\n".join(
        [
            "v=0",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
            "a=candidate:2 1 udp 2122260223 10.1.2.3 50001 typ host",
            "a=candidate:3 1 udp 2122260223 abcd-ef.local 50002 typ host",
            "a=candidate:4 1 udp 2122260223 ::1 50003 typ host",
            "a=end-of-candidates",
        ]
    )
    kept = keep_loopback_candidates(sdp + "\r\n")
    assert "127.0.0.1 50000" in kept and "::1 50003" in kept
    assert "10.1.2.3" not in kept and ".local" not in kept
    assert kept.startswith("v=0\r\nm=audio") and kept.endswith("a=end-of-candidates\r\n")


def test_rtc_configuration_uses_only_the_configured_stun_servers() -> None:
    assert rtc_configuration("").iceServers == []
    (server,) = rtc_configuration(" stun:a.example:3478 , stun:b.example ").iceServers or []
    assert server.urls == ["stun:a.example:3478", "stun:b.example"]


def test_bearer_matches() -> None:
    assert bearer_matches("Bearer abc", "abc")
    assert bearer_matches("bearer abc", "zzz", "abc")
    assert not bearer_matches("Bearer abc", "")  # an unset token refuses everyone
    assert not bearer_matches("Bearer ", "")
    assert not bearer_matches(None, "abc")
    assert not bearer_matches("Basic abc", "abc")
    assert not bearer_matches("Bearer abcd", "abc")
