"""baresip calls the gateway playing a WAV and records what it hears (echo engine: the agent's
audio is the caller's own speech back), and Redis holds the call with its events."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from voicegate.audio import caller_wav_path, read_wav_int16

from ..gateway import read_events
from .sip_helpers import SipGateway, free_udp_port

RATE_HZ = 8000
SPEECH_S = 2.5
PAD_S = 1.5  # baresip hangs up when the file ends: silence keeps the call up for the echo


def write_wav(path: Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE_HZ)
        w.writeframes(pcm.astype("<i2").tobytes())


def baresip_config(folder: Path, wav: Path, outdir: Path) -> None:
    rtp = free_udp_port() & ~1
    (folder / "config").write_text(
        "\n".join(
            [
                "poll_method epoll",
                "net_interface 127.0.0.1",
                f"sip_listen 127.0.0.1:{free_udp_port()}",
                f"rtp_ports {30000 + rtp % 20000}-{30000 + rtp % 20000 + 40}",
                f"audio_source aufile,{wav}",
                "audio_player alsa,null",
                "audio_alert alsa,null",
                "audio_level no",
                "module_path /usr/lib/baresip/modules",
                "module g711.so",
                "module aufile.so",
                "module alsa.so",
                "module sndfile.so",
                "module_app account.so",
                "module_app menu.so",
                f"snd_path {outdir}",
                "",
            ]
        )
    )
    (folder / "accounts").write_text("<sip:caller@127.0.0.1>;regint=0;audio_codecs=PCMU\n")


def best_alignment(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    """The lag (samples) where ``a`` best matches inside ``b``, and the normalised correlation."""
    corr = signal.correlate(b, a, mode="valid", method="fft")
    energy = np.sqrt(np.convolve(b * b, np.ones(len(a)), mode="valid")) * np.linalg.norm(a)
    score = corr / (energy + 1e-9)
    lag = int(np.argmax(score))
    return lag, float(score[lag])


async def test_baresip_hears_the_agent_and_redis_holds_the_call(
    gateway: SipGateway, tmp_path: Path
) -> None:
    if shutil.which("baresip") is None:
        pytest.fail("baresip is not installed: apt-get install baresip (scripts/install.sh)")
    speech, rate = read_wav_int16(caller_wav_path(RATE_HZ))
    assert rate == RATE_HZ
    speech = speech[: int(SPEECH_S * RATE_HZ)]
    sent = np.concatenate([speech, np.zeros(int(PAD_S * RATE_HZ), np.int16)])
    wav = tmp_path / "caller_8k_mono_s16.wav"
    write_wav(wav, sent)
    outdir = tmp_path / "out"
    outdir.mkdir()
    folder = tmp_path / "baresip"
    folder.mkdir()
    baresip_config(folder, wav, outdir)
    before = set(gateway.sip_call_ids())
    proc = subprocess.run(
        [
            "baresip",
            "-f",
            str(folder),
            "-e",
            f"/dial sip:concierge@127.0.0.1:{gateway.sip_port}",
            "-t",
            str(int(SPEECH_S + PAD_S + 3)),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    call_ids = [c for c in gateway.sip_call_ids() if c not in before]
    assert len(call_ids) == 1, log
    events = await read_events(gateway.redis_url, call_ids[0])
    started = next(e for e in events if e["type"] == "call.started")
    assert (started["leg"], started["persona"]) == ("sip", "robot_concierge")
    ended = next(e for e in events if e["type"] == "call.ended")
    assert ended["reason"] == "caller_hangup", ended

    dumps = sorted(outdir.glob("dump-*-dec.wav"))
    assert dumps, f"baresip recorded nothing: {list(outdir.iterdir())}\n{log}"
    heard, heard_rate = read_wav_int16(dumps[0])
    assert heard_rate == RATE_HZ
    assert len(heard) >= RATE_HZ * SPEECH_S
    rms = float(np.sqrt(np.mean(heard.astype(np.float64) ** 2)))
    assert rms > 300, f"the recording is (near) silence: rms {rms:.1f}"
    # the echo engine sends the caller's speech back: find it in the recording
    a = speech.astype(np.float64)
    b = heard.astype(np.float64)
    lag, score = best_alignment(a, b)
    assert score > 0.5, f"the caller's speech is not in the recording (best {score:.2f} at {lag})"
    assert 0 < lag < RATE_HZ  # it came back later (engine tick, pacing, baresip's jitter buffer)
    gateway.wait_idle_blocking()
