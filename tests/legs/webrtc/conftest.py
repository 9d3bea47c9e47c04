"""Fixtures for the WebRTC leg's tests: ``gateway`` (module), the echo engine, 2 call places,
loopback-only WebRTC, the repo's personas."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..gateway import serving
from .webrtc_helpers import WebRtcGateway, start_webrtc_gateway


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebRtcGateway]:
    yield from serving(start_webrtc_gateway(redis_url, tmp_path_factory.mktemp("gw")))
