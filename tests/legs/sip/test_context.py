"""Per-call context on the SIP leg, the real gateway over real sockets: the INVITE's X-
headers that the persona names become the call's prompt variables (others are ignored), and
the call-start webhook (a real local HTTP server) can refuse a call (603)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from utils import Operator

from ..gateway import context_overrides, read_events, serving
from .sip_client import SipClient, sdp_offer
from .sip_helpers import SipGateway, start_sip_gateway

PERSONA = """\
description: A teller who knows the caller.
voice: NATF0
variables:
  caller_name: {default: "our customer", sip_header: X-Caller-Name}
  account_tier: {default: standard, sip_header: X-Account-Tier}
text_prompt: You are speaking with {caller_name}, a {account_tier} customer.
"""
NUMBERS = """\
default: teller
sip_users:
  teller: teller
"""


@pytest.fixture(scope="module")
def gateway(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, operator: Operator
) -> Iterator[SipGateway]:
    tmp = tmp_path_factory.mktemp("sipctx")
    yield from serving(
        start_sip_gateway(
            redis_url,
            tmp,
            **context_overrides(tmp, PERSONA, NUMBERS, operator.url, operator.secret),
        )
    )


@pytest.fixture
def media() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


async def test_named_x_headers_become_the_calls_variables(
    gateway: SipGateway, operator: Operator, media: socket.socket
) -> None:
    client = SipClient(("127.0.0.1", gateway.sip_port))
    try:
        extra = "X-Caller-Name: Bob\r\nx-account-tier: gold\r\nX-Persona-Hack: pirate\r\n"
        body = sdp_offer("127.0.0.1", media.getsockname()[1])
        client.send(client.request("INVITE", 1, body=body, extra=extra))
        assert client.recv_final(5).code == 200
        client.send(client.request("ACK", 1))
        client.send(client.request("BYE", 2))
        assert client.recv_final(3, method="BYE").code == 200
    finally:
        client.close()
    await gateway.wait_idle()
    (call,) = [r for r in operator.requests if r["variables"].get("caller_name") == "Bob"]
    events = await read_events(gateway.redis_url, call["call_id"])
    (context,) = [e for e in events if e["type"] == "call.context"]
    assert json.loads(context["sources"]) == {"caller_name": "call", "account_tier": "call"}
    assert call["variables"]["caller_name"] == "Bob" and call["variables"]["account_tier"] == "gold"
    assert "pirate" not in json.dumps(call["variables"])
    assert operator.bad_signatures == 0


def test_a_call_the_webhook_refuses_gets_603(
    gateway: SipGateway, operator: Operator, media: socket.socket
) -> None:
    client = SipClient(("127.0.0.1", gateway.sip_port))
    try:
        # the gateway's call_id for a SIP call is its own; refuse every call from now on
        operator.default = (200, b'{"action": "refuse"}', 0.0)
        client.send(
            client.request("INVITE", 1, body=sdp_offer("127.0.0.1", media.getsockname()[1]))
        )
        assert client.recv_final(5).code == 603
        client.send(client.request("ACK", 1))
    finally:
        operator.default = None
        client.close()
    assert gateway.calls.active_count == 0
