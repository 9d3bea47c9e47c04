"""The gateway as its own process: SIGTERM drains calls; ``voicegate demo`` runs a whole call."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

from voicegate.demo import free_port
from voicegate.legs.twilio.sim import TwilioSimulator

from ..gateway import REPO, read_events
from .twilio_helpers import AUTH_TOKEN, PUBLIC_URL, gateway_env, wait_ready

CALLED = "+14155550100"
CALLER = "+15005550006"


async def test_sigterm_stops_admitting_and_drains_active_calls(
    redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = gateway_env(redis_url, tmp_path, port, VOICEGATE_DRAIN_TIMEOUT_S="1.5")
    proc = subprocess.Popen([sys.executable, "-m", "voicegate", "serve"], env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base, proc)
        async with TwilioSimulator(base, PUBLIC_URL, AUTH_TOKEN) as twilio:
            placed = await twilio.place_call(CALLER, CALLED)
            stream = await twilio.open_stream(placed)
            t = np.arange(8000 * 6) / 8000
            playing = asyncio.create_task(
                stream.play((8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))
            )
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
                for _ in range(100):  # at once: polled only while the signal is delivered
                    ready = await client.get("/readyz")
                    if ready.status_code != 200:
                        break
                    await asyncio.sleep(0.01)
            assert ready.status_code == 503
            assert ready.json()["problems"] == {"draining": "draining"}
            busy = await twilio.place_call(CALLER, CALLED)  # still serving, no longer admitting
            assert busy.reject_reason == "busy"
            assert not stream.is_closed  # the active call runs on during the drain
            await stream.wait_closed(10)  # until the drain deadline ends it
            await playing
        assert (stream.report.close_code, stream.report.close_reason) == (1000, "drain")
        events = await read_events(redis_url, placed.call_sid)
        assert events[-1]["type"] == "call.ended" and events[-1]["reason"] == "drain"
        assert proc.wait(20) == 0  # a drain is a clean stop, not death by SIGTERM (143)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_demo_runs_a_whole_call(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "agent.wav"
    result = subprocess.run(
        [sys.executable, "-m", "voicegate", "demo", "--seconds", "3", "--out", str(out)],
        env={**gateway_env(redis_url, tmp_path, free_port()), "VOICEGATE_REDIS_URL": redis_url},
        cwd=tmp_path,  # the demo must not depend on the working directory
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    for needle in ("call.started", "dtmf", "call.ended", "RANDOM weights", "VOICEGATE_MODEL_DIR"):
        assert needle in text
    # the caller pressed 0: the bank teller's call flow handed the call to the branch
    assert "<Dial> +14155550123: the person answered" in text
    assert "result=handed_off" in text and "reason=transferred" in text
    assert "result=answered" in text
    with wave.open(str(out), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        assert wav.getnframes() > 8000 * 2
