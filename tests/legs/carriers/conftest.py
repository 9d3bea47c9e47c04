"""Fixtures for the carrier legs' tests: one real gateway per module with Telnyx and Plivo on
(echo engine, the repository's personas and numbers, a real Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.legs.gateway import Gateway, gateway_settings, serving, start_gateway

TOKEN = "carrier-secret"
PLIVO_AUTH_TOKEN = "plivo-auth-token"
PUBLIC = "https://gw.example.com"


class CarrierGateway(Gateway):
    @property
    def ws_url(self) -> str:
        return "ws" + self.base_url[len("http") :]

    @property
    def stats(self) -> Any:
        return self.app.state.carriers.stats


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CarrierGateway]:
    settings = gateway_settings(
        redis_url,
        tmp_path_factory.mktemp("gw"),
        carriers="telnyx,plivo,exotel,vonage",
        carrier_token=TOKEN,
        plivo_auth_token=PLIVO_AUTH_TOKEN,
        public_url=PUBLIC,
        webrtc_enabled=False,
    )
    yield from serving(start_gateway(CarrierGateway, settings))
