"""``voicegate webhooks replay CALL_ID``: send one call's report again, by hand.

Owns: ``replay``, ``ReplayResult``. Uses the delivery state and keys of ``delivery``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

import httpx

from voicegate.events.schema import call_events_key, call_key
from voicegate.webhooks.delivery import Attempt, delivery_key, hgetall, post_report, redis_client
from voicegate.webhooks.report import build_report, encode_report, idempotency_key

__all__ = ["ReplayResult", "replay"]


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What ``replay`` did."""

    call_id: str
    url: str
    attempt: Attempt


async def replay(
    redis_url: str,
    call_id: str,
    *,
    secret: str,
    url: str = "",
    timeout_s: float = 10.0,
    retention_s: int = 7 * 24 * 3600,
) -> ReplayResult:
    """Send one call's report again, now, once (``voicegate webhooks replay``).

    The stored report (same body, same idempotency key, signed now) goes to its stored URL, or
    to ``url`` when given; a call with no stored report gets one built from its events, which
    needs ``url``. The outcome is written to the call's delivery state. Raises LookupError when
    there is nothing to send or nowhere to send it.
    """
    r = redis_client(redis_url, 2.0)
    try:
        key = delivery_key(call_id)
        state: dict[str, str] = await hgetall(r, key)
        body = state.get("body", "")
        if not body:
            call: dict[str, str] = await hgetall(r, call_key(call_id))
            raw: Any = await r.xrange(call_events_key(call_id))
            entries = [f for _, f in raw or [] if f]
            if not call and not entries:
                raise LookupError(f"call {call_id}: no report and no events in Redis")
            body = encode_report(build_report(call or {"call_id": call_id}, entries)).decode()
        target = url or state.get("url", "")
        if not target:
            raise LookupError(f"call {call_id}: no webhook URL stored; give --url")
        async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as client:
            attempt = await post_report(
                client, target, body.encode(), secret, idempotency_key(call_id)
            )
        now = f"{time.time():.3f}"
        update = {"body": body, "replayed_ts": now, "replay_result": attempt.error or "ok"}
        if attempt.ok:
            update |= {"status": "delivered", "delivered_ts": now}
        update.setdefault("url", state.get("url") or target)
        update.setdefault("key", idempotency_key(call_id))
        await r.hset(key, mapping=cast(Any, update))
        await r.expire(key, retention_s)
        return ReplayResult(call_id, target, attempt)
    finally:
        await r.aclose()
