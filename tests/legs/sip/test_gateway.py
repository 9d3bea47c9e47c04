"""The SIP leg inside the real gateway (CallManager, echo engine, Redis): admission and drain."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from voicegate.legs.sip.message import SipRequest, build_response, parse_message

from ..gateway import MAX_CALLS, read_events
from .sip_client import SipClient, sdp_offer
from .sip_helpers import SipGateway, start_sip_gateway


def answer_call(gateway: SipGateway, media: socket.socket) -> SipClient:
    client = SipClient(("127.0.0.1", gateway.sip_port))
    body = sdp_offer("127.0.0.1", media.getsockname()[1])
    client.send(client.request("INVITE", 1, body=body))
    assert client.recv_final(5).code == 200
    client.send(client.request("ACK", 1))
    return client


@pytest.fixture
def media() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def test_486_when_every_call_place_is_taken(gateway: SipGateway, media: socket.socket) -> None:
    clients = [answer_call(gateway, media) for _ in range(MAX_CALLS)]
    try:
        assert gateway.calls.active_count == MAX_CALLS
        extra = SipClient(("127.0.0.1", gateway.sip_port))
        extra.send(extra.request("INVITE", 1, body=sdp_offer("127.0.0.1", media.getsockname()[1])))
        busy = extra.recv_final(3)
        assert busy.code == 486
        extra.send(extra.request("ACK", 1))
        extra.close()
    finally:
        for client in clients:
            client.send(client.request("BYE", 2))
            assert client.recv_final(3, method="BYE").code == 200
            client.close()
    gateway.wait_idle_blocking()
    metrics = httpx.get(gateway.server.base_url + "/metrics", trust_env=False).text
    assert "voicegate_sip_invites_busy_total" in metrics
    line = next(
        line for line in metrics.splitlines() if line.startswith("voicegate_sip_invites_busy_total")
    )
    assert float(line.split()[-1]) >= 1


async def test_drain_ends_sip_calls_with_bye_and_refuses_new_ones(
    redis_url: str, tmp_path: Path, media: socket.socket
) -> None:
    gateway = start_sip_gateway(redis_url, tmp_path)
    try:
        client = await asyncio.to_thread(answer_call, gateway, media)
        (call_id,) = gateway.sip_call_ids()
        loop: asyncio.AbstractEventLoop = gateway.app.state.loop
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(gateway.calls.drain(0), loop))
        client.sock.settimeout(3)
        while True:
            data, _ = await asyncio.to_thread(client.sock.recvfrom, 65535)
            message = parse_message(data)
            if isinstance(message, SipRequest) and message.method == "BYE":
                break
        client.sock.sendto(build_response(message, 200), ("127.0.0.1", gateway.sip_port))
        events = await read_events(redis_url, call_id)
        ended = next(e for e in events if e["type"] == "call.ended")
        assert ended["reason"] == "drain"
        late = SipClient(("127.0.0.1", gateway.sip_port))
        late.send(late.request("INVITE", 1, body=sdp_offer("127.0.0.1", media.getsockname()[1])))
        assert (await asyncio.to_thread(late.recv_final, 3)).code == 486
        late.close()
        client.close()
    finally:
        gateway.server.stop()
