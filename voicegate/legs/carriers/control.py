"""Call control over a carrier's REST API, for what a media socket cannot do: hand the caller to
a number (transfer) and hang up. Telnyx only for now (Call Control v2: ``POST
/calls/{call_control_id}/actions/transfer`` {``to``} and ``.../actions/hangup``, bearer API key);
the other carriers' legs report a transfer ``unsupported`` and hang up by closing the socket.

Owns: ``CarrierControl``, ``TelnyxControl``.
"""

from __future__ import annotations

import logging
from typing import Protocol
from urllib.parse import quote

import httpx

from voicegate.http_out import post_bounded

__all__ = ["CarrierControl", "TelnyxControl"]

log = logging.getLogger("voicegate.legs.carriers")

TELNYX_API_URL = "https://api.telnyx.com/v2"
REQUEST_TIMEOUT_S = 3.0
TELNYX_CALL_ENDED = "90018"  # "Call has already ended"


class CarrierControl(Protocol):
    """A carrier's REST call control for one gateway (shared by its calls)."""

    async def transfer(self, call_ref: str, to: str) -> str | None:
        """Hand the call on to ``to``; None when the carrier took it, else why not."""
        ...

    async def hang_up(self, call_ref: str) -> str | None:
        """End the call; None when done (or it had ended), else why not."""
        ...

    async def aclose(self) -> None: ...


ERROR_TEXT_BYTES = 1024  # of a failed request's answer, for its error message


class TelnyxControl:
    """Telnyx Call Control v2 with an API key (``api_url``: a test's stand-in)."""

    def __init__(self, api_key: str, api_url: str = TELNYX_API_URL) -> None:
        self._http = httpx.AsyncClient(
            base_url=api_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            timeout=REQUEST_TIMEOUT_S,
            trust_env=False,
        )

    async def _action(self, call_ref: str, action: str, body: dict[str, str]) -> str | None:
        try:
            path = f"/calls/{quote(call_ref, safe=':')}/actions/{action}"
            response = await post_bounded(self._http, path, limit=ERROR_TEXT_BYTES, json=body)
        except httpx.HTTPError as exc:
            return f"telnyx {action}: {type(exc).__name__}: {exc}"
        if response.status_code == 200:
            return None
        text = response.text[:300]
        if action == "hangup" and response.status_code == 422 and TELNYX_CALL_ENDED in text:
            return None
        return f"telnyx {action}: HTTP {response.status_code}: {text}"

    async def transfer(self, call_ref: str, to: str) -> str | None:
        return await self._action(call_ref, "transfer", {"to": to})

    async def hang_up(self, call_ref: str) -> str | None:
        return await self._action(call_ref, "hangup", {})

    async def aclose(self) -> None:
        await self._http.aclose()
