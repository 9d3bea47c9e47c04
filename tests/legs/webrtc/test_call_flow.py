"""A browser call cannot be handed to a phone: a persona's transfer ends it with the reason, and
the transfer shows in its events (the page lists them); hang-up rules work as on the phones."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from voicegate.legs.webrtc.sim import WebRtcCaller

from ..gateway import REPO, serving
from .webrtc_helpers import WEBRTC_TOKEN, WebRtcGateway, start_webrtc_gateway

FLOW = """
call_flow:
  destinations:
    branch: {to: "+14155550123"}
  limits:
    silence_timeout: {transfer: branch}
"""


@pytest.fixture
def flow_gateway(redis_url: str, tmp_path: Path) -> Iterator[WebRtcGateway]:
    personas = tmp_path / "personas"
    shutil.copytree(REPO / "personas", personas)
    teller = personas / "bank_teller.yaml"
    text = teller.read_text().replace("silence_timeout_s: 30", "silence_timeout_s: 3")
    teller.write_text(text.split("\ncall_flow:")[0] + FLOW)
    yield from serving(start_webrtc_gateway(redis_url, tmp_path, personas_dir=personas))


async def test_a_transfer_on_a_browser_call_ends_it_and_says_why(
    flow_gateway: WebRtcGateway,
) -> None:
    silence = np.zeros(48000 * 6, dtype=np.int16)  # the caller says nothing
    async with WebRtcCaller(flow_gateway.base_url, WEBRTC_TOKEN, silence) as caller:
        await caller.call("bank_teller")
        events = await flow_gateway.events(caller.call_id, timeout_s=15)
    transfers = [e for e in events if e["type"] == "call.transfer"]
    assert [(e["trigger"], e["result"]) for e in transfers] == [
        ("silence_timeout", "requested"),
        ("silence_timeout", "unsupported"),
    ]
    assert transfers[0]["to"] == "+14155550123" and transfers[0]["destination"] == "branch"
    ended = events[-1]
    assert ended["type"] == "call.ended" and ended["reason"] == "agent_hangup"
    assert "cannot be transferred" in ended["detail"]
    assert 3000 <= int(ended["duration_ms"]) < 6000
