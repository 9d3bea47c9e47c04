"""``voicegate serve --workers 2``: Twilio calls through two edge worker processes that share
the one engine behave as through one process; a killed worker's calls end, the others carry on;
SIGTERM drains every worker and the gateway exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.legs.gateway import REPO, read_events
from tests.legs.sip.sip_client import SipClient, sdp_offer
from tests.legs.sip.sip_helpers import call_id_owned_by, free_udp_port, rtp_range
from tests.legs.twilio.twilio_helpers import AUTH_TOKEN, PUBLIC_URL, gateway_env, wait_ready
from voicegate.audio import caller_speech_ms, load_caller, mulaw_decode, mulaw_encode
from voicegate.demo import free_port
from voicegate.legs.sip.rtp import parse_rtp
from voicegate.legs.twilio.sim import SimulatedStream, TwilioSimulator

CALLED = "+14155550100"  # bank_teller
CALLER = "+15005550006"
API_TOKEN = "calls-api-token-for-tests"
RELAY_SOCKET = re.compile(r"worker (\d+): the call API's relay socket is (\S+)")
WEBHOOK = re.compile(r"\[w(\d+)\] voicegate\.legs\.twilio: twilio call (\S+) from .* -> persona")
STARTED = re.compile(r"\[w(\d+)\] voicegate\.calls: call (\S+) started: leg=(\w+)")


def tone(seconds: float, hz: float = 440.0, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


@dataclass
class MultiGateway:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path
    redis_url: str
    sip_port: int
    started_at: float = 0.0

    def worker_of(self, leg: str = "twilio") -> dict[str, int]:
        """call id -> the worker that runs it (from the workers' logs)."""
        text = self.log.read_text()
        return {m[2]: int(m[1]) for m in STARTED.finditer(text) if m[3] == leg}

    def webhook_worker_of(self) -> dict[str, int]:
        """call id -> the worker that answered its voice webhook."""
        return {m[2]: int(m[1]) for m in WEBHOOK.finditer(self.log.read_text())}

    def relay_sockets(self) -> dict[int, str]:
        """worker -> its private socket (as the kernel would hand a connection to it)."""
        return {int(m[1]): m[2] for m in RELAY_SOCKET.finditer(self.log.read_text())}

    def worker_pids(self) -> dict[int, int]:
        out: dict[int, int] = {}
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        for pid in children.split():
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            for arg in cmd:
                if arg.startswith(b"--index="):
                    out[int(arg.split(b"=")[1])] = int(pid)
        return out

    async def metric(self, name: str) -> float:
        async with httpx.AsyncClient(trust_env=False) as client:
            text = (await client.get(self.base + "/metrics")).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture
async def multi(redis_url: str, tmp_path: Path) -> AsyncIterator[MultiGateway]:
    port = free_port()
    rtp_min, rtp_max = rtp_range()
    env = gateway_env(
        redis_url,
        tmp_path,
        port,
        VOICEGATE_WEBRTC_ENABLED="false",
        VOICEGATE_DRAIN_TIMEOUT_S="1.5",
        VOICEGATE_EDGE_WORKERS="2",
        VOICEGATE_MAX_CALLS="24",
        VOICEGATE_SIP_ENABLED="true",
        VOICEGATE_SIP_HOST="127.0.0.1",
        VOICEGATE_SIP_PORT=str(free_udp_port()),
        VOICEGATE_RTP_PORT_MIN=str(rtp_min),
        VOICEGATE_RTP_PORT_MAX=str(rtp_max),
        VOICEGATE_CALLS_API_TOKEN=API_TOKEN,
    )
    log = tmp_path / "gateway.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voicegate", "serve"], env=env, cwd=REPO, stderr=sink
        )
    gateway = MultiGateway(
        proc, f"http://127.0.0.1:{port}", log, redis_url, int(env["VOICEGATE_SIP_PORT"])
    )
    try:
        await wait_ready(gateway.base, proc)
        for _ in range(100):  # both workers up (each says so once its app started)
            if len(gateway.worker_pids()) == 2 and log.read_text().count("gateway ready") == 2:
                break
            await asyncio.sleep(0.1)
        gateway.started_at = time.monotonic()
        # `serve`: the engine process and each worker froze startup's objects out of the GC
        assert log.read_text().count("objects frozen out of garbage collection") == 3
        # and held numpy's OpenBLAS to one thread (VOICEGATE_BLAS_THREADS)
        assert log.read_text().count("numpy's BLAS (libscipy_openblas) held to 1 threads") >= 3
        yield gateway
    finally:
        workers = gateway.worker_pids().values() if proc.poll() is None else ()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in workers:  # they stop by themselves once the engine process is gone
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def _calls_on_both_workers(
    twilio: TwilioSimulator, gateway: MultiGateway, most: int = 16
) -> list[tuple[str, SimulatedStream]]:
    """Open streams until each worker runs at least one (the kernel picks the worker)."""
    streams: list[tuple[str, SimulatedStream]] = []
    for _ in range(most):
        placed = await twilio.place_call(CALLER, CALLED)
        stream = await twilio.open_stream(placed)
        streams.append((placed.call_sid, stream))
        for _ in range(100):
            if placed.call_sid in gateway.worker_of():
                break
            await asyncio.sleep(0.01)
        if len(set(gateway.worker_of().values())) == 2:
            return streams
    raise AssertionError(f"every call landed in one worker: {gateway.worker_of()}")


async def test_twilio_calls_through_two_workers_behave_as_through_one(
    multi: MultiGateway,
) -> None:
    async with TwilioSimulator(multi.base, PUBLIC_URL, AUTH_TOKEN) as twilio:
        streams = await _calls_on_both_workers(twilio, multi)
        await asyncio.gather(*(s.play(tone(1.5)) for _, s in streams))
        for _, stream in streams:
            await stream.dtmf("5")
            await stream.stop()
        for call_sid, stream in streams:
            report = stream.report
            assert report.protocol_errors == [] and report.media_messages > 20
            assert report.marks_received == report.media_messages
            assert report.max_ahead_ms <= 100.5
            heard = stream.heard_pcm().astype(np.float64)
            assert np.sqrt(np.mean(heard**2)) > 500  # the echo engine sent the tone back
            events = await read_events(multi.redis_url, call_sid)
            kinds = [e["type"] for e in events]
            assert kinds.count("call.started") == 1 and kinds.count("call.ended") == 1
            assert [e["digit"] for e in events if e["type"] == "dtmf"] == ["5"]
            assert events[-1]["reason"] == "caller_hangup"

        # barge-in, as test_gateway's scripted one: the Call clears Twilio's queue
        speech = load_caller(8000)
        spans = caller_speech_ms()
        a = speech[: spans[0][1] * 8]
        b = speech[spans[1][0] * 8 : spans[1][1] * 8 + 800]
        script = np.concatenate([a, tone(0.4, 2000, 3000), b, np.zeros(8000, np.int16)])
        placed = await twilio.place_call(CALLER, CALLED)
        stream = await twilio.open_stream(placed)
        await stream.play(script)
        await stream.stop()
        events = await read_events(multi.redis_url, placed.call_sid)
        assert [e for e in events if e["type"] == "bargein"], [e["type"] for e in events]
        assert stream.report.clears >= 1

        # a transfer recorded by one worker, Twilio's <Connect action> answered by the other
        tries = 0
        for _ in range(12):
            tries += 1
            placed = await twilio.place_call(CALLER, CALLED)
            stream = await twilio.open_stream(placed)
            await stream.play(tone(0.4))
            sid = placed.call_sid
            if multi.worker_of().get(sid) != multi.webhook_worker_of().get(sid):
                break
            await stream.stop()  # both in one worker: try again
        else:
            raise AssertionError("no call had its stream in the other worker")
        await stream.dtmf("0")  # bank_teller: 0 -> the branch
        await stream.play_silence(100)
        await stream.wait_closed(5)
        assert stream.report.close_reason == "transfer"
        flow = await twilio.follow(placed, dial_outcome="completed")
        assert flow.errors == [] and flow.verbs == ["Dial", "Hangup"]
        assert flow.dials[0].numbers[0][0] == "+14155550123"
        # the <Dial action> (the other worker too) logs the answered transfer; its event
        # reaches Redis through that worker's writer, a moment after the TwiML answer
        for _ in range(50):
            events = await read_events(multi.redis_url, placed.call_sid)
            results = [e["result"] for e in events if e["type"] == "call.transfer"]
            if results and results[-1] == "answered":
                break
            await asyncio.sleep(0.1)
        (ended,) = [e for e in events if e["type"] == "call.ended"]
        assert ended["reason"] == "transferred"
        assert results[-1] == "answered", results

        # /metrics: every worker's calls, merged (each worker ran at least one)
        total = len(streams) + 1 + tries
        for _ in range(40):  # the other worker's snapshot is at most a second old
            if await multi.metric("voicegate_calls_total") >= total:
                break
            await asyncio.sleep(0.1)
        assert await multi.metric("voicegate_calls_total") == total
        assert await multi.metric("voicegate_engine_max_slots") > 0

        # SIP calls from one trunk address (the kernel hands all of it to one worker's
        # socket): each runs in the worker that owns its Call-ID, RTP in, the echo back, BYE
        client = SipClient(("127.0.0.1", multi.sip_port))
        try:
            call_ids = [call_id_owned_by(0, 2), call_id_owned_by(1, 2)]
            for call_id in call_ids:
                client.call_id, client.to_tag = call_id, ""
                heard = await asyncio.to_thread(_sip_call, client, tone(1.5))
                assert np.sqrt(np.mean(heard.astype(np.float64) ** 2)) > 500
        finally:
            client.close()
        sip_calls = multi.worker_of("sip")  # the gateway's call ids, in the order they ran
        assert list(sip_calls.values()) == [0, 1]
        for call_id in sip_calls:
            events = await read_events(multi.redis_url, call_id)
            assert [e["type"] for e in events].count("call.started") == 1
            assert events[-1]["type"] == "call.ended"
            assert events[-1]["reason"] == "caller_hangup"
        # the worker that received the trunk's datagrams handed the other's dialog over
        # (INVITE, ACK, BYE at least; another worker's snapshot is at most a second old)
        forwarded = "voicegate_sip_messages_forwarded_total"
        for _ in range(40):
            if await multi.metric(forwarded) >= 3:
                break
            await asyncio.sleep(0.1)
        assert await multi.metric(forwarded) >= 3

        # SIGTERM: both workers drain (busy, then the call ends "drain"), then a clean exit
        placed = await twilio.place_call(CALLER, CALLED)
        stream = await twilio.open_stream(placed)
        playing = asyncio.create_task(stream.play(tone(6)))
        await asyncio.sleep(0.3)
        multi.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        busy = await twilio.place_call(CALLER, CALLED)
        assert busy.reject_reason == "busy"
        await stream.wait_closed(10)
        await playing
        assert stream.report.close_reason == "drain"
    assert multi.proc.wait(30) == 0


def _sip_call(client: SipClient, pcm: np.ndarray) -> np.ndarray:
    """INVITE, 20 ms PCMU packets of ``pcm`` at real time, BYE; what came back, decoded."""
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))
    heard: list[np.ndarray] = []
    try:
        client.send(
            client.request("INVITE", 1, body=sdp_offer("127.0.0.1", media.getsockname()[1]))
        )
        ok = client.recv_final(5)
        assert ok.code == 200
        client.send(client.request("ACK", 1))
        port = int(re.search(rb"m=audio (\d+)", ok.raw.body)[1])  # type: ignore[index]
        media.setblocking(False)
        payload = mulaw_encode(pcm)
        t0 = time.monotonic()
        for k in range(len(payload) // 160 + 25):  # and 0.5 s of silence for the echo's tail
            chunk = payload[k * 160 : (k + 1) * 160] or b"\xff" * 160
            header = struct.pack("!BBHII", 0x80, 0, k & 0xFFFF, k * 160, 0x1234)
            media.sendto(header + chunk.ljust(160, b"\xff"), ("127.0.0.1", port))
            while True:
                try:
                    data = media.recv(2048)
                except BlockingIOError:
                    break
                heard.append(mulaw_decode(parse_rtp(data).payload))
            time.sleep(max(0.0, t0 + (k + 1) * 0.02 - time.monotonic()))
        client.send(client.request("BYE", 2))
        assert client.recv_final(3, method="BYE").code == 200
    finally:
        media.close()
    return np.concatenate(heard) if heard else np.zeros(0, np.int16)


async def test_a_killed_worker_ends_its_calls_and_the_others_carry_on(
    multi: MultiGateway,
) -> None:
    async with TwilioSimulator(multi.base, PUBLIC_URL, AUTH_TOKEN) as twilio:
        streams = await _calls_on_both_workers(twilio, multi)
        owner = multi.worker_of()
        pids = multi.worker_pids()
        victim = owner[streams[0][0]]
        survivors = [(sid, s) for sid, s in streams if owner[sid] != victim]
        lost = [sid for sid, _ in streams if owner[sid] == victim]
        await asyncio.sleep(max(0.0, 5.5 - (time.monotonic() - multi.started_at)))
        os.kill(pids[victim], signal.SIGKILL)  # past the crash-loop guard: it is started again
        for call_sid in lost:
            events = await read_events(multi.redis_url, call_sid)
            ended = [e for e in events if e["type"] == "call.ended"]
            assert len(ended) == 1 and ended[0]["reason"] == "error"
            assert (
                f"edge worker {victim} (pid {pids[victim]}) exited mid-call" in ended[0]["detail"]
            )
        # the slots are free: only the survivors hold one
        for _ in range(50):
            if await multi.metric("voicegate_engine_active_slots") == len(survivors):
                break
            await asyncio.sleep(0.1)
        assert await multi.metric("voicegate_engine_active_slots") == len(survivors)
        # the other worker's calls still get their audio back
        await asyncio.gather(*(s.play(tone(1.0)) for _, s in survivors))
        for call_sid, stream in survivors:
            assert not stream.is_closed
            await stream.stop()
            events = await read_events(multi.redis_url, call_sid)
            assert events[-1]["reason"] == "caller_hangup"
            heard = stream.heard_pcm().astype(np.float64)
            assert np.sqrt(np.mean(heard**2)) > 500
        async with httpx.AsyncClient(trust_env=False) as client:
            assert (await client.get(multi.base + "/readyz")).status_code == 200
        # the engine process started the worker again: new calls land in it and work
        for _ in range(300):
            if multi.log.read_text().count(f"[w{victim}] voicegate.app: gateway ready") == 2:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the killed worker was not started again")
        for _ in range(16):
            placed = await twilio.place_call(CALLER, CALLED)
            stream = await twilio.open_stream(placed)
            await stream.play(tone(0.6))
            await stream.stop()
            if multi.worker_of().get(placed.call_sid) == victim:
                heard = stream.heard_pcm().astype(np.float64)
                assert np.sqrt(np.mean(heard**2)) > 500
                break
        else:
            raise AssertionError("no call landed in the restarted worker")

        # the engine process dies: every worker ends its calls (engine_fault) and exits
        placed = await twilio.place_call(CALLER, CALLED)
        stream = await twilio.open_stream(placed)
        await stream.play(tone(0.4))
        workers = list(multi.worker_pids().values())
        multi.proc.kill()
        multi.proc.wait()
        await stream.wait_closed(10)
        events = await read_events(multi.redis_url, placed.call_sid)
        assert events[-1]["reason"] == "engine_fault"
        assert "engine process gone" in events[-1]["detail"]
        for _ in range(200):
            if not any(Path(f"/proc/{pid}").exists() for pid in workers):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("a worker outlived the engine process")


async def test_the_call_api_of_any_worker_acts_on_every_workers_calls(
    multi: MultiGateway,
) -> None:
    """The kernel hands an API connection to any worker: whichever gets it lists every
    worker's calls and hangs up or follows a call another worker holds (passed on to it)."""
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    async with TwilioSimulator(multi.base, PUBLIC_URL, AUTH_TOKEN) as twilio:
        streams = await _calls_on_both_workers(twilio, multi)
        owner = multi.worker_of()
        sockets = multi.relay_sockets()
        assert sorted(sockets) == [0, 1]

        def api(worker: int) -> httpx.AsyncClient:
            transport = httpx.AsyncHTTPTransport(uds=sockets[worker])
            return httpx.AsyncClient(transport=transport, base_url="http://gw", trust_env=False)

        sids = {sid for sid, _ in streams}
        for worker in (0, 1):
            async with api(worker) as client:
                listed = (await client.get("/calls", headers=auth)).json()["calls"]
                assert {c["call_id"] for c in listed} == sids  # both workers' calls
                assert (await client.get("/calls")).status_code == 401

        victim, stream = streams[0]
        other = 1 - owner[victim]
        async with api(other) as client:
            # a sibling's relayed request is answered from its own calls only (no loop)
            relayed = await client.post(
                f"/calls/{victim}/hangup", headers={**auth, "X-VoiceGate-Relayed": "1"}
            )
            assert relayed.status_code == 404
            async with client.stream("GET", f"/calls/{victim}/events", headers=auth) as feed:
                assert feed.status_code == 200
                assert feed.headers["content-type"].startswith("text/event-stream")
                lines = feed.aiter_lines()
                assert await anext(lines) == ": subscribed"
                await asyncio.sleep(2.5)  # quiet for longer than a relayed request may take
                answer = await client.post(f"/calls/{victim}/hangup", headers=auth)
                assert answer.status_code == 202, answer.text
                assert answer.json() == {"call_id": victim, "status": "hung_up"}
                seen = [line async for line in lines if line.startswith("event: ")]
                assert seen[-1] == "event: call.ended"  # followed through the other worker
            missing = await client.post("/calls/CAnotacall/hangup", headers=auth)
            assert missing.status_code == 404
        await stream.wait_closed(10)
        events = await read_events(multi.redis_url, victim)
        assert events[-1]["type"] == "call.ended" and events[-1]["reason"] == "agent_hangup"
        for _, s in streams[1:]:
            await s.stop()
