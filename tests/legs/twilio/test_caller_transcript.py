"""The caller's words end to end: a Twilio call (the simulator) into the real app with the
tiny engine and the tiny caller STT (random weights, a release-layout ASR folder loaded by the
real loader); transcript.caller segments land in Redis with word timings on the call clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from voicegate.engine.synthetic import make_asr_dir
from voicegate.legs.twilio.sim import TwilioSimulator

from ..gateway import serving
from .twilio_helpers import TwilioGateway, start_twilio_gateway

CALLED = "+14155550100"
CALLER = "+15005550006"


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwilioGateway]:
    tmp = tmp_path_factory.mktemp("gw-stt")
    files = make_asr_dir(tmp / "asr", seed=5)
    yield from serving(
        start_twilio_gateway(
            redis_url,
            tmp,
            engine="tiny",
            device="cpu",
            asr_model_dir=files.root,
        )
    )


def noise(seconds: float, amplitude: int = 6000) -> np.ndarray:
    rng = np.random.default_rng(3)
    return (
        (rng.standard_normal(int(seconds * 8000)) * amplitude).clip(-32000, 32000).astype(np.int16)
    )


async def test_caller_segments_reach_redis(gateway: TwilioGateway, twilio: TwilioSimulator) -> None:
    placed = await twilio.place_call(CALLER, CALLED)
    stream = await twilio.open_stream(placed)
    await stream.play(noise(2.5))
    await stream.play_silence(500)
    await stream.stop()
    await gateway.wait_idle(timeout_s=10.0)
    events = await gateway.events(placed.call_sid)
    ended = next(e for e in events if e["type"] == "call.ended")
    duration_ms = int(ended["duration_ms"])
    caller = [e for e in events if e["type"] == "transcript.caller"]
    final = [e for e in caller if e["final"] == "true"]
    assert final, [e["type"] for e in events]
    assert any(e["final"] == "false" for e in caller)  # interim segments while it spoke
    for seg in final:
        words = json.loads(seg["words"])
        assert words and seg["text"] == " ".join(w for w, _, _ in words)
        starts = [s for _, s, _ in words]
        assert starts == sorted(starts)
        assert all(0 <= s <= e <= duration_ms for _, s, e in words)
        assert int(seg["start_ms"]) == words[0][1] and int(seg["end_ms"]) == words[-1][2]
    assert "caller_turn_ends" in json.loads(ended["dynamics"])


def test_demo_with_caller_words(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``voicegate demo --caller-words``: the demo call's events include the caller's segments."""
    from voicegate.demo import run_demo

    assert run_demo(tmp_path / "agent.wav", None, 2.0, caller_words=True) == 0
    text = capsys.readouterr().out
    assert "transcript.caller" in text and "final=true" in text
