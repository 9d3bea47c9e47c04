"""Telnyx calls with Call Control configured: a persona's transfer and our hang-up go to the
carrier's REST API (a stand-in for api.telnyx.com served over a real socket records them)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.legs.carriers.conftest import TOKEN, CarrierGateway
from tests.legs.gateway import gateway_settings, serving, start_gateway
from voicegate.contracts import EndReason
from voicegate.demo import ServerThread
from voicegate.legs.carriers.sim import CarrierSimulator

API_KEY = "KEY0123"
TELLER = "+14155550100"  # bank_teller: DTMF 0 transfers to the branch, +14155550123
BRANCH = "+14155550123"


@dataclass
class FakeTelnyx:
    """Call Control v2's transfer and hangup actions; answers 422 to a transfer when told."""

    requests: list[tuple[str, str, dict[str, Any], str]] = field(default_factory=list)
    is_refusing_transfers: bool = False

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v2/calls/{call_control_id}/actions/{action}")
        async def action(call_control_id: str, action: str, request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append(
                (call_control_id, action, body, request.headers.get("authorization", ""))
            )
            if action == "transfer" and self.is_refusing_transfers:
                return JSONResponse({"errors": [{"code": "90034", "title": "no"}]}, 422)
            return JSONResponse({"data": {"result": "ok"}})

        return app


@pytest.fixture(scope="module")
def telnyx_api() -> Iterator[tuple[FakeTelnyx, str]]:
    fake = FakeTelnyx()
    server = ServerThread(fake.app())
    server.start()
    try:
        yield fake, f"http://127.0.0.1:{server.port}/v2"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gateway(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, telnyx_api: tuple[FakeTelnyx, str]
) -> Iterator[CarrierGateway]:
    settings = gateway_settings(
        redis_url,
        Path(tmp_path_factory.mktemp("gw")),
        carriers="telnyx",
        carrier_token=TOKEN,
        telnyx_api_key=API_KEY,
        telnyx_api_url=telnyx_api[1],
        webrtc_enabled=False,
    )
    yield from serving(start_gateway(CarrierGateway, settings))


async def test_a_persona_transfer_goes_through_call_control(
    gateway: CarrierGateway, telnyx_api: tuple[FakeTelnyx, str]
) -> None:
    fake, _ = telnyx_api
    fake.requests.clear()
    call = await CarrierSimulator("telnyx", gateway.ws_url, token=TOKEN).connect(to=TELLER)
    await call.play(np.zeros(4000, np.int16))
    await call.dtmf("0")
    await call.play(np.zeros(8000, np.int16))
    await call.wait_closed(5)
    assert call.report.close_code == 1000
    assert fake.requests == [(call.call_ref, "transfer", {"to": BRANCH}, f"Bearer {API_KEY}")]
    events = await gateway.events(f"telnyx-{call.call_ref}")
    transfers = [e["result"] for e in events if e["type"] == "call.transfer"]
    assert transfers == ["requested", "handed_off"]
    assert events[-1]["reason"] == "transferred"
    assert gateway.stats["telnyx"].transfers >= 1
    await gateway.wait_idle()


async def test_a_refused_transfer_keeps_the_caller_with_the_agent(
    gateway: CarrierGateway, telnyx_api: tuple[FakeTelnyx, str]
) -> None:
    fake, _ = telnyx_api
    fake.is_refusing_transfers = True
    try:
        call = await CarrierSimulator("telnyx", gateway.ws_url, token=TOKEN).connect(to=TELLER)
        await call.play(np.zeros(4000, np.int16))
        await call.dtmf("0")
        await call.play(np.zeros(8000, np.int16))
        assert not call.is_closed  # still talking to the agent
        await call.hang_up()
        events = await gateway.events(f"telnyx-{call.call_ref}")
        transfers = [e for e in events if e["type"] == "call.transfer"]
        assert [t["result"] for t in transfers] == ["requested", "failed"]
        assert "HTTP 422" in transfers[1]["detail"]
        assert events[-1]["reason"] == "caller_hangup"
    finally:
        fake.is_refusing_transfers = False
    await gateway.wait_idle()


async def test_our_hang_up_ends_the_telnyx_call_not_just_the_socket(
    gateway: CarrierGateway, telnyx_api: tuple[FakeTelnyx, str]
) -> None:
    fake, _ = telnyx_api
    fake.requests.clear()
    call = await CarrierSimulator("telnyx", gateway.ws_url, token=TOKEN).connect(to=TELLER)
    await call.play(np.zeros(4000, np.int16))
    gateway.on_loop(gateway.calls.end_all, EndReason.DRAIN, "test")
    await call.wait_closed(5)
    assert fake.requests == [(call.call_ref, "hangup", {}, f"Bearer {API_KEY}")]
    await gateway.wait_idle()
