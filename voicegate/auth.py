"""Bearer tokens for the browser-facing APIs (WebRTC offers, the persona editor, the live feed).

Below both ``voicegate.web`` and ``voicegate.legs.webrtc``, which share it.
Owns: ``bearer_matches``. Standard library only.
"""

from __future__ import annotations

import hmac

__all__ = ["bearer_matches"]


def bearer_matches(authorization: str | None, *tokens: str) -> bool:
    """True when the ``Authorization: Bearer <token>`` header carries one of ``tokens``.

    An empty configured token never matches (an unset token refuses everyone).
    """
    if not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    given_b = given.strip().encode()
    ok = False
    for token in tokens:
        if token:
            ok |= hmac.compare_digest(given_b, token.encode())
    return ok
