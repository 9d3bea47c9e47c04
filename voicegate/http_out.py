"""Bounded answers from the HTTP endpoints the gateway calls (operators' webhooks, carriers' APIs).

``post_bounded`` streams the answer and keeps at most ``limit`` bytes of it: an endpoint outside
the gateway (a misconfigured URL, a proxy's error page, a hostile server) cannot make it buffer
an unbounded body within the request's timeout, as ``response.content`` / ``.text`` would.

Owns: ``post_bounded``, ``BoundedAnswer``. Imports httpx only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["BoundedAnswer", "post_bounded"]


@dataclass(frozen=True, slots=True)
class BoundedAnswer:
    """An answer's status, headers and its first ``limit`` bytes (``is_truncated``: more came)."""

    status_code: int
    headers: httpx.Headers
    body: bytes
    is_truncated: bool

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


async def post_bounded(
    client: httpx.AsyncClient, url: str, *, limit: int, **kwargs: Any
) -> BoundedAnswer:
    """POST and read at most ``limit`` bytes of the answer (the rest is never read)."""
    async with client.stream("POST", url, **kwargs) as response:
        body = bytearray()
        is_truncated = False
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                is_truncated = True
                del body[limit:]
                break
        return BoundedAnswer(response.status_code, response.headers, bytes(body), is_truncated)
