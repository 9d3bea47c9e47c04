"""Bounded request bodies for every public HTTP endpoint that takes one.

``read_body(request, limit_bytes)`` refuses a body as soon as it is known to be too large: first
by its ``Content-Length`` (nothing is read), then by the bytes actually received while it is
streamed in (a chunked body without a length), so that no more than ``limit_bytes`` is ever
held here (the server itself buffers at most one more chunk). ``request.body()`` would buffer
whatever a client sends before any check, and two 512 MB uploads cost 1.5 GB and stalled the
event loop, and every live call's audio with it.

A refusal carries ``Connection: close``: the server then stops reading the rest of the upload
instead of receiving and discarding it on the kept-alive connection.

Owns: ``read_body``, ``BodyRefused``. Imports Starlette's request and the errors, nothing else.
"""

from __future__ import annotations

from starlette.requests import Request

from voicegate.errors import LegError

__all__ = ["CLOSE_CONNECTION", "BodyRefused", "read_body"]

CLOSE_CONNECTION = {"Connection": "close"}


class BodyRefused(LegError):
    """A request body refused before it was read whole: ``status_code`` 413 (too large) or
    400 (an unreadable ``Content-Length``)."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


async def read_body(request: Request, limit_bytes: int) -> bytes:
    """The body of ``request``, refused (``BodyRefused``) once it is known to exceed
    ``limit_bytes``: from ``Content-Length`` before reading, else while it streams in."""
    announced = request.headers.get("content-length")
    if announced is not None:
        try:
            length = int(announced)
        except ValueError:
            raise BodyRefused(400, f"Content-Length {announced[:20]!r} is not a number") from None
        if length > limit_bytes:
            raise BodyRefused(413, f"body of {length} bytes announced, at most {limit_bytes}")
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > limit_bytes:
            raise BodyRefused(413, f"body longer than {limit_bytes} bytes")
        body += chunk
    return bytes(body)
