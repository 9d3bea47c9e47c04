"""Per-call context on the WebRTC leg, the real gateway with an aiortc caller: the offer's
``variables`` become the call's prompt variables, and the call-start webhook (a real local
HTTP server) can refuse a call (403)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
from utils import Operator

from voicegate.legs.webrtc.sim import WebRtcCaller

from ..gateway import context_overrides, serving
from .webrtc_helpers import WEBRTC_TOKEN, WebRtcGateway, start_webrtc_gateway

PERSONA = """\
description: A teller who knows the caller.
voice: NATF0
variables:
  caller_name: {default: "our customer"}
text_prompt: You are speaking with {caller_name}.
"""
NUMBERS = "default: teller\n"
SILENCE = np.zeros(48000, dtype=np.int16)


@pytest.fixture(scope="module")
def gateway(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, operator: Operator
) -> Iterator[WebRtcGateway]:
    tmp = tmp_path_factory.mktemp("rtcctx")
    yield from serving(
        start_webrtc_gateway(
            redis_url,
            tmp,
            **context_overrides(tmp, PERSONA, NUMBERS, operator.url, operator.secret),
        )
    )


async def test_the_offers_variables_become_the_calls(
    gateway: WebRtcGateway, operator: Operator
) -> None:
    async with WebRtcCaller(gateway.base_url, WEBRTC_TOKEN, SILENCE) as caller:
        await caller.call("teller", variables={"caller_name": "Dana", "unknown": "x"})
        await caller.wait_received(ms=400)
    await gateway.wait_idle()
    events = await gateway.events(caller.call_id)
    (context,) = [e for e in events if e["type"] == "call.context"]
    assert json.loads(context["sources"]) == {"caller_name": "call"}
    (request,) = [r for r in operator.requests if r["call_id"] == caller.call_id]
    assert request["variables"]["caller_name"] == "Dana" and "unknown" not in request["variables"]


async def test_a_call_the_webhook_refuses_gets_403(
    gateway: WebRtcGateway, operator: Operator
) -> None:
    operator.default = (200, b'{"action": "refuse"}', 0.0)
    try:
        async with WebRtcCaller(gateway.base_url, WEBRTC_TOKEN, SILENCE) as caller:
            resp = await caller.offer("teller")
            assert resp.status_code == 403 and "refuse" in resp.text
    finally:
        operator.default = None
    assert gateway.calls.active_count == 0 and not gateway.webrtc.sessions
