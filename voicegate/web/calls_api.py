"""The live call API: what a supervisor's screen or a contact centre's own service does to calls
in progress on this gateway. Every route needs ``Authorization: Bearer <token>`` with
``VOICEGATE_CALLS_API_TOKEN`` (or the editor token); without it, 401 before anything else
(no body is read, nothing is looked up).

* ``GET /calls``: the live calls (id, leg, persona, caller, called, duration).
* ``POST /calls/{call_id}/hangup``: end the call now (reason ``agent_hangup``).
* ``POST /calls/{call_id}/transfer`` ``{"destination": "<name>"}``: hand the caller to one of
  the persona's named destinations, through the same call control as its call flow (SIP
  REFER, Twilio ``<Dial>``; the warm handoff POST when the destination has one). ``409`` when
  the persona has no such destination, the leg cannot transfer, or a transfer is under way.
  The outcome follows as ``call.transfer`` events.
* ``GET /calls/{call_id}/events``: the call's live events as server-sent events (the feed the
  page uses), ending after its ``call.ended``.

With ``voicegate serve --workers N`` any worker answers for every call: the list merges the
workers' calls, and a request for a call another worker holds is passed on to it
(``voicegate.edge.relay``).

The OpenAPI document (``/docs``, ``/openapi.json``) describes them with examples.
Owns: ``calls_router``. Reads the running parts from ``request.app.state.parts``; uses the Call
only through its public methods.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voicegate.auth import bearer_matches
from voicegate.config import Settings
from voicegate.contracts import CALL_ID_PATTERN, EndReason
from voicegate.edge.relay import SiblingRelay
from voicegate.legs.http_body import BodyRefused, read_body
from voicegate.web.routes import event_stream_response

__all__ = ["ActionResult", "LiveCall", "LiveCalls", "TransferRequest", "calls_router"]

MAX_BODY_BYTES = 1024
_CALL_ID_RE = re.compile(CALL_ID_PATTERN)
_bearer = HTTPBearer(auto_error=False, description="VOICEGATE_CALLS_API_TOKEN")


class LiveCall(BaseModel):
    """One call in progress."""

    call_id: str = Field(examples=["CA5f0c6f3a9e2b4d7c8a1e0f9b2c3d4e5f"])
    leg: str = Field(description="twilio, sip or webrtc", examples=["twilio"])
    persona: str = Field(examples=["bank_teller"])
    caller: str = Field(description="who called (From)", examples=["+15005550006"])
    called: str = Field(description="the number or SIP user called (To)", examples=["+14155550100"])
    duration_ms: int = Field(description="call time so far", examples=[73420])
    destinations: list[str] = Field(
        description="the persona's named transfer destinations", examples=[["human", "queue"]]
    )
    is_transferring: bool = Field(description="a transfer is under way", examples=[False])


class LiveCalls(BaseModel):
    calls: list[LiveCall]


class TransferRequest(BaseModel):
    """Which of the persona's destinations (``call_flow.destinations``) gets the caller."""

    model_config = ConfigDict(extra="forbid")

    destination: str = Field(min_length=1, max_length=64, examples=["human"])


class ActionResult(BaseModel):
    """What the gateway did with the request (the call's events tell how it ended)."""

    call_id: str = Field(examples=["CA5f0c6f3a9e2b4d7c8a1e0f9b2c3d4e5f"])
    status: str = Field(examples=["transfer_requested"])
    destination: str | None = Field(None, examples=["human"])
    to: str | None = Field(None, examples=["+14155550123"])


def _error(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "No valid bearer token",
        "content": {
            "application/json": {"example": {"detail": "a valid bearer token is required"}}
        },
    }
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "No such live call on this gateway",
        "content": {"application/json": {"example": {"detail": "no live call 'CA123'"}}},
    }
}


def calls_router(settings: Settings) -> APIRouter:
    """The ``/calls`` routes (see the module docstring)."""
    # the scheme shows in OpenAPI; the check itself is ``refused`` (before the body is read)
    router = APIRouter(prefix="/calls", tags=["live calls"], dependencies=[Depends(_bearer)])

    def refused(request: Request) -> JSONResponse | None:
        auth = request.headers.get("authorization")
        if bearer_matches(auth, settings.calls_api_token, settings.editor_token):
            return None
        return _error(401, "a valid bearer token is required", **{"WWW-Authenticate": "Bearer"})

    def live_call(request: Request, call_id: str) -> Any:
        """The active Call; None when this worker holds no such call; else the error response
        to send."""
        parts = getattr(request.app.state, "parts", None)
        if parts is None:
            return _error(503, "the gateway is starting")
        if not _CALL_ID_RE.match(call_id):
            return _error(400, "invalid call_id")
        call = parts.calls.get(call_id)
        if call is None or not call.is_active:
            return None
        return call

    def relay_of(request: Request) -> SiblingRelay | None:
        """The other edge workers (``serve --workers N``), unless a sibling sent this."""
        relay: SiblingRelay | None = getattr(request.app.state, "relay", None)
        return None if relay is None or relay.is_relayed(request.headers) else relay

    async def elsewhere(request: Request, call_id: str, body: bytes = b"") -> Response:
        """A call this worker does not hold: the sibling's answer that holds it, or 404."""
        relay = relay_of(request)
        if relay is None:
            return _error(404, f"no live call '{call_id}'")
        if request.method == "GET":
            return await relay.stream(request.url.path, request.headers)
        return await relay.first(request.method, request.url.path, request.headers, body)

    @router.get(
        "",
        response_model=LiveCalls,
        responses={**_UNAUTHORIZED},
        summary="List the live calls",
    )
    async def list_calls(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        parts = getattr(request.app.state, "parts", None)
        if parts is None:
            return _error(503, "the gateway is starting")
        calls = [
            LiveCall(
                call_id=c.call_id,
                leg=c.info.leg,
                persona=c.info.persona,
                caller=c.info.from_,
                called=c.info.to,
                duration_ms=c.now_ms,
                destinations=sorted(c.destinations),
                is_transferring=c.transfer_trigger is not None,
            )
            for c in parts.calls.calls()
            if c.is_active
        ]
        relay = relay_of(request)
        if relay is not None:  # every worker's calls (a worker that fails is left out)
            for answer in await relay.gather(request.url.path, request.headers):
                with contextlib.suppress(ValidationError):
                    calls.extend(LiveCalls.model_validate(answer).calls)
        return JSONResponse(LiveCalls(calls=calls).model_dump())

    @router.post(
        "/{call_id}/hangup",
        response_model=ActionResult,
        status_code=202,
        responses={**_UNAUTHORIZED, **_NOT_FOUND},
        summary="Hang up a live call",
    )
    async def hangup(request: Request, call_id: str) -> Response:
        if (no := refused(request)) is not None:
            return no
        call = live_call(request, call_id)
        if isinstance(call, Response):
            return call
        if call is None:
            return await elsewhere(request, call_id)
        call.end(EndReason.AGENT_HANGUP, "hung up over the call API")
        return JSONResponse(
            ActionResult(call_id=call_id, status="hung_up").model_dump(exclude_none=True),
            status_code=202,
        )

    @router.post(
        "/{call_id}/transfer",
        response_model=ActionResult,
        status_code=202,
        summary="Transfer a live call to one of its persona's destinations",
        responses={
            **_UNAUTHORIZED,
            **_NOT_FOUND,
            409: {
                "description": "The persona has no such destination, the leg cannot transfer, "
                "or a transfer is already under way",
                "content": {
                    "application/json": {
                        "example": {
                            "detail": "persona 'bank_teller' has no destination 'sales'; "
                            "destinations: human, queue"
                        }
                    }
                },
            },
            413: {"description": "Body larger than 1 KiB"},
            422: {"description": 'Body is not {"destination": "<name>"}'},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": TransferRequest.model_json_schema(),
                        "example": {"destination": "human"},
                    }
                },
            }
        },
    )
    async def transfer(request: Request, call_id: str) -> Response:
        if (no := refused(request)) is not None:
            return no
        try:
            raw = await read_body(request, MAX_BODY_BYTES)
            body = TransferRequest.model_validate(json.loads(raw or b"null"))
        except BodyRefused as exc:
            return _error(exc.status_code, exc.detail, Connection="close")
        except (ValueError, ValidationError) as exc:
            return _error(422, f'body must be {{"destination": "<name>"}}: {exc}'[:500])
        call = live_call(request, call_id)
        if isinstance(call, Response):
            return call
        if call is None:
            return await elsewhere(request, call_id, raw)
        destinations: dict[str, str] = call.destinations
        to = destinations.get(body.destination)
        if to is None:
            known = ", ".join(sorted(destinations)) or "none"
            return _error(
                409,
                f"persona '{call.info.persona}' has no destination '{body.destination}'; "
                f"destinations: {known}",
            )
        if not callable(getattr(call.leg, "transfer", None)):
            return _error(409, f"a {call.info.leg} call cannot be transferred")
        if call.transfer_trigger is not None:
            return _error(409, "a transfer of this call is already under way")
        call.transfer_to(body.destination, to, "api", "over the call API")
        return JSONResponse(
            ActionResult(
                call_id=call_id,
                status="transfer_requested",
                destination=body.destination,
                to=to,
            ).model_dump(),
            status_code=202,
        )

    @router.get(
        "/{call_id}/events",
        summary="A live call's events (server-sent events)",
        response_class=Response,
        responses={
            **_UNAUTHORIZED,
            **_NOT_FOUND,
            200: {
                "description": "``event: <type>`` and ``data: <JSON>`` per event; the stream "
                "ends after the call's call.ended",
                "content": {
                    "text/event-stream": {
                        "example": 'event: transcript.agent\ndata: {"type":"transcript.agent",'
                        '"call_id":"CA123","t":5120,"text":"How can I help?","start_ms":3200,'
                        '"end_ms":5040,"is_heard":true}\n\n'
                    }
                },
            },
        },
    )
    async def call_events(request: Request, call_id: str) -> Response:
        if (no := refused(request)) is not None:
            return no
        call = live_call(request, call_id)
        if isinstance(call, Response):
            return call
        if call is None:
            return await elsewhere(request, call_id)
        parts = request.app.state.parts
        return event_stream_response(parts.events.subscribe(call_id), call_id)

    return router
