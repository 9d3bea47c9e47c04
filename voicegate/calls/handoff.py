"""Warm handoff: before a caller is handed to a person, the person's desktop gets the call so far.

When a transfer's destination has a ``handoff_url``, the gateway POSTs a JSON handoff document
there (call id, number called, caller, persona, why and what triggered it, the transcript so
far with what the caller heard and what was cut off by an interruption, the call's counters)
and then asks the leg to transfer. The transfer never waits long for it: the POST has a short
bound (``timeout_s``); a slow or broken endpoint is logged and the transfer goes ahead. The
handoff id in the document is the one that travels with the call (SIP: an ``X-Handoff-Id``
header through the Refer-To URI or ``<Sip>`` URI; Twilio: the whisper URL of ``<Number>``), so
the desktop can match the ringing call to the document.

Signature (like Stripe's and the Standard Webhooks scheme): header
``VoiceGate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" with the
shared secret>``. A receiver recomputes the HMAC over the raw body with its copy of
``VOICEGATE_HANDOFF_SECRET``, compares in constant time, and refuses a ``t`` older than a few
minutes (replays). See telephony/README.md for a worked example. It is the post-call
webhooks' scheme, and their code: ``sign`` and ``verify`` are ``voicegate.webhooks.signing``'s.

Owns: ``handoff_document``, ``HandoffPoster``. Imports httpx (lazily), the contracts and the
webhooks' signing; runs on the event loop (``post`` is a coroutine; never blocks it).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from voicegate.contracts import CallInfo, TransferTarget
from voicegate.webhooks.signing import SIGNATURE_HEADER, sign, verify

__all__ = ["SIGNATURE_HEADER", "HandoffPoster", "handoff_document", "sign", "verify"]

log = logging.getLogger("voicegate.calls.handoff")

DEFAULT_TIMEOUT_S = 1.5
MAX_TRANSCRIPT_SEGMENTS = 200


def handoff_document(
    info: CallInfo,
    target: TransferTarget,
    *,
    trigger: str,
    trigger_detail: str,
    call_ms: int,
    segments: Sequence[Any],
    counters: dict[str, int],
    caller_segments: Sequence[Any] = (),
) -> dict[str, Any]:
    """The JSON document a destination's desktop gets (``segments``: AgentSegment-like;
    ``caller_segments``: the caller's final CallerSegment-likes when the engine runs a caller
    STT, merged in by start time)."""
    transcript: list[dict[str, Any]] = [
        {
            "speaker": "agent",
            "text": seg.text,
            "start_ms": seg.start_ms,
            "end_ms": seg.end_ms,
            "heard": seg.is_heard,
            "cut_text": seg.cut_text,
        }
        for seg in segments
    ]
    if caller_segments:
        transcript += [
            {"speaker": "caller", "text": s.text, "start_ms": s.start_ms, "end_ms": s.end_ms}
            for s in caller_segments
        ]
        transcript.sort(key=lambda entry: int(entry["start_ms"]))
    transcript = transcript[-MAX_TRANSCRIPT_SEGMENTS:]
    return {
        "type": "voicegate.handoff",
        "handoff_id": target.handoff_id,
        "call_id": info.call_id,
        "leg": info.leg,
        "called": info.to,
        "caller": info.from_,
        "persona": info.persona,
        "destination": target.destination,
        "to": target.to,
        "reason": {"trigger": trigger, "detail": trigger_detail},
        "call_ms": call_ms,
        "transcript": transcript,
        "counters": counters,
    }


class HandoffPoster:
    """POSTs handoff documents with a short bound; ``start`` never blocks the caller.

    ``start(url, document, then)`` schedules the POST on the running loop and calls ``then()``
    when it answered, failed or ran out of time, whichever comes first.
    """

    def __init__(self, secret: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.secret = secret
        self.timeout_s = timeout_s
        self.sent = 0
        self.failed = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, url: str, document: dict[str, Any], then: Callable[[], None]) -> None:
        task = asyncio.get_running_loop().create_task(self._post_then(url, document, then))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_then(
        self, url: str, document: dict[str, Any], then: Callable[[], None]
    ) -> None:
        try:
            await asyncio.wait_for(self.post(url, document), self.timeout_s)
        except Exception as exc:  # slow or down: the transfer goes ahead regardless
            self.failed += 1
            log.warning(
                "handoff %s to %s failed (%s); transferring anyway",
                document.get("handoff_id"),
                url,
                exc.__class__.__name__ if isinstance(exc, TimeoutError) else exc,
            )
        finally:
            then()

    async def post(self, url: str, document: dict[str, Any]) -> None:
        """One signed POST; raises on a transport error or a non-2xx answer."""
        import httpx

        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, self.secret)}
        async with httpx.AsyncClient(timeout=self.timeout_s, trust_env=False) as client:
            response = await client.post(url, content=body, headers=headers)
        if not 200 <= response.status_code < 300:
            raise RuntimeError(f"handoff endpoint answered {response.status_code}")
        self.sent += 1

    async def aclose(self) -> None:
        """Let POSTs in flight finish (each is bounded by ``timeout_s``)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
