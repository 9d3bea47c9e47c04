"""Telnyx and Plivo calls end to end: each carrier's simulator (its documented protocol over a
real WebSocket) against the real gateway, echo engine, events read back from Redis."""

from __future__ import annotations

import numpy as np
import pytest

from tests.legs.carriers.conftest import PLIVO_AUTH_TOKEN, PUBLIC, TOKEN, CarrierGateway
from voicegate.audio.samples import caller_speech_ms, load_caller
from voicegate.legs.carriers.sim import CarrierSimulator

CARRIERS = ["telnyx", "plivo", "exotel", "vonage"]
TELLER = "+14155550100"  # numbers.yaml: bank_teller (DTMF 0 transfers)
SUPPORT = "+14155550101"


def sim(gateway: CarrierGateway, carrier: str, **kw: str) -> CarrierSimulator:
    args = {
        "token": TOKEN,
        "plivo_auth_token": PLIVO_AUTH_TOKEN,
        "public_url": "wss://gw.example.com",
    }
    args.update(kw)
    return CarrierSimulator(carrier, gateway.ws_url, **args)


def tone(seconds: float, hz: float = 440.0, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(int(8000 * seconds)) / 8000
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_a_call_is_routed_answered_and_logged(gateway: CarrierGateway, carrier: str) -> None:
    call = await sim(gateway, carrier).connect(to=SUPPORT, from_="+15550100")
    await call.play(tone(1.5))
    await call.hang_up()
    # the echo engine sent the tone back through the carrier's own messages
    assert call.report.protocol_errors == []
    assert call.report.media_messages >= 10
    heard = call.heard_pcm()
    assert np.abs(heard.astype(np.int32)).max() > 2000
    call_id = f"{carrier}-{call.call_ref.replace('v3:', 'v3:')}"
    events = await gateway.events(call_id)
    assert events[0]["type"] == "call.started"
    assert events[0]["persona"] == "support_agent" and events[0]["to"] == SUPPORT
    assert {e["leg"] for e in events} == {carrier}
    assert events[-1]["reason"] == "caller_hangup"
    await gateway.wait_idle()


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_dtmf_runs_the_persona_call_flow(gateway: CarrierGateway, carrier: str) -> None:
    # bank_teller: 0 transfers; these legs cannot transfer yet, so the Call ends the call
    call = await sim(gateway, carrier).connect(to=TELLER)
    await call.play(np.zeros(4000, np.int16))
    await call.dtmf("0")
    await call.play(np.zeros(8000, np.int16))
    await call.wait_closed(5)
    events = await gateway.events(f"{carrier}-{call.call_ref}")
    assert [e["digit"] for e in events if e["type"] == "dtmf"] == ["0"]
    transfers = [e for e in events if e["type"] == "call.transfer"]
    assert [t["result"] for t in transfers] == ["requested", "unsupported"]
    assert events[-1]["type"] == "call.ended"
    await gateway.wait_idle()


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_a_barge_in_sends_the_carriers_clear(gateway: CarrierGateway, carrier: str) -> None:
    # as the Twilio leg's test: A, a 2 kHz tone, then B over the agent's echo of the tone
    speech = load_caller(8000)
    spans = caller_speech_ms()
    a = speech[: spans[0][1] * 8]
    b = speech[spans[1][0] * 8 : spans[1][1] * 8 + 800]
    script = np.concatenate([a, tone(0.4, hz=2000, amplitude=3000), b, np.zeros(8000, np.int16)])
    call = await sim(gateway, carrier).connect(to=SUPPORT)
    await call.play(script)
    await call.hang_up()
    events = await gateway.events(f"{carrier}-{call.call_ref}")
    bargeins = [e for e in events if e["type"] == "bargein"]
    assert bargeins and call.report.clears >= 1
    assert call.report.protocol_errors == []
    await gateway.wait_idle()


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_an_unauthenticated_stream_is_refused(gateway: CarrierGateway, carrier: str) -> None:
    refused = gateway.stats[carrier].streams_refused_auth
    call = await sim(gateway, carrier, token="wrong", plivo_auth_token="wrong").connect(to=SUPPORT)
    await call.wait_closed(5)
    assert call.report.close_code == 1008
    assert gateway.stats[carrier].streams_refused_auth == refused + 1
    assert gateway.calls.active_count == 0


async def test_a_plivo_upgrade_signed_for_another_url_is_refused(gateway: CarrierGateway) -> None:
    call = await sim(gateway, "plivo", public_url="wss://evil.example.com").connect(to=SUPPORT)
    await call.wait_closed(5)
    assert call.report.close_code == 1008


async def test_a_telnyx_start_with_a_wrong_rate_is_refused(gateway: CarrierGateway) -> None:
    call = await sim(gateway, "telnyx").connect(send_start=False)
    await call.send_json(
        {
            "event": "start",
            "stream_id": "s1",
            "start": {
                "call_control_id": "c1",
                "media_format": {"encoding": "PCMU", "sample_rate": 16000},
            },
        }
    )
    await call.wait_closed(5)
    assert call.report.close_code == 1008
    assert gateway.calls.active_count == 0


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_malformed_messages_do_not_end_the_call(
    gateway: CarrierGateway, carrier: str
) -> None:
    call = await sim(gateway, carrier).connect(to=SUPPORT)
    malformed = gateway.stats[carrier].malformed_messages
    await call.send_text("{not json")
    await call.send_text('{"event": "media", "media": {"payload": "***"}}')
    await call.play(tone(0.6))
    await call.hang_up()
    assert gateway.stats[carrier].malformed_messages >= malformed + 2
    assert call.report.media_messages > 0  # the call went on
    await gateway.wait_idle()


async def test_metrics_have_the_carrier_counters(gateway: CarrierGateway) -> None:
    import httpx

    async with httpx.AsyncClient(trust_env=False) as client:
        text = (await client.get(gateway.base_url + "/metrics")).text
    for carrier in CARRIERS:
        assert f'voicegate_carrier_streams_started_total{{carrier="{carrier}"}}' in text
    assert PUBLIC  # the public URL the Plivo signature is checked against


async def test_a_vonage_stream_of_another_audio_format_is_refused(gateway: CarrierGateway) -> None:
    call = await sim(gateway, "vonage").connect(send_start=False)
    await call.send_json(
        {"event": "websocket:connected", "content-type": "audio/mulaw", "uuid": "u1"}
    )
    await call.wait_closed(5)
    assert call.report.close_code == 1008
    assert gateway.calls.active_count == 0


async def test_vonage_gets_only_20_ms_frames_at_16_khz(gateway: CarrierGateway) -> None:
    call = await sim(gateway, "vonage").connect(to=SUPPORT)
    await call.play(tone(1.0))
    await call.hang_up()
    assert call.report.media_messages > 10
    assert call.report.protocol_errors == []  # the simulator flags any frame not 640 bytes
    await gateway.wait_idle()
