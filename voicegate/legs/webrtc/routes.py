"""The WebRTC leg's HTTP surface: ``POST /webrtc/offer`` (non-trickle SDP offer/answer).

Request (``Authorization: Bearer <VOICEGATE_WEBRTC_TOKEN>``, JSON)::

    {"type": "offer", "sdp": "<the browser's offer, candidates included>", "persona": "bank_teller",
     "call_id": "wr-<32 hex>"}      # optional: lets the page subscribe to its events first

Answers ``200 {"type": "answer", "sdp": ..., "call_id": "wr-...", "session_id": ...}``;
``401`` without the token (or when none is configured, before the body is read), ``404`` for
an unknown persona, ``400`` for an unusable offer, ``413`` for a body over 65 KiB (by its
Content-Length before reading, or while it streams in), ``409`` for a call_id already in use,
``503`` when no call can be admitted (every slot taken, or draining). The call then runs until the peer connection closes or fails (see ``session``).

Owns: ``WebRtcLeg`` (sessions, counters, its ``APIRouter``). Wired by ``voicegate.app``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel, Field, ValidationError

from voicegate.auth import bearer_matches
from voicegate.contracts import (
    CallAdmission,
    CallInfo,
    EndReason,
    PersonaNames,
)
from voicegate.errors import CallRefused, InvalidStateError, NoFreeSlot, UnknownPersona
from voicegate.legs.http_body import CLOSE_CONNECTION, BodyRefused, read_body
from voicegate.legs.webrtc.ice import enable_loopback_only, rtc_configuration
from voicegate.legs.webrtc.session import SdpRejected, WebRtcSession

__all__ = ["OFFER_PATH", "Offer", "WebRtcLeg"]

log = logging.getLogger("voicegate.legs.webrtc")

OFFER_PATH = "/webrtc/offer"
MAX_OFFER_BYTES = 64 * 1024
# aiortc's receiver holds each audio frame until 4 more arrived (80 ms) just to reorder packets;
# 1 frame (20 ms) takes 40-60 ms off every reply (bench/webrtc_bench.py). None: aiortc's default.
JITTER_PREFETCH = 1


class Offer(BaseModel):
    """The body of ``POST /webrtc/offer``."""

    type: Literal["offer"] = "offer"
    sdp: str = Field(min_length=1, max_length=MAX_OFFER_BYTES)
    persona: str = Field(min_length=1, max_length=64)
    call_id: str | None = Field(None, pattern=r"^wr-[0-9a-f]{32}$")
    variables: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description="Per-call prompt variables by name (each value cleaned and cut to the "
        "persona's max_chars; names the persona does not declare are ignored).",
    )


class WebRtcLeg:
    """The WebRTC leg of one gateway: its sessions, counters and route."""

    def __init__(
        self,
        *,
        token: str,
        stun_urls: str = "",
        is_loopback_only: bool = False,
        registry: CollectorRegistry | None = None,
        calls: CallAdmission | None = None,
        personas: PersonaNames | None = None,
        media_timeout_s: float = 10.0,
        connect_timeout_s: float = 15.0,
        jitter_prefetch: int | None = JITTER_PREFETCH,
    ) -> None:
        self.token = token
        self.calls = calls
        self.personas = personas
        self.media_timeout_s = media_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.jitter_prefetch = jitter_prefetch
        self._config_urls = stun_urls
        self._is_loopback_only = is_loopback_only
        if is_loopback_only:
            enable_loopback_only()
        self.sessions: dict[str, WebRtcSession] = {}
        registry = registry if registry is not None else CollectorRegistry()
        self._m_offers = Counter(
            "voicegate_webrtc_offers_total",
            "WebRTC offers by outcome (ok, unauthorized, busy, unknown_persona, bad_offer, error).",
            ["result"],
            registry=registry,
        )
        self._m_sessions = Gauge(
            "voicegate_webrtc_sessions", "Open WebRTC peer connections.", registry=registry
        )
        self._m_ingress = Histogram(
            "voicegate_webrtc_ingress_seconds",
            "WebRTC leg ingress: RTP packet arrived -> its decoded audio handed to the Call "
            "(jitter buffer, Opus decoding, downmix).",
            buckets=(
                0.001,
                0.002,
                0.005,
                0.01,
                0.015,
                0.02,
                0.025,
                0.03,
                0.04,
                0.05,
                0.06,
                0.07,
                0.08,
                0.09,
                0.1,
                0.12,
                0.15,
                0.2,
                0.3,
                0.5,
            ),
            registry=registry,
        )
        self._m_frames = Counter(
            "voicegate_webrtc_frames_total",
            "20 ms audio frames of ended WebRTC sessions, by direction (in, out).",
            ["direction"],
            registry=registry,
        )

    def session_for_call(self, call_id: str) -> WebRtcSession | None:
        """The open session of ``call_id`` (tests, benchmarks)."""
        for session in self.sessions.values():
            if session.call_id == call_id:
                return session
        return None

    def router(self) -> APIRouter:
        router = APIRouter()
        router.add_api_route(OFFER_PATH, self.offer, methods=["POST"], include_in_schema=True)
        return router

    async def offer(self, request: Request) -> JSONResponse:
        """``POST /webrtc/offer``: answer a browser's offer and start its call."""
        if not bearer_matches(request.headers.get("authorization"), self.token):
            return self._refuse("unauthorized", 401, "a valid bearer token is required")
        try:
            body = await read_body(request, MAX_OFFER_BYTES + 1024)
        except BodyRefused as exc:
            return self._refuse("bad_offer", exc.status_code, exc.detail, is_closing=True)
        try:
            offer = Offer.model_validate_json(body)
        except ValidationError as exc:
            return self._refuse("bad_offer", 400, f"invalid offer: {exc.errors()[0]['msg']}")
        calls, personas = self.calls, self.personas
        if calls is None or not calls.can_admit():
            return self._refuse("busy", 503, "no call place is free", retry_after=True)
        if personas is not None and not personas.has(offer.persona):
            return self._refuse("unknown_persona", 404, f"no persona '{offer.persona}'")
        session_id = uuid.uuid4().hex
        call_id = offer.call_id or f"wr-{session_id}"
        session = WebRtcSession(
            session_id,
            call_id,
            rtc_configuration(self._config_urls),
            is_loopback_only=self._is_loopback_only,
            media_timeout_s=self.media_timeout_s,
            connect_timeout_s=self.connect_timeout_s,
            jitter_prefetch=self.jitter_prefetch,
            on_ingress=self._m_ingress.observe,
            on_closed=self._on_session_closed,
        )
        self.sessions[session_id] = session
        self._m_sessions.inc()
        try:
            await session.accept_offer(offer.sdp)
            info = CallInfo(
                call_id=call_id,
                leg="webrtc",
                persona=offer.persona,
                from_=request.client.host if request.client else "",
                to=offer.persona,
                leg_call_ref=session_id,
                call_data={k[:64]: v[:2000] for k, v in offer.variables.items()},
            )
            prepare = getattr(calls, "prepare_call", None)  # the call-start webhook
            if prepare is not None:
                info = await prepare(info)
            call = calls.start_call(info, session)
            session.bind(call)
            answer = await session.answer()
        except SdpRejected as exc:
            await session.close()
            return self._refuse("bad_offer", 400, str(exc))
        except CallRefused as exc:
            await session.close()
            return self._refuse("refused", 403, str(exc))
        except NoFreeSlot as exc:
            await session.close()
            return self._refuse("busy", 503, str(exc), retry_after=True)
        except UnknownPersona as exc:
            await session.close()
            return self._refuse("unknown_persona", 404, str(exc))
        except InvalidStateError as exc:  # the proposed call_id is already active
            await session.close()
            return self._refuse("bad_offer", 409, str(exc))
        except Exception as exc:  # aiortc failures
            log.exception("webrtc offer failed")
            session.end_reason = EndReason.ERROR
            await session.close()
            return self._refuse("error", 500, f"offer failed: {type(exc).__name__}")
        self._m_offers.labels("ok").inc()
        log.info("webrtc call %s: persona %s from %s", call_id, offer.persona, info.from_)
        return JSONResponse(
            {"type": "answer", "sdp": answer, "call_id": call_id, "session_id": session_id}
        )

    def _refuse(
        self,
        result: str,
        status: int,
        detail: str,
        *,
        retry_after: bool = False,
        is_closing: bool = False,
    ) -> JSONResponse:
        self._m_offers.labels(result).inc()
        if status >= 500 or status == 401:
            log.info("webrtc offer refused (%d): %s", status, detail)
        headers: dict[str, str] = {}
        if retry_after:
            headers["Retry-After"] = "5"
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if is_closing:  # the rest of a refused body is not read
            headers.update(CLOSE_CONNECTION)
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    def _on_session_closed(self, session: WebRtcSession) -> None:
        if self.sessions.pop(session.session_id, None) is not None:
            self._m_sessions.dec()
            self._m_frames.labels("in").inc(session.counters.frames_in)
            self._m_frames.labels("out").inc(session.counters.frames_out)

    async def aclose(self) -> None:
        """Close every peer connection (gateway shutdown)."""
        sessions = list(self.sessions.values())
        if sessions:
            await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        await asyncio.sleep(0)  # let the cancelled media tasks finish
