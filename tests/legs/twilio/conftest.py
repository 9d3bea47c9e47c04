"""Fixtures for the Twilio leg's tests: a real gateway per module, a simulator per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from voicegate.legs.twilio.sim import TwilioSimulator

from ..gateway import serving
from .twilio_helpers import TwilioGateway, start_twilio_gateway


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwilioGateway]:
    yield from serving(start_twilio_gateway(redis_url, tmp_path_factory.mktemp("gw")))


@pytest.fixture
async def twilio(gateway: TwilioGateway) -> AsyncIterator[TwilioSimulator]:
    async with gateway.simulator() as sim:
        yield sim
    await gateway.wait_idle()
