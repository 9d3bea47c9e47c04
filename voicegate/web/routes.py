"""The gateway's page and the small APIs behind it.

* ``GET /``: the page (plain HTML + JS from this folder, no build step); ``GET /static/<file>``.
* ``GET /api/personas``: names and descriptions for the call picker (webrtc or editor token).
* ``GET /api/events?call_id=``: server-sent events fed by ``EventLog.subscribe`` (the same events
  the Redis writer gets): ``event: <type>`` + ``data: <JSON>`` (webrtc or editor token; without
  ``call_id``, every call's events, editor or viewer token only). A call's feed ends after its
  ``call.ended``. The page
  reads it with ``fetch`` so that the token travels in the Authorization header, not the URL.
* ``GET /api/personas/<name>``: the YAML text (editor token).
* ``POST /api/personas/<name>/validate``: YAML text in, ``{"ok", "problems": [...]}`` out, the
  same messages as ``voicegate personas validate`` (editor token).
* ``PUT /api/personas/<name>``: save (editor token): ``200`` saved and loaded, ``422`` with the
  problems when it has an error or the gateway refused it (the file is then unchanged).

The routes read the running parts from ``request.app.state.parts`` (``503`` before start-up).
Owns: ``web_router``. Imports events, personas, contracts and voicegate.auth's bearer check.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from voicegate.auth import bearer_matches
from voicegate.config import Settings
from voicegate.contracts import CALL_ID_PATTERN, TokenCounter
from voicegate.events.fanout import Subscription
from voicegate.legs.http_body import BodyRefused, read_body
from voicegate.personas.problems import Problem, has_errors
from voicegate.personas.tokens import estimate_tokens
from voicegate.web.editor import MAX_PERSONA_BYTES, PersonaEditor, check_name
from voicegate.web.history import event_json

__all__ = ["STATIC_DIR", "event_json", "event_stream_response", "web_router"]

log = logging.getLogger("voicegate.web")

STATIC_DIR = Path(__file__).resolve().parent
_STATIC_FILES = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "timeline.js": "text/javascript",
    "operators.js": "text/javascript",
}
HEARTBEAT_S = 15.0
_CALL_ID_RE = re.compile(CALL_ID_PATTERN)


def event_stream_response(sub: Subscription, call_id: str | None) -> StreamingResponse:
    """Server-sent events from ``sub`` (``event: <type>``, ``data: <JSON>``, a comment every
    ``HEARTBEAT_S``); one call's feed ends after its ``call.ended``. Closes ``sub`` at the end."""

    async def stream() -> AsyncIterator[str]:
        try:
            yield ": subscribed\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(sub.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield ": ping\n\n"
                    continue
                if event is None:
                    return
                data = json.dumps(event_json(event), separators=(",", ":"))
                yield f"event: {event.type}\ndata: {data}\n\n"
                if call_id is not None and event.is_call_end:
                    return  # a call's feed ends with the call
        finally:
            sub.close()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def problem_json(problem: Problem) -> dict[str, Any]:
    return {
        "line": problem.line,
        "col": problem.col,
        "severity": problem.severity,
        "message": problem.message,
        "suggestion": problem.suggestion,
        "text": str(problem),
    }


def _unauthorized() -> JSONResponse:
    return JSONResponse(
        {"detail": "a valid bearer token is required"},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _not_started() -> JSONResponse:
    return JSONResponse({"detail": "the gateway is starting"}, status_code=503)


def _bad_body() -> JSONResponse:
    return JSONResponse(
        {"detail": f"body must be UTF-8 YAML text of at most {MAX_PERSONA_BYTES} bytes"},
        status_code=400,
    )


def web_router(settings: Settings, count_tokens: TokenCounter = estimate_tokens) -> APIRouter:
    """The page, the live event feed and the persona editing API (prompts counted with
    ``count_tokens``, as the gateway's persona store counts them)."""
    router = APIRouter()
    editors: dict[int, PersonaEditor] = {}

    def parts(request: Request) -> Any:
        return getattr(request.app.state, "parts", None)

    def editor(request: Request) -> PersonaEditor | None:
        p = parts(request)
        if p is None:
            return None
        ed = editors.get(id(p.personas))
        if ed is None:
            ed = editors[id(p.personas)] = PersonaEditor(
                p.personas, display_dir=settings.personas_dir, count_tokens=count_tokens
            )
        return ed

    def may_call(request: Request) -> bool:
        auth = request.headers.get("authorization")
        return bearer_matches(auth, settings.webrtc_token, settings.editor_token)

    def may_edit(request: Request) -> bool:
        return bearer_matches(request.headers.get("authorization"), settings.editor_token)

    def may_view(request: Request) -> bool:  # the operators' read-only token, or the editor's
        auth = request.headers.get("authorization")
        return bearer_matches(auth, settings.viewer_token, settings.editor_token)

    def editor_for(request: Request) -> PersonaEditor | JSONResponse:
        """The persona editor for a request with the editor token, else the refusal to send."""
        if not may_edit(request):
            return _unauthorized()
        ed = editor(request)
        return _not_started() if ed is None else ed

    @router.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @router.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        media_type = _STATIC_FILES.get(name)
        if media_type is None:
            return Response("not found\n", status_code=404, media_type="text/plain")
        return FileResponse(STATIC_DIR / name, media_type=media_type)

    @router.get("/api/personas")
    async def list_personas(request: Request) -> JSONResponse:
        if not may_call(request):
            return _unauthorized()
        p = parts(request)
        if p is None:
            return _not_started()
        broken = p.personas.broken()
        items = [
            {"name": name, "description": persona.description, "broken": broken.get(name, "")}
            for name, persona in sorted(p.personas.all().items())
        ]
        return JSONResponse({"personas": items})

    @router.get("/api/events")
    async def events(request: Request, call_id: str | None = None) -> Response:
        # one call's feed for whoever placed it; every call's (phone calls too) for editors and
        # viewers only
        if not (may_view(request) or (call_id is not None and may_call(request))):
            return _unauthorized()
        p = parts(request)
        if p is None:
            return _not_started()
        if call_id is not None and not _valid_call_id(call_id):
            return JSONResponse({"detail": "invalid call_id"}, status_code=400)
        return event_stream_response(p.events.subscribe(call_id), call_id)

    @router.get("/api/personas/{name}")
    async def read_persona(request: Request, name: str) -> JSONResponse:
        ed = editor_for(request)
        if isinstance(ed, JSONResponse):
            return ed
        problem = check_name(name)
        if problem is not None:
            return JSONResponse({"detail": problem}, status_code=400)
        text = await asyncio.to_thread(ed.read, name)
        if text is None:
            return JSONResponse({"detail": f"no persona file for '{name}'"}, status_code=404)
        return JSONResponse({"name": name, "yaml": text, "file": ed.file_of(name).name})

    @router.post("/api/personas/{name}/validate")
    async def validate(request: Request, name: str) -> JSONResponse:
        ed = editor_for(request)
        if isinstance(ed, JSONResponse):
            return ed
        text = await _text_body(request)
        if text is None:
            return _bad_body()
        problems = await asyncio.to_thread(ed.validate, name, text)
        return JSONResponse(
            {"ok": not has_errors(problems), "problems": [problem_json(x) for x in problems]}
        )

    @router.put("/api/personas/{name}")
    async def save(request: Request, name: str) -> JSONResponse:
        ed = editor_for(request)
        if isinstance(ed, JSONResponse):
            return ed
        text = await _text_body(request)
        if text is None:
            return _bad_body()
        try:
            result = await ed.save(name, text)
        except OSError as exc:  # a read-only volume, a full disk: nothing was replaced
            log.warning("persona %s: save failed: %s", name, exc)
            return JSONResponse(
                {"ok": False, "detail": f"cannot write the persona file: {exc.strerror or exc}"},
                status_code=500,
            )
        body = {
            "ok": result.ok,
            "detail": result.detail,
            "problems": [problem_json(x) for x in (result.problems or result.warnings)],
            "file": result.file.name if result.file else None,
            "backup": str(result.backup.relative_to(ed.file_of(name).parent))
            if result.backup
            else None,
        }
        if result.ok:
            log.info("persona %s saved from the page (previous version: %s)", name, body["backup"])
        return JSONResponse(body, status_code=200 if result.ok else 422)

    return router


def _valid_call_id(call_id: str) -> bool:
    return _CALL_ID_RE.match(call_id) is not None


async def _text_body(request: Request) -> str | None:
    try:
        raw = await read_body(request, MAX_PERSONA_BYTES)
    except BodyRefused:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
