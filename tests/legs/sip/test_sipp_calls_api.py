"""The live call API and recording on the SIP leg, against SIPp, in the real gateway (echo
engine, real Redis): a supervisor hangs a SIP call up (SIPp gets the gateway's BYE) and
transfers one (SIPp gets the REFER, without pressing a key); the recorded SIP call's WAV holds
what SIPp sent, on the call's length."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from voicegate.audio import caller_wav_path, mulaw_decode, mulaw_encode, read_wav_int16

from ..gateway import read_events, serving
from ..twilio.test_recording import best_match
from .sip_helpers import SipGateway, SippResult, run_sipp
from .test_sipp_transfer import NUMBERS, start_transfer_desk

TOKEN = "calls-api-token-0123456789"
RATE_HZ = 8000


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SipGateway]:
    tmp = tmp_path_factory.mktemp("sipapi")
    numbers = NUMBERS + "recording:\n  desk: {enabled: true}\n"
    gw = start_transfer_desk(
        redis_url, tmp, numbers, calls_api_token=TOKEN, recordings_dir=tmp / "recordings"
    )
    yield from serving(gw)


@pytest.fixture(scope="module")
def caller_ulaw(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """SIPp's working directory with caller.ulaw (3 s of speech, raw mu-law)."""
    path = tmp_path_factory.mktemp("sipp")
    pcm, rate = read_wav_int16(caller_wav_path(8000))
    assert rate == RATE_HZ
    ulaw = mulaw_encode(pcm[: RATE_HZ * 3])
    (path / "caller.ulaw").write_bytes(ulaw)
    return path, ulaw


async def live_sip_call(client: httpx.AsyncClient, sipp: asyncio.Task[SippResult]) -> str:
    """The id of the SIP call SIPp placed, once the call API lists it."""
    for _ in range(500):
        assert not sipp.done(), sipp.result()
        calls = (await client.get("/calls")).json()["calls"]
        sip = [c for c in calls if c["leg"] == "sip"]
        if sip:
            (call,) = sip
            assert call["persona"] == "transfer_desk" and "human" in call["destinations"]
            return str(call["call_id"])
        await asyncio.sleep(0.02)
    raise AssertionError("the SIP call never showed in GET /calls")


def api(gateway: SipGateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=gateway.base_url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        trust_env=False,
        timeout=10,
    )


def sipp(gateway: SipGateway, workdir: Path, scenario: str) -> asyncio.Task[SippResult]:
    return asyncio.create_task(
        asyncio.to_thread(run_sipp, gateway.sip_port, workdir, scenario=scenario, service="desk")
    )


async def test_hangup_over_the_api_sends_bye_and_keeps_the_recording(
    gateway: SipGateway, caller_ulaw: tuple[Path, bytes]
) -> None:
    workdir, ulaw = caller_ulaw
    run = sipp(gateway, workdir, "api_hangup.xml")
    async with api(gateway) as client:
        call_id = await live_sip_call(client, run)
        await asyncio.sleep(2.0)  # let SIPp talk: the recording gets some of the caller
        answer = await client.post(f"/calls/{call_id}/hangup")
        assert answer.status_code == 202 and answer.json()["status"] == "hung_up"
        result = await run
        assert result.returncode == 0, result.stdout + result.stderr  # our BYE came
        assert (await client.post(f"/calls/{call_id}/hangup")).status_code == 404
    events = await read_events(gateway.redis_url, call_id, until="recording.ended")
    ended = next(e for e in events if e["type"] == "call.ended")
    assert ended["reason"] == "agent_hangup" and ended["detail"] == "hung up over the call API"
    recording = next(e for e in events if e["type"] == "recording.ended")
    assert recording["status"] == "complete", recording
    with wave.open(recording["path"], "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, RATE_HZ)
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    assert abs(len(frames) * 1000 / RATE_HZ - int(ended["duration_ms"])) <= 40
    # the left channel holds what SIPp sent (its caller.ulaw, looped from the call's start)
    sent = mulaw_decode(ulaw)
    _, score = best_match(frames[:, 0], sent[RATE_HZ // 2 : RATE_HZ])
    assert score > 0.99, score
    assert np.abs(frames[:, 1]).max() > 1000  # the echo agent spoke on the right
    await gateway.wait_idle()


async def test_transfer_over_the_api_refers_the_sip_call(
    gateway: SipGateway, caller_ulaw: tuple[Path, bytes]
) -> None:
    workdir, _ = caller_ulaw
    run = sipp(gateway, workdir, "api_transfer.xml")
    async with api(gateway) as client:
        call_id = await live_sip_call(client, run)
        nowhere = await client.post(f"/calls/{call_id}/transfer", json={"destination": "sales"})
        assert nowhere.status_code == 409 and "destinations: branch, human" in nowhere.text
        answer = await client.post(f"/calls/{call_id}/transfer", json={"destination": "human"})
        assert answer.status_code == 202, answer.text
        body: dict[str, Any] = answer.json()
        assert body["status"] == "transfer_requested" and body["to"] == "sip:human@pbx.example.test"
        result = await run
    assert result.returncode == 0, result.stdout + result.stderr  # REFER checked, our BYE came
    events = await read_events(gateway.redis_url, call_id)
    requested, done = [e for e in events if e["type"] == "call.transfer"]
    assert requested["trigger"] == "api" and requested["result"] == "requested"
    assert done["result"] == "handed_off" and done["destination"] == "human"
    assert not [e for e in events if e["type"] == "dtmf"]
    assert next(e for e in events if e["type"] == "call.ended")["reason"] == "transferred"
    await gateway.wait_idle()
