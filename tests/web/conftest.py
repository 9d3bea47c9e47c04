"""A real gateway (Twilio leg, echo engine, real Redis) with the viewer token for the operators'
views, and its Twilio simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from legs.gateway import gateway_settings, start_gateway
from legs.twilio.twilio_helpers import AUTH_TOKEN, PUBLIC_URL, TwilioGateway

from voicegate.legs.twilio.sim import TwilioSimulator

VIEWER_TOKEN = "test-viewer-token-0123456789"
EDITOR_TOKEN = "test-editor-token-0123456789"
WEBRTC_TOKEN = "test-webrtc-token-0123456789"
VIEW = {"Authorization": f"Bearer {VIEWER_TOKEN}"}


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwilioGateway]:
    settings = gateway_settings(
        redis_url,
        tmp_path_factory.mktemp("gw-ops"),
        public_url=PUBLIC_URL,
        twilio_auth_token=AUTH_TOKEN,
        viewer_token=VIEWER_TOKEN,
        editor_token=EDITOR_TOKEN,
        webrtc_token=WEBRTC_TOKEN,
        webrtc_enabled=False,
    )
    gw = start_gateway(TwilioGateway, settings)
    try:
        yield gw
    finally:
        gw.server.stop()


@pytest.fixture
async def twilio(gateway: TwilioGateway) -> AsyncIterator[TwilioSimulator]:
    async with gateway.simulator() as sim:
        yield sim
    await gateway.wait_idle()
