"""Fixtures for the SIP leg's tests: a real gateway with SIP on free ports, per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..gateway import serving
from .sip_helpers import SipGateway, start_sip_gateway


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SipGateway]:
    yield from serving(
        start_sip_gateway(
            redis_url,
            tmp_path_factory.mktemp("sipgw"),
            sip_answer_delay_ms=300,
            sip_allow="127.0.0.1/32,127.0.0.5/32",
            sip_invite_burst=12,
            sip_invite_rate_per_s=0.1,
        )
    )
