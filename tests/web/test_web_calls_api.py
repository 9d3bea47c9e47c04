"""The live call API over real sockets: a real gateway (echo engine, real Redis), simulated
Twilio calls, and the /calls routes with and without the bearer token."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import numpy as np
import pytest

from tests.legs.gateway import REPO, read_events, serving
from tests.legs.twilio.twilio_helpers import (
    TwilioGateway,
    start_twilio_gateway,
)
from voicegate.legs.twilio.sim import PlacedCall, SimulatedStream, TwilioSimulator

TOKEN = "calls-api-token-0123456789"
DESK = "+14155550170"
HUMAN = "+14155550123"
CALLER = "+15005550006"
PERSONA = f"""description: A test desk with people to transfer to.
text_prompt: You answer the phone for a test desk.
voice: NATF0
call_flow:
  destinations:
    human: {{to: "{HUMAN}"}}
    queue: {{to: "sip:queue@pbx.example.com"}}
"""
NUMBERS = f"""default: support_agent
numbers:
  "{DESK}": api_desk
"""


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwilioGateway]:
    tmp = tmp_path_factory.mktemp("gw-calls-api")
    personas = tmp / "personas"
    shutil.copytree(REPO / "personas", personas)
    (personas / "api_desk.yaml").write_text(PERSONA)
    (tmp / "numbers.yaml").write_text(NUMBERS)
    yield from serving(
        start_twilio_gateway(
            redis_url,
            tmp,
            personas_dir=personas,
            numbers_file=tmp / "numbers.yaml",
            calls_api_token=TOKEN,
        )
    )


@pytest.fixture
async def api(gateway: TwilioGateway) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers, trust_env=False) as c:
        yield c


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


async def live_call(
    twilio: TwilioSimulator,
) -> tuple[PlacedCall, SimulatedStream, asyncio.Task[None]]:
    """A call to the desk whose caller keeps talking; (the call, its stream, the talking task)."""
    placed = await twilio.place_call(CALLER, DESK)
    stream = await twilio.open_stream(placed)
    await stream.play(tone(0.3))
    talking = asyncio.create_task(stream.play(tone(8.0)))
    return placed, stream, talking


async def test_every_route_refuses_a_request_without_the_token(gateway: TwilioGateway) -> None:
    routes = [
        ("GET", "/calls"),
        ("POST", "/calls/CA1/hangup"),
        ("POST", "/calls/CA1/transfer"),
        ("GET", "/calls/CA1/events"),
    ]
    bad = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}]
    async with httpx.AsyncClient(base_url=gateway.base_url, trust_env=False) as client:
        for method, path in routes:
            for headers in bad:
                r = await client.request(method, path, headers=headers, json={"destination": "x"})
                assert r.status_code == 401, (method, path, headers)
                assert r.headers["www-authenticate"] == "Bearer"


def test_nothing_is_read_before_the_token_is_checked(gateway: TwilioGateway) -> None:
    # a 1 GB body announced, none sent: the refusal must come without waiting for it
    with socket.create_connection(("127.0.0.1", gateway.server.port), timeout=10) as s:
        s.sendall(
            b"POST /calls/CA1/transfer HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n\r\n"
        )
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 401")


async def test_list_then_transfer_a_live_call_to_a_named_destination(
    gateway: TwilioGateway, twilio: TwilioSimulator, api: httpx.AsyncClient
) -> None:
    placed, stream, talking = await live_call(twilio)
    call_id = placed.call_sid
    try:
        listed = (await api.get("/calls")).json()["calls"]
        (mine,) = [c for c in listed if c["call_id"] == call_id]
        assert mine["leg"] == "twilio" and mine["persona"] == "api_desk"
        assert mine["caller"] == CALLER and mine["called"] == DESK
        assert mine["duration_ms"] > 0 and mine["destinations"] == ["human", "queue"]
        assert mine["is_transferring"] is False

        r = await api.post(f"/calls/{call_id}/transfer", json={"destination": "sales"})
        assert r.status_code == 409
        assert "no destination 'sales'" in r.json()["detail"]
        assert "human, queue" in r.json()["detail"]
        r = await api.post(f"/calls/{call_id}/transfer", content=b"{not json")
        assert r.status_code == 422
        r = await api.post(f"/calls/{call_id}/transfer", json={"destination": "human", "x": 1})
        assert r.status_code == 422
        r = await api.post("/calls/CAnosuchcall/transfer", json={"destination": "human"})
        assert r.status_code == 404
        r = await api.post(f"/calls/{call_id}/transfer", content=b"x" * 2000)
        assert r.status_code == 413

        r = await api.post(f"/calls/{call_id}/transfer", json={"destination": "human"})
        assert r.status_code == 202
        assert r.json() == {
            "call_id": call_id,
            "status": "transfer_requested",
            "destination": "human",
            "to": HUMAN,
        }
        await stream.wait_closed(5)
        assert (stream.report.close_code, stream.report.close_reason) == (1000, "transfer")
    finally:
        talking.cancel()
        await asyncio.gather(talking, return_exceptions=True)
    flow = await twilio.follow(placed, dial_outcome="completed")  # what Twilio does next
    assert flow.errors == [] and flow.verbs == ["Dial", "Hangup"]
    assert flow.dials[0].numbers[0][0] == HUMAN
    events = await read_events(gateway.redis_url, call_id, "call.ended")
    transfers = [e for e in events if e["type"] == "call.transfer"]
    assert transfers[0]["trigger"] == "api" and transfers[0]["destination"] == "human"
    assert transfers[0]["to"] == HUMAN
    assert [e for e in events if e["type"] == "call.ended"][0]["reason"] == "transferred"
    r = await api.post(f"/calls/{call_id}/hangup")
    assert r.status_code == 404  # no longer live here


async def test_hang_up_a_live_call_while_watching_its_events(
    gateway: TwilioGateway, twilio: TwilioSimulator, api: httpx.AsyncClient
) -> None:
    placed, stream, talking = await live_call(twilio)
    call_id = placed.call_sid
    lines: list[str] = []

    async def watch() -> None:
        async with api.stream("GET", f"/calls/{call_id}/events", timeout=15) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            async for line in r.aiter_lines():
                lines.append(line)

    watching = asyncio.create_task(watch())
    try:
        while not lines:  # subscribed
            await asyncio.sleep(0.02)
        r = await api.post(f"/calls/{call_id}/hangup")
        assert r.status_code == 202 and r.json() == {"call_id": call_id, "status": "hung_up"}
        await stream.wait_closed(5)
        await asyncio.wait_for(watching, 10)  # the feed ends by itself after call.ended
    finally:
        talking.cancel()
        watching.cancel()
        await asyncio.gather(talking, watching, return_exceptions=True)
    assert "event: call.ended" in lines
    data = [json.loads(x[6:]) for x in lines if x.startswith("data: ")]
    ended = [d for d in data if d["type"] == "call.ended"]
    assert ended and ended[0]["reason"] == "agent_hangup" and ended[0]["call_id"] == call_id
    flow = await twilio.follow(placed)
    assert flow.verbs == ["Hangup"] and flow.dials == []


async def test_openapi_documents_the_call_api_with_examples(gateway: TwilioGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.base_url, trust_env=False) as client:
        doc = (await client.get("/openapi.json")).json()
    paths = doc["paths"]
    for path in ("/calls", "/calls/{call_id}/hangup", "/calls/{call_id}/transfer"):
        assert path in paths
    assert "/calls/{call_id}/events" in paths
    transfer = paths["/calls/{call_id}/transfer"]["post"]
    body = transfer["requestBody"]["content"]["application/json"]
    assert body["example"] == {"destination": "human"}
    assert {"202", "401", "404", "409"} <= set(transfer["responses"])
    assert transfer["security"] == [{"HTTPBearer": []}]
    schemas = doc["components"]["schemas"]
    assert schemas["LiveCall"]["properties"]["call_id"]["examples"]
