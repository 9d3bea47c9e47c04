"""Engine faults over the SIP leg: SIPp callers talking to a gateway whose engine starts handing
back NaN audio (the TEST-only fault-injecting model). Every call gets the gateway's BYE (SIPp
passes only then) and ends engine_fault; new INVITEs are refused while the engine is rebuilt,
/readyz is 503 then 200 again, and a new call works."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from voicegate.audio import caller_wav_path, mulaw_encode, read_wav_int16

from ..gateway import REPO, start_gateway
from .sip_client import SipClient, sdp_offer
from .sip_helpers import SipGateway, run_sipp, sip_settings

CALLS = 3
WAIT_FOR_BYE = REPO / "tests" / "data" / "sipp" / "wait_for_bye.xml"


def sipp_workdir(tmp: Path) -> Path:
    path = tmp / "sipp"
    path.mkdir()
    pcm, rate = read_wav_int16(caller_wav_path(8000))
    assert rate == 8000
    (path / "caller.ulaw").write_bytes(mulaw_encode(pcm[: 8000 * 3]))
    return path


def invite_answer(gw: SipGateway) -> int:
    client = SipClient(("127.0.0.1", gw.sip_port))
    try:
        client.send(client.request("INVITE", 1, body=sdp_offer("127.0.0.1", 40000)))
        code = client.recv_final(3).code
        client.send(client.request("ACK", 1))
        return code
    finally:
        client.close()


async def test_nan_fault_ends_every_live_sip_call_then_the_engine_is_rebuilt(
    redis_url: str, tmp_path: Path
) -> None:
    settings = sip_settings(
        redis_url,
        tmp_path,
        max_calls=6,
        engine_fault="nan",
        engine_fault_calls=CALLS,
        engine_fault_after_s=0.5,
        engine_fault_warmup_s=1.5,
    )
    gw = start_gateway(SipGateway, settings)
    workdir = sipp_workdir(tmp_path)
    try:
        sipp = asyncio.create_task(
            asyncio.to_thread(
                run_sipp,
                gw.sip_port,
                workdir,
                scenario=str(WAIT_FOR_BYE),
                calls=CALLS,
                timeout_s=25,
            )
        )
        call_ids: list[str] = []
        deadline = time.monotonic() + 20
        while not call_ids:
            ids = gw.on_loop(lambda: [c.call_id for c in gw.calls.calls()])
            if len(ids) == CALLS:
                call_ids = ids
            assert time.monotonic() < deadline, f"the SIPp calls did not all start: {ids}"
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            while (response := await client.get(gw.base_url + "/readyz")).status_code != 503:
                assert time.monotonic() < deadline, "the gateway never turned unready"
                await asyncio.sleep(0.02)
            during = await asyncio.to_thread(invite_answer, gw)
            while (await client.get(gw.base_url + "/readyz")).status_code != 200:
                assert time.monotonic() < deadline + 20, "the gateway did not turn ready again"
                await asyncio.sleep(0.05)
        result = await sipp
        assert result.returncode == 0, result.stdout + result.stderr  # each call got our BYE
        assert during in (486, 302), during  # busy, or overflow where a 302 is supported
        assert str(response.json()["problems"]["engine"]).startswith("engine fault: echo: nan: ")
        for call_id in call_ids:
            events = await gw.events(call_id)
            error = next(e for e in events if e["type"] == "error")
            assert error["code"] == "engine_fault" and "non-finite" in error["message"]
            ended = next(e for e in events if e["type"] == "call.ended")
            assert ended["reason"] == "engine_fault", ended
        rtp_in = gw.stats.rtp_in
        after = await asyncio.to_thread(
            run_sipp, gw.sip_port, workdir, builtin="uac_pcap", service="support"
        )
        assert after.returncode == 0, after.stdout + after.stderr
        assert gw.stats.rtp_in - rtp_in >= 200
        gw.wait_idle_blocking()
    finally:
        gw.server.stop()
