"""A real gateway (Twilio leg, echo engine, real Redis) with the viewer token for the operators'
views, and its Twilio simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from legs.gateway import serving
from legs.twilio.twilio_helpers import TwilioGateway, start_twilio_gateway

from voicegate.legs.twilio.sim import TwilioSimulator

VIEWER_TOKEN = "test-viewer-token-0123456789"
EDITOR_TOKEN = "test-editor-token-0123456789"
WEBRTC_TOKEN = "test-webrtc-token-0123456789"
VIEW = {"Authorization": f"Bearer {VIEWER_TOKEN}"}


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwilioGateway]:
    yield from serving(
        start_twilio_gateway(
            redis_url,
            tmp_path_factory.mktemp("gw-ops"),
            viewer_token=VIEWER_TOKEN,
            editor_token=EDITOR_TOKEN,
            webrtc_token=WEBRTC_TOKEN,
            webrtc_enabled=False,
        )
    )


@pytest.fixture
async def twilio(gateway: TwilioGateway) -> AsyncIterator[TwilioSimulator]:
    async with gateway.simulator() as sim:
        yield sim
    await gateway.wait_idle()
