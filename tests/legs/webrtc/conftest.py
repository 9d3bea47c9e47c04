"""The WebRTC leg's gateways (tests/legs/gateway.py) for the leg and page tests.

``gateway`` (module): the echo engine, 2 call places, loopback-only WebRTC, the repo's personas.
``start_webrtc_gateway(redis_url, tmp, **settings)`` builds another (a private personas copy,
the tiny engine, ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..gateway import Gateway, gateway_settings, start_gateway

WEBRTC_TOKEN = "test-webrtc-token-0123456789"
EDITOR_TOKEN = "test-editor-token-0123456789"


class WebRtcGateway(Gateway):
    """The gateway with the WebRTC leg's handles; idle once its sessions are closed too."""

    @property
    def webrtc(self) -> Any:
        return self.app.state.webrtc

    def busy(self) -> str:
        if self.calls.active_count or self.webrtc.sessions:
            return (
                f"{self.calls.active_count} calls, {len(self.webrtc.sessions)} sessions still open"
            )
        return ""


def start_webrtc_gateway(redis_url: str, tmp: Path, **overrides: Any) -> WebRtcGateway:
    values: dict[str, Any] = {
        "webrtc_token": WEBRTC_TOKEN,
        "editor_token": EDITOR_TOKEN,
        "webrtc_loopback_only": True,
    }
    values.update(overrides)
    return start_gateway(WebRtcGateway, gateway_settings(redis_url, tmp, **values))


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebRtcGateway]:
    gw = start_webrtc_gateway(redis_url, tmp_path_factory.mktemp("gw"))
    try:
        yield gw
    finally:
        gw.server.stop()
