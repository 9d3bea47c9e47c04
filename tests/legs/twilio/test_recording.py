"""Call recordings end to end: the real gateway (echo engine, real Redis) and the Twilio simulator.

The recording's left channel is checked against what the simulated caller sent, its right
channel against what the simulator heard (after any ``clear``), both by correlation; its length
against the call's; the consent announcement is heard before the agent's first audio and the
model hears nothing of the caller meanwhile; a caller who leaves during the announcement leaves
no recording; a gateway killed mid-call leaves a readable WAV.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from scipy import signal as sps

from voicegate.audio import StreamingResampler, mulaw_decode, mulaw_encode, write_wav
from voicegate.demo import free_port
from voicegate.legs.twilio.sim import TwilioSimulator

from ..gateway import REPO, read_events, serving
from .twilio_helpers import (
    AUTH_TOKEN,
    PUBLIC_URL,
    TwilioGateway,
    gateway_env,
    start_twilio_gateway,
    wait_ready,
)

RATE_HZ = 8000
CALLER = "+15005550006"
RECORDED = "+15550191"  # recording on, no announcement
ANNOUNCED = "+15550192"  # recording on, announcement first
CLIP_RATE_HZ = 16_000  # the announcement is resampled to the leg's 8 kHz
CLIP_S = 1.0
PAD = RATE_HZ  # the most the heard audio may lag the recording's agent channel


def _clip() -> npt.NDArray[np.float32]:
    t = np.arange(int(CLIP_RATE_HZ * CLIP_S)) / CLIP_RATE_HZ
    # a chirp (300 -> 1500 Hz): no two parts alike, so each part is found in one place only
    x = 0.4 * np.sin(2 * np.pi * (300 * t + 600 * t * t / CLIP_S))
    return x.astype(np.float32)


def _noise(seconds: float, seed: int) -> npt.NDArray[np.int16]:
    """Band-limited noise (300-3000 Hz): no lag ambiguity, survives G.711 and resampling."""
    rng = np.random.default_rng(seed)
    sos = sps.butter(6, [300, 3000], btype="bandpass", fs=RATE_HZ, output="sos")
    x = sps.sosfilt(sos, rng.standard_normal(int(seconds * RATE_HZ)))
    return (x / np.max(np.abs(x)) * 12000).astype(np.int16)


def make_config(tmp: Path) -> tuple[Path, Path]:
    """A personas folder with voices/consent.wav and a numbers file with recording entries."""
    personas = tmp / "personas"
    shutil.copytree(REPO / "personas", personas, ignore=shutil.ignore_patterns(".versions"))
    write_wav(personas / "voices" / "consent.wav", _clip(), CLIP_RATE_HZ)
    numbers = tmp / "numbers.yaml"
    numbers.write_text(
        (REPO / "telephony" / "numbers.yaml").read_text()
        + "recording:\n"
        + f'  "{RECORDED}": {{enabled: true}}\n'
        + f'  "{ANNOUNCED}": {{enabled: true, announcement: voices/consent.wav}}\n'
    )
    return personas, numbers


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwilioGateway]:
    tmp = tmp_path_factory.mktemp("rec")
    personas, numbers = make_config(tmp)
    yield from serving(
        start_twilio_gateway(
            redis_url,
            tmp,
            personas_dir=personas,
            numbers_file=numbers,
            recordings_dir=tmp / "recordings",
        )
    )


def read_stereo(path: Path) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]]:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, RATE_HZ)
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    return frames[:, 0].copy(), frames[:, 1].copy()


def best_match(
    haystack: npt.NDArray[np.generic], needle: npt.NDArray[np.generic]
) -> tuple[int, float]:
    """(offset, normalised correlation) of ``needle``'s best match inside ``haystack``."""
    h = haystack.astype(np.float64)
    n = needle.astype(np.float64)
    num = sps.correlate(h, n, mode="valid", method="fft")
    energy = np.convolve(h * h, np.ones(len(n)), mode="valid")
    score = num / np.sqrt(np.maximum(energy, 1e-9) * float(n @ n))
    k = int(np.argmax(score))
    return k, float(score[k])


def heard_lags(
    right: npt.NDArray[np.int16], heard: npt.NDArray[np.int16], block: int = RATE_HZ // 10
) -> tuple[list[int], list[float]]:
    """Per voiced block of ``heard``: (its lag against ``right`` in samples, the match score)."""
    padded = np.concatenate([np.zeros(PAD, np.int16), right, np.zeros(PAD + block, np.int16)])
    lags: list[int] = []
    scores: list[float] = []
    for b in range(0, len(heard) - block, block):
        piece = heard[b : b + block]
        if np.abs(piece).max() > 1000:
            k, score = best_match(padded[b : b + 2 * PAD + block], piece)
            lags.append(k - PAD)
            scores.append(round(score, 3))
    return lags, scores


def by_type(events: list[dict[str, str]], kind: str) -> dict[str, str]:
    found = [e for e in events if e["type"] == kind]
    assert len(found) == 1, (kind, [e["type"] for e in events])
    return found[0]


async def recorded_call(
    gateway: TwilioGateway, called: str, sent: npt.NDArray[np.int16]
) -> tuple[str, npt.NDArray[np.int16], list[dict[str, str]]]:
    """A call to ``called`` that sends ``sent`` then 600 ms of silence: its sid, what the
    caller heard, and its events up to recording.ended."""
    async with TwilioSimulator(gateway.base_url, PUBLIC_URL, AUTH_TOKEN) as twilio:
        placed = await twilio.place_call(CALLER, called)
        stream = await twilio.open_stream(placed)
        await stream.play(sent)
        await stream.play_silence(600)
        await stream.stop()
        heard = stream.heard_pcm()
    events = await read_events(gateway.redis_url, placed.call_sid, until="recording.ended")
    return placed.call_sid, heard, events


async def test_recording_channels_match_what_was_sent_and_heard(gateway: TwilioGateway) -> None:
    sent = _noise(2.5, seed=1)
    call_sid, heard, events = await recorded_call(gateway, RECORDED, sent)
    types = [e["type"] for e in events]
    assert types.index("call.started") < types.index("recording.started")
    started, ended = by_type(events, "recording.started"), by_type(events, "recording.ended")
    call_ended = by_type(events, "call.ended")
    assert started["announcement"] == "false" and started["path"] == ended["path"]
    assert ended["status"] == "complete", ended
    path = Path(ended["path"])
    assert path.name == f"{call_sid}.wav" and (path.stat().st_mode & 0o777) == 0o600
    left, right = read_stereo(path)
    # its length is the call's (both on the call's clock)
    call_ms = int(call_ended["duration_ms"])
    assert abs(len(left) * 1000 / RATE_HZ - call_ms) <= 40
    assert abs(int(ended["duration_ms"]) - call_ms) <= 40
    assert int(ended["size_bytes"]) == path.stat().st_size == 44 + 4 * len(left)
    # left: what the caller sent (as G.711 carried it), from the call's first sample on
    g711 = mulaw_decode(mulaw_encode(sent))
    offset, score = best_match(left, g711[: 2 * RATE_HZ])
    assert offset == 0 and score > 0.999, (offset, score)
    # right: what the caller heard of the agent (the echo engine plays the caller back), with
    # any barge-in cut already missing. Compared in 100 ms blocks: the simulator places each
    # message at its arrival, so jitter moves single blocks; the offset is the audio queued at
    # Twilio ahead of the gateway's playout clock plus the way there (150-400 ms on this loaded
    # machine, where the simulator shares 2 cores with the gateway): one constant offset
    lags, scores = heard_lags(right, heard)
    good = [lag for lag, sc in zip(lags, scores, strict=True) if sc > 0.9]
    assert len(good) >= 0.6 * len(lags) and len(lags) >= 15, list(zip(lags, scores, strict=True))
    assert all(-PAD <= lag <= 0 for lag in good), good
    assert max(good) - min(good) <= 0.04 * RATE_HZ, good
    assert np.abs(right).max() > 1000  # the agent did speak
    assert path.is_absolute()
    # the page cannot read it: no route serves the recordings folder
    async with httpx.AsyncClient(base_url=gateway.base_url, trust_env=False) as client:
        for url in (f"/static/{path.name}", f"/recordings/{path.name}", f"/{path.name}"):
            assert (await client.get(url)).status_code == 404, url


async def test_announcement_is_heard_first_and_the_model_hears_nothing_meanwhile(
    gateway: TwilioGateway,
) -> None:
    sent = _noise(3.0, seed=2)
    _, heard, events = await recorded_call(gateway, ANNOUNCED, sent)
    assert by_type(events, "recording.started")["announcement"] == "true"
    ended = by_type(events, "recording.ended")
    assert ended["status"] == "complete"
    left, right = read_stereo(Path(ended["path"]))
    rs = StreamingResampler(CLIP_RATE_HZ, RATE_HZ)
    resampled = rs.process(np.concatenate([_clip(), np.zeros(800, np.float32)]))
    n_clip = int(CLIP_S * RATE_HZ)
    pcm = (resampled[rs.delay_samples : rs.delay_samples + n_clip] * 32767).astype(np.int16)
    clip = mulaw_decode(mulaw_encode(pcm))
    # the caller heard the whole announcement (block by block: the simulator places messages
    # at their arrival, so jitter may move one), nothing before it, and then the agent
    block = RATE_HZ // 10
    found = [best_match(heard, clip[b : b + block]) for b in range(0, n_clip, block)]
    good = [(i, at) for i, (at, score) in enumerate(found) if score > 0.95]
    assert len(good) >= 0.7 * len(found), found
    starts = [at for _, at in good]
    assert starts == sorted(starts)
    first, at = good[0]
    clip_start = at - first * block  # where the announcement began in what the caller heard
    assert np.abs(heard[: max(0, clip_start - RATE_HZ // 50)]).max(initial=0) < 200
    assert np.abs(heard[starts[-1] + block :]).max(initial=0) > 1000
    # the recording's agent channel starts with the announcement at the call's first sample
    rec_at, rec_score = best_match(right[: 2 * n_clip], clip)
    assert rec_at == 0 and rec_score > 0.99, (rec_at, rec_score)
    # the model heard the caller only from the end of the announcement: what the caller said
    # during it is nowhere in the agent's (echoed) audio, what it said afterwards is
    tail = right[n_clip:]
    _, during = best_match(tail, left[400 : n_clip - 1200])
    _, later = best_match(tail, left[n_clip + 2400 : n_clip + 8000])
    assert during < 0.3 and later > 0.8, (during, later)


async def test_caller_leaving_during_the_announcement_is_recorded_as_such(
    gateway: TwilioGateway,
) -> None:
    async with TwilioSimulator(gateway.base_url, PUBLIC_URL, AUTH_TOKEN) as twilio:
        placed = await twilio.place_call(CALLER, ANNOUNCED)
        stream = await twilio.open_stream(placed)
        await stream.play(_noise(0.4, seed=3))
        await stream.stop()
    events = await read_events(gateway.redis_url, placed.call_sid, until="recording.ended")
    call_ended = by_type(events, "call.ended")
    assert call_ended["reason"] == "caller_hangup"
    assert call_ended["detail"] == "caller left during the recording announcement"
    assert call_ended["frames"] == "0"  # the call never reached the engine
    ended = by_type(events, "recording.ended")
    assert ended["status"] == "discarded" and "announcement" in ended["detail"]
    assert not Path(ended["path"]).exists()


async def test_a_killed_gateway_leaves_a_playable_recording(redis_url: str, tmp_path: Path) -> None:
    personas, numbers = make_config(tmp_path)
    folder = tmp_path / "recordings"
    port = free_port()
    env = gateway_env(
        redis_url,
        tmp_path,
        port,
        VOICEGATE_PERSONAS_DIR=str(personas),
        VOICEGATE_NUMBERS_FILE=str(numbers),
        VOICEGATE_RECORDINGS_DIR=str(folder),
    )
    proc = subprocess.Popen([sys.executable, "-m", "voicegate", "serve"], env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    sent = _noise(6.0, seed=4)
    try:
        await wait_ready(base, proc)
        async with TwilioSimulator(base, PUBLIC_URL, AUTH_TOKEN) as twilio:
            placed = await twilio.place_call(CALLER, RECORDED)
            stream = await twilio.open_stream(placed)
            playing = asyncio.create_task(stream.play(sent))
            started = time.monotonic()
            await asyncio.sleep(3.2)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            killed_after_s = time.monotonic() - started
            await playing
            await stream.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (path,) = folder.glob(f"*/{placed.call_sid}.wav")
    left, right = read_stereo(path)  # the header is valid: sizes patched every second
    # up to its last second: 1 s per write, 0.5 s held back for barge-in cuts, and slack
    assert len(left) >= (killed_after_s - 2.5) * RATE_HZ, (len(left), killed_after_s)
    g711 = mulaw_decode(mulaw_encode(sent))
    n = min(len(left), RATE_HZ)
    offset, score = best_match(left, g711[:n])
    assert offset == 0 and score > 0.999
