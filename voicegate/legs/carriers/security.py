"""Who may open a carrier's media socket (each one runs the GPU on the operator's bill).

* Plivo signs the WebSocket connection request (``X-Plivo-Signature-V3`` and
  ``X-Plivo-Signature-V3-Nonce``): HMAC-SHA256 keyed by the account's auth token over the URL
  Plivo called (``scheme://host/path``, then ``?`` and the query sorted by key as ``k=v`` joined
  by ``&`` when there is one), a ``.`` and the nonce; base64. The header may carry several
  signatures separated by commas (auth token rotation).
* Telnyx signs its HTTP webhooks (Ed25519) but not the media socket: the ``stream_url`` carries a
  shared secret instead (``?token=...``), compared in constant time. Any carrier may use it.

Owns: ``plivo_v3_signature``, ``check_plivo_signature``, ``check_token``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

__all__ = ["check_plivo_signature", "check_token", "plivo_v3_signature"]

PLIVO_SIGNATURE = "x-plivo-signature-v3"
PLIVO_NONCE = "x-plivo-signature-v3-nonce"


def _signed_url(url: str) -> str:
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    pairs = sorted(parse_qsl(parts.query, keep_blank_values=True))
    return f"{base}?{'&'.join(f'{k}={v}' for k, v in pairs)}" if pairs else base


def plivo_v3_signature(auth_token: str, url: str, nonce: str) -> str:
    """The ``X-Plivo-Signature-V3`` Plivo sends for a GET (the WebSocket upgrade) of ``url``."""
    message = f"{_signed_url(url)}.{nonce}".encode()
    digest = hmac.new(auth_token.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def check_plivo_signature(auth_token: str, url: str, headers: Mapping[str, str]) -> str | None:
    """None when the upgrade of ``url`` is signed by Plivo with ``auth_token``, else why not."""
    signature = headers.get(PLIVO_SIGNATURE, "")
    nonce = headers.get(PLIVO_NONCE, "")
    if not signature or not nonce:
        return "no X-Plivo-Signature-V3 and nonce headers"
    expected = plivo_v3_signature(auth_token, url, nonce)
    if any(hmac.compare_digest(expected, s.strip()) for s in signature.split(",")):
        return None
    return f"X-Plivo-Signature-V3 does not match {_signed_url(url)!r}"


def check_token(expected: str, given: str | None) -> str | None:
    """None when ``given`` is the configured stream token, else why not."""
    if not given:
        return "no token in the stream URL"
    if hmac.compare_digest(expected.encode(), given.encode()):
        return None
    return "wrong token in the stream URL"
