"""The operators' APIs behind the page's live calls, call timeline and persona comparison.

All need the viewer token (``VOICEGATE_VIEWER_TOKEN``, read-only) or the editor token:

* ``GET /api/calls/live``: every live call of this gateway (``call_id``, ``leg``, ``persona``,
  ``from``, ``to``, ``duration_ms``, ``state``: who speaks now, or ``transferring``, and
  ``bargeins``); the page polls it.
* ``GET /api/calls/<call_id>/events``: the call's events read back from Redis (its stream), as
  the live feed sends them, and ``live`` (whether the call runs here now). A live call's view
  follows ``GET /api/events?call_id=``, reads this, and drops what it already has (by id). With
  Redis down a live call answers no events and ``history_error``; an ended one 503.
* ``GET /api/calls?since_ms=&until_ms=&persona=&number=&reason=&limit=``: calls that ended in
  the period (default the last 24 h), newest first, filtered.
* ``GET /api/compare?since_ms=&until_ms=``: per persona over the period (default 7 days), the
  distributions of ``history.CallHistory.compare``; the page draws them.

Owns: ``operator_router``. Imports web.history and the auth check; the running parts through
``request.app.state.parts``.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from voicegate.auth import bearer_matches
from voicegate.config import Settings
from voicegate.contracts import CALL_ID_PATTERN
from voicegate.web.history import CallHistory, HistoryError, Period

__all__ = ["operator_router"]

_CALL_ID_RE = re.compile(CALL_ID_PATTERN)
LIST_DEFAULT_S = 24 * 3600
COMPARE_DEFAULT_S = 7 * 24 * 3600
MAX_LIST = 1000
MAX_FILTER_CHARS = 64


def _refused(status: int, detail: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def operator_router(settings: Settings, history: CallHistory) -> APIRouter:
    """The operators' read-only APIs (see the module docstring)."""
    router = APIRouter()

    def may_view(request: Request) -> bool:
        auth = request.headers.get("authorization")
        return bearer_matches(auth, settings.viewer_token, settings.editor_token)

    def refusal(request: Request) -> JSONResponse | None:
        if not may_view(request):
            return _refused(401, "a valid bearer token is required (viewer or editor)")
        if getattr(request.app.state, "parts", None) is None:
            return _refused(503, "the gateway is starting")
        return None

    @router.get("/api/calls/live")
    async def live_calls(request: Request) -> JSONResponse:
        refused = refusal(request)
        if refused is not None:
            return refused
        rows: list[dict[str, Any]] = []
        for call in request.app.state.parts.calls.calls():
            info = call.info
            rows.append(
                {
                    "call_id": info.call_id,
                    "leg": info.leg,
                    "persona": info.persona,
                    "from": info.from_,
                    "to": info.to,
                    "duration_ms": call.now_ms,
                    "state": call.activity,
                    "bargeins": len(call.bargeins),
                }
            )
        rows.sort(key=lambda r: -int(r["duration_ms"]))
        return JSONResponse({"calls": rows})

    @router.get("/api/calls/{call_id}/events")
    async def call_events(request: Request, call_id: str) -> JSONResponse:
        refused = refusal(request)
        if refused is not None:
            return refused
        if _CALL_ID_RE.match(call_id) is None:
            return _refused(400, "invalid call_id")
        is_live = request.app.state.parts.calls.get(call_id) is not None
        problem = ""
        try:
            events = await history.events(call_id)
        except HistoryError as exc:
            if not is_live:
                return _refused(503, str(exc))
            # a live call is still worth watching: its events from now on come from the feed
            events, problem = [], str(exc)
        if not events and not is_live:
            return _refused(404, f"no events for call {call_id} (unknown or past retention)")
        body: dict[str, Any] = {"call_id": call_id, "live": is_live, "events": events}
        if problem:
            body["history_error"] = problem
        return JSONResponse(body)

    @router.get("/api/calls")
    async def ended_calls(
        request: Request,
        since_ms: int | None = None,
        until_ms: int | None = None,
        persona: str = "",
        number: str = "",
        reason: str = "",
        limit: int = 200,
    ) -> JSONResponse:
        refused = refusal(request)
        if refused is not None:
            return refused
        if max(len(persona), len(number), len(reason)) > MAX_FILTER_CHARS:
            return _refused(400, f"a filter may have at most {MAX_FILTER_CHARS} characters")
        if not 1 <= limit <= MAX_LIST:
            return _refused(400, f"limit must be 1..{MAX_LIST}")
        try:
            period = Period.parse(since_ms, until_ms, LIST_DEFAULT_S)
        except ValueError as exc:
            return _refused(400, str(exc))
        try:
            body = await history.ended_calls(
                period, persona=persona, number=number, reason=reason, limit=limit
            )
        except HistoryError as exc:
            return _refused(503, str(exc))
        return JSONResponse(body)

    @router.get("/api/compare")
    async def compare(
        request: Request, since_ms: int | None = None, until_ms: int | None = None
    ) -> JSONResponse:
        refused = refusal(request)
        if refused is not None:
            return refused
        try:
            period = Period.parse(since_ms, until_ms, COMPARE_DEFAULT_S)
        except ValueError as exc:
            return _refused(400, str(exc))
        try:
            body = await history.compare(period)
        except HistoryError as exc:
            return _refused(503, str(exc))
        return JSONResponse(body)

    return router
