"""Signing post-call webhooks, and what a receiver does to check them.

Headers of every POST (the scheme of Stripe's and Standard Webhooks', with our names):

* ``VoiceGate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`` keyed
  with ``VOICEGATE_WEBHOOK_SECRET``. ``t`` is the attempt's time, so each attempt is signed anew;
  the body is the same bytes every time.
* ``Idempotency-Key: <key>`` (also ``id`` in the body): one key per call's report, the same on
  every attempt and replay. A receiver that stores the keys it acknowledged never acts twice.

A receiver recomputes the HMAC over the raw body (before any JSON parsing), compares in
constant time, and refuses a ``t`` too far from its clock (a replayed capture). ``verify`` is
that check; README's Webhooks section shows the same in a dozen lines for receivers.
Owns: ``sign``, ``verify``, ``signed_headers`` and the header names. Standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = ["IDEMPOTENCY_HEADER", "SIGNATURE_HEADER", "sign", "signed_headers", "verify"]

SIGNATURE_HEADER = "VoiceGate-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
DEFAULT_TOLERANCE_S = 300


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``VoiceGate-Signature`` value for ``body`` at ``timestamp`` (default: now)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), b"%d." % t + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(
    body: bytes,
    header: str,
    secret: str,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` within ``tolerance_s`` of ``now``."""
    parts = dict(p.strip().split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), b"%d." % t + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(parts.get("v1", ""), expected)


def signed_headers(body: bytes, secret: str, key: str) -> dict[str, str]:
    """Every header of one attempt: content type, signature (signed now), idempotency key."""
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(body, secret),
        IDEMPOTENCY_HEADER: key,
        "User-Agent": "VoiceGate-Webhooks/1",
    }
