"""Fixtures for the Twilio leg's tests: a real gateway per module, a simulator per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from voicegate.legs.twilio.sim import TwilioSimulator

from .twilio_helpers import TwilioGateway, start_twilio_gateway


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwilioGateway]:
    gw = start_twilio_gateway(redis_url, tmp_path_factory.mktemp("gw"))
    try:
        yield gw
    finally:
        gw.server.stop()


@pytest.fixture
async def twilio(gateway: TwilioGateway) -> AsyncIterator[TwilioSimulator]:
    async with gateway.simulator() as sim:
        yield sim
    await gateway.wait_idle()
