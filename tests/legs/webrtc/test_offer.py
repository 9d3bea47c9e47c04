"""POST /webrtc/offer against a real gateway (echo engine, real Redis) with an aiortc caller."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from utils import upload

from voicegate.audio import caller_wav_path
from voicegate.contracts import EndReason
from voicegate.legs.webrtc.sim import WebRtcCaller, read_wav_48k

from .webrtc_helpers import EDITOR_TOKEN, WEBRTC_TOKEN, WebRtcGateway


@pytest.fixture(scope="module")
def caller_pcm() -> np.ndarray:
    return read_wav_48k(caller_wav_path(24000))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0


async def test_a_call_echoes_the_caller_and_logs_webrtc_events(
    gateway: WebRtcGateway, caller_pcm: np.ndarray
) -> None:
    async with WebRtcCaller(gateway.base_url, WEBRTC_TOKEN, caller_pcm) as caller:
        answer = await caller.call("bank_teller")
        assert answer["type"] == "answer" and "a=candidate" in answer["sdp"]
        # only loopback candidates leave the gateway in loopback-only mode
        for line in answer["sdp"].splitlines():
            if line.startswith("a=candidate:"):
                assert line.split()[4] == "127.0.0.1", line
        await caller.wait_received(ms=3000)
        assert gateway.calls.active_count == 1
        session = gateway.webrtc.session_for_call(caller.call_id)
        assert session is not None and session.connection_state == "connected"
        # received audio is released after 1 later frame (aiortc's own default holds 4: 80 ms)
        (receiver,) = session._pc.getReceivers()
        assert receiver._RTCRtpReceiver__jitter_buffer._prefetch == 1
        got = caller.received()
    # the echo engine returns the caller's speech: the browser hears non-silent audio
    assert rms(got) > 300, rms(got)
    await gateway.wait_idle()
    events = await gateway.events(caller.call_id)
    types = [e["type"] for e in events]
    assert types[0] == "call.started" and types[-1] == "call.ended", types
    assert {e["leg"] for e in events} == {"webrtc"}
    started, ended = events[0], events[-1]
    assert started["persona"] == "bank_teller" and started["from"] == "127.0.0.1"
    assert ended["reason"] == EndReason.CALLER_HANGUP.value
    assert int(ended["frames"]) > 20
    counters = json.loads(ended["counters"])
    assert counters["caller_frames"] > 20
    metrics = httpx.get(f"{gateway.base_url}/metrics", trust_env=False).text
    ingress = [
        line
        for line in metrics.splitlines()
        if line.startswith("voicegate_webrtc_ingress_seconds_count")
    ]
    assert ingress and float(ingress[0].split()[-1]) > 100  # one per received 20 ms frame


async def test_refuses_without_the_bearer_token(
    gateway: WebRtcGateway, caller_pcm: np.ndarray
) -> None:
    async with WebRtcCaller(gateway.base_url, WEBRTC_TOKEN, caller_pcm) as caller:
        for token in ("", "wrong", EDITOR_TOKEN):
            resp = await caller.offer("bank_teller", token=token)
            assert resp.status_code == 401, token
            assert resp.headers["www-authenticate"] == "Bearer"
    assert gateway.calls.active_count == 0 and not gateway.webrtc.sessions


@pytest.mark.parametrize("content_length", [1024**3, None])
async def test_an_oversized_offer_or_persona_body_is_refused_while_streaming(
    gateway: WebRtcGateway, content_length: int | None
) -> None:
    for path, token, status in (
        ("/webrtc/offer", WEBRTC_TOKEN, 413),
        ("/api/personas/bank_teller/validate", EDITOR_TOKEN, 400),
    ):
        result = await upload(
            gateway.base_url,
            path,
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            content_length=content_length,
            total_bytes=64 * 1024 * 1024,
        )
        assert result.status == status
        # answered before the body (announced too large) or soon after the bound (chunked)
        assert result.body_bytes_sent < (1 if content_length else 1024 * 1024)


async def test_unknown_persona_bad_offer_and_duplicate_call_id(
    gateway: WebRtcGateway, caller_pcm: np.ndarray
) -> None:
    async with WebRtcCaller(gateway.base_url, WEBRTC_TOKEN, caller_pcm) as caller:
        resp = await caller.offer("no_such_persona")
        assert resp.status_code == 404 and "no_such_persona" in resp.json()["detail"]
    headers = {"Authorization": f"Bearer {WEBRTC_TOKEN}"}
    async with httpx.AsyncClient(base_url=gateway.base_url, trust_env=False) as http:
        resp = await http.post(
            "/webrtc/offer",
            json={"type": "offer", "sdp": "v=0\r\nnonsense\r\n", "persona": "bank_teller"},
            headers=headers,
        )
        assert resp.status_code == 400, resp.text
        resp = await http.post("/webrtc/offer", content=b"{", headers=headers)
        assert resp.status_code == 400
    await gateway.wait_idle()
    call_id = "wr-" + "ab" * 16
    first = WebRtcCaller(gateway.base_url, WEBRTC_TOKEN, caller_pcm)
    second = WebRtcCaller(gateway.base_url, WEBRTC_TOKEN, caller_pcm)
    try:
        await first.pc.setLocalDescription(await first.pc.createOffer())
        body = {"sdp": first.pc.localDescription.sdp, "persona": "bank_teller", "call_id": call_id}
        async with httpx.AsyncClient(base_url=gateway.base_url, trust_env=False) as http:
            ok = await http.post("/webrtc/offer", json=body, headers=headers)
            assert ok.status_code == 200 and ok.json()["call_id"] == call_id
            await second.pc.setLocalDescription(await second.pc.createOffer())
            body["sdp"] = second.pc.localDescription.sdp
            dup = await http.post("/webrtc/offer", json=body, headers=headers)
            assert dup.status_code == 409, dup.text
        await first.pc.setRemoteDescription(RTCSessionDescription(ok.json()["sdp"], "answer"))
        await first.wait_received(ms=100)  # connected: closing now is a hang-up the gateway sees
    finally:
        await first.close()
        await second.close()
    await gateway.wait_idle()
    assert gateway.calls.active_count == 0


async def test_503_when_every_call_place_is_taken_and_the_slot_is_freed_on_close(
    gateway: WebRtcGateway, caller_pcm: np.ndarray
) -> None:
    callers = [WebRtcCaller(gateway.base_url, WEBRTC_TOKEN, caller_pcm) for _ in range(3)]
    try:
        for c in callers[:2]:  # the gateway takes 2 calls
            await c.call("bank_teller")
        resp = await callers[2].offer("bank_teller")
        assert resp.status_code == 503 and resp.headers["retry-after"]
        assert gateway.calls.active_count == 2
        await callers[0].close()  # the browser closes its peer connection
        deadline = time.monotonic() + 5
        while gateway.calls.active_count != 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        retry = WebRtcCaller(gateway.base_url, WEBRTC_TOKEN, caller_pcm)
        callers.append(retry)
        await retry.call("bank_teller")
        await retry.wait_received(ms=200)
    finally:
        for c in callers:
            await c.close()
    await gateway.wait_idle()
    metrics = httpx.get(f"{gateway.base_url}/metrics", trust_env=False).text
    assert 'voicegate_webrtc_offers_total{result="busy"}' in metrics


async def test_the_gateway_ending_a_call_closes_the_peer_connection(
    gateway: WebRtcGateway, caller_pcm: np.ndarray
) -> None:
    async with WebRtcCaller(gateway.base_url, WEBRTC_TOKEN, caller_pcm) as caller:
        await caller.call("bank_teller")
        await caller.wait_received(ms=200)
        call = gateway.calls.get(caller.call_id)
        gateway.on_loop(lambda: call.end(EndReason.DRAIN, "test"))
        # the gateway closed its peer connection: DTLS close_notify ends the caller's track
        await asyncio.wait_for(caller.track_ended.wait(), 10)
    await gateway.wait_idle()
    ended = (await gateway.events(caller.call_id))[-1]
    assert ended["reason"] == "drain"


async def test_no_audio_from_the_browser_ends_the_call_as_media_timeout(
    gateway: WebRtcGateway,
) -> None:
    gateway.webrtc.media_timeout_s = 0.5
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="recvonly")  # offers audio, never sends any
        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "persona": "bank_teller"}
        headers = {"Authorization": f"Bearer {WEBRTC_TOKEN}"}
        async with httpx.AsyncClient(base_url=gateway.base_url, trust_env=False) as http:
            resp = await http.post("/webrtc/offer", json=body, headers=headers)
        assert resp.status_code == 200, resp.text
        call_id = resp.json()["call_id"]
        await pc.setRemoteDescription(RTCSessionDescription(resp.json()["sdp"], "answer"))
        ended = (await gateway.events(call_id))[-1]
        assert ended["reason"] == EndReason.MEDIA_TIMEOUT.value
        await gateway.wait_idle()
    finally:
        gateway.webrtc.media_timeout_s = 10.0
        await pc.close()


async def test_live_events_feed_streams_the_call_events(
    gateway: WebRtcGateway, caller_pcm: np.ndarray
) -> None:
    call_id = "wr-" + "cd" * 16
    async with httpx.AsyncClient(base_url=gateway.base_url, trust_env=False, timeout=10) as http:
        resp = await http.get("/api/events", params={"call_id": call_id})
        assert resp.status_code == 401
        headers = {"Authorization": f"Bearer {WEBRTC_TOKEN}"}
        # every call's events (phone calls included) are for editors only
        assert (await http.get("/api/events", headers=headers)).status_code == 401
        bad = await http.get("/api/events", params={"call_id": "x y"}, headers=headers)
        assert bad.status_code == 400
        async with http.stream(
            "GET", "/api/events", params={"call_id": call_id}, headers=headers
        ) as feed:
            assert feed.headers["content-type"].startswith("text/event-stream")
            lines = feed.aiter_lines()
            assert (await anext(lines)).startswith(": subscribed")
            caller = WebRtcCaller(gateway.base_url, WEBRTC_TOKEN, caller_pcm)
            try:
                await caller.pc.setLocalDescription(await caller.pc.createOffer())
                body = {"sdp": caller.pc.localDescription.sdp, "persona": "wise_teacher"}
                ok = await http.post(
                    "/webrtc/offer", json={**body, "call_id": call_id}, headers=headers
                )
                assert ok.status_code == 200
                await caller.pc.setRemoteDescription(
                    RTCSessionDescription(ok.json()["sdp"], "answer")
                )
                await caller.wait_received(ms=300)
            finally:
                await caller.close()
            seen: list[dict[str, object]] = []
            async with asyncio.timeout(10):
                async for line in lines:  # the gateway ends the stream after call.ended
                    if line.startswith("data:"):
                        seen.append(json.loads(line[5:]))
    assert [e["type"] for e in seen][0] == "call.started"
    assert seen[0]["persona"] == "wise_teacher" and seen[0]["call_id"] == call_id
    assert seen[-1]["reason"] == "caller_hangup" and seen[-1]["leg"] == "webrtc"
    await gateway.wait_idle()
