"""Small pieces every media-stream WebSocket leg (Twilio, the carriers) uses the same way.

Owns: frame_of, close_quietly, resolve. Imports starlette's WebSocket types only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

__all__ = ["close_quietly", "frame_of", "resolve"]

MAX_CLOSE_REASON_CHARS = 120  # a close frame's reason must fit its 125-byte payload


def frame_of(message: Mapping[str, Any], error: type[Exception]) -> str | bytes:
    """The text or bytes of an ASGI ``websocket.receive`` message; ``error`` otherwise."""
    text = message.get("text")
    if isinstance(text, str):
        return text
    data = message.get("bytes")
    if isinstance(data, bytes):
        return data
    raise error(f"expected a text or binary frame, got ASGI message {message.get('type')!r}")


async def close_quietly(ws: WebSocket, code: int, reason: str) -> None:
    """Close with ``code`` unless either side is gone already (then nothing to say)."""
    if (
        ws.application_state == WebSocketState.DISCONNECTED
        or ws.client_state == WebSocketState.DISCONNECTED
    ):
        return
    with contextlib.suppress(Exception):  # the peer may be gone by now
        await ws.close(code, reason[:MAX_CLOSE_REASON_CHARS])


def resolve(future: asyncio.Future[None]) -> None:
    """Wake whoever awaits ``future`` (a timer's callback; once)."""
    if not future.done():
        future.set_result(None)
