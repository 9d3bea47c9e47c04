"""The WebRTC leg's gateway (tests/legs/gateway.py) for the leg and page tests: tokens set,
loopback-only WebRTC. ``start_webrtc_gateway(redis_url, tmp, **settings)`` builds one (a
private personas copy, the tiny engine, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
