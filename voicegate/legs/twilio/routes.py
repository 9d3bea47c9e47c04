"""The Twilio leg's HTTP surface: voice webhook, stream status callback, media WebSocket, and
what Twilio does after the stream (transfer, hang-up, overflow).

* ``POST /twilio/voice``: checks ``X-Twilio-Signature`` (403 and a logged reason otherwise;
  an unsigned request before its body is read, a body over 64 KiB with 413 as soon as its
  length is announced or read, see ``voicegate.legs.http_body``),
  routes the called number to a persona, and answers ``<Connect action="/twilio/next"><Stream>``
  with the persona and a one-time call token as ``<Parameter>``s. When no call can be admitted
  (every slot taken, or the gateway draining) it answers ``<Dial>`` to the number's overflow
  (``PersonaRouter.overflow``), or ``<Reject reason="busy"/>`` where none is set.
* ``POST /twilio/next`` (the ``<Connect action>``, requested once the stream's socket closed):
  ``<Dial>`` to the transfer or overflow target the stream recorded in ``NextSteps`` under the
  CallSid (``<Number url=/twilio/whisper?handoff=ID>`` or ``<Sip>uri?X-Handoff-Id=ID</Sip>``),
  else ``<Hangup/>``.
* ``POST /twilio/dial-status`` (the ``<Dial action>``): ``<Hangup/>`` when the person answered,
  the persona's ``fallback_say`` then ``<Hangup/>`` when not; either way a ``call.transfer``
  event with the far end's result (``LegReporter.leg_transfer``).
* ``POST /twilio/whisper`` (the ``<Number url>``, run on the person's end when they answer): a
  short ``<Say>`` to them; the handoff id in its query reaches us with the answer.
* ``POST /twilio/status``: signed stream status callbacks, reported as ``leg.status`` events
  (through the ``LegReporter`` it is given: a callback may come after the call ended).
* ``WS /twilio/media``: one ``TwilioMediaStream`` per socket (see ``stream``).

URLs are signed and built from ``VOICEGATE_PUBLIC_URL`` so that the gateway works behind a
proxy. In a fleet (``placer`` set) the voice webhook reaches any pod through the load balancer
at the fleet's URL; the pod places the call (itself first, else the pod with the most free
slots, through the registry) and answers with the chosen pod's own ``wss://`` URL, action and
status callback (``pod_url``), so the stream and the requests that follow it reach the pod that
holds the call; a token for another pod goes through Redis and only that pod redeems it.
Twilio posts ``application/x-www-form-urlencoded`` forms; they are parsed here (bounded size,
read while streaming) rather than through a multipart dependency.

Owns: ``TwilioLeg`` (its parts and its ``APIRouter``). Wired by ``voicegate.app``.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response

from voicegate.contracts import (
    CALL_ID_PATTERN,
    CallAdmission,
    CallInfo,
    CallLike,
    LegReporter,
    LegTransport,
    PersonaRouter,
    TransferTarget,
)
from voicegate.errors import NoFreeSlot
from voicegate.legs.http_body import CLOSE_CONNECTION, BodyRefused, read_body
from voicegate.legs.twilio.metrics import TwilioLegCollector, TwilioLegStats
from voicegate.legs.twilio.nextsteps import DIAL, NextStep, NextSteps
from voicegate.legs.twilio.security import (
    SIGNATURE_HEADER,
    CallGrant,
    CallTokens,
    SignatureChecker,
    public_http_url,
    public_ws_url,
)
from voicegate.legs.twilio.stream import DEFAULT_SEND_MS, TwilioMediaStream
from voicegate.legs.twilio.twiml import (
    HANDOFF_HEADER,
    TWIML_MEDIA_TYPE,
    connect_stream,
    dial,
    hangup,
    reject,
    say,
    sip_uri_with_header,
)

__all__ = [
    "DIAL_STATUS_PATH",
    "MEDIA_PATH",
    "NEXT_PATH",
    "STATUS_PATH",
    "VOICE_PATH",
    "WHISPER_PATH",
    "TwilioLeg",
]

log = logging.getLogger("voicegate.legs.twilio")

VOICE_PATH = "/twilio/voice"
STATUS_PATH = "/twilio/status"
MEDIA_PATH = "/twilio/media"
NEXT_PATH = "/twilio/next"
DIAL_STATUS_PATH = "/twilio/dial-status"
WHISPER_PATH = "/twilio/whisper"
DEFAULT_DIAL_TIMEOUT_S = 30
WHISPER_SAY = "A caller transferred by the voice agent. Connecting you now."
ANSWERED = frozenset({"completed", "answered"})
DIAL_STATUSES = frozenset({"completed", "answered", "busy", "no-answer", "failed", "canceled"})
MAX_FORM_BYTES = 64 * 1024
MAX_REMEMBERED_CALLS = 10_000
_CALL_ID_RE = re.compile(CALL_ID_PATTERN)


class PlacementLike(Protocol):
    """Where the fleet put a call (``voicegate.fleet.Placement``)."""

    @property
    def pod_id(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def is_self(self) -> bool: ...


class CallPlacer(Protocol):
    """The fleet registry as the voice webhook uses it (``voicegate.fleet.FleetRegistry``)."""

    async def place(self, call_id: str) -> PlacementLike | None: ...
    async def put_grant(self, token: str, pod_id: str, grant: dict[str, str]) -> None: ...
    async def take_grant(self, token: str) -> dict[str, str] | None: ...
    def release(self, call_id: str) -> None: ...


class TwilioLeg:
    """The Twilio leg of one gateway: signature checks, tokens, counters and the routes."""

    def __init__(
        self,
        *,
        auth_token: str,
        public_url: str,
        calls: CallAdmission | None = None,
        personas: PersonaRouter | None = None,
        events: LegReporter | None = None,
        media_timeout_s: float = 10.0,
        tokens: CallTokens | None = None,
        stats: TwilioLegStats | None = None,
        max_ahead_ms: int = 100,
        send_ms: int = DEFAULT_SEND_MS,
        cushion_ms: int = 0,
        dial_timeout_s: int = DEFAULT_DIAL_TIMEOUT_S,
        next_steps: NextSteps | None = None,
        pod_url: str = "",
        placer: CallPlacer | None = None,
    ) -> None:
        if not 5 <= dial_timeout_s <= 600:
            raise ValueError(f"twilio: dial_timeout_s must be 5-600, got {dial_timeout_s}")
        # public_url: where Twilio posts the voice webhook (a fleet's load balancer); pod_url:
        # this gateway's own public base, which every URL it hands out is built on
        self.signatures = SignatureChecker(auth_token, public_url, (pod_url,))
        self.fleet_url = public_url
        self.public_url = pod_url or public_url
        self.placer = placer
        self.calls = calls
        self.personas = personas
        self.events = events
        self.media_timeout_s = media_timeout_s  # 0: streams are not watched
        self.tokens = tokens or CallTokens()
        self.stats = stats or TwilioLegStats()
        self.max_ahead_ms = max_ahead_ms
        self.send_ms = send_ms
        self.cushion_ms = cushion_ms  # -1: auto, from ``lateness``
        # the event loop's recent worst lateness in s (``LoopLag.peak_s``), set at startup
        self.lateness: Callable[[], float] = _no_lateness
        self.dial_timeout_s = dial_timeout_s
        self.next_steps = next_steps or NextSteps()
        self.is_draining = False
        self._calls_seen: OrderedDict[str, tuple[str, float]] = OrderedDict()  # CallSid -> id, t0
        self._streams: dict[int, TwilioMediaStream] = {}

    def stream(self, call_id: str) -> TwilioMediaStream | None:
        """The open stream of ``call_id`` (operations and tests; use it on the event loop)."""
        for stream in self._streams.values():
            if stream.call_id == call_id:
                return stream
        return None

    def collector(self) -> TwilioLegCollector:
        """Prometheus collector for this leg's counters (register it on the app's registry)."""
        return TwilioLegCollector(self.stats)

    def begin_drain(self) -> None:
        """Answer every new call with busy from now on."""
        self.is_draining = True

    # -- handlers ----------------------------------------------------------------------------

    async def _signed_form(self, request: Request, what: str) -> dict[str, list[str]] | Response:
        """The form of a signed webhook, or the response that refuses it (logged, counted).

        Unsigned requests are refused before a byte of the body is read, oversized ones as
        soon as their length is known (``read_body``), forged ones once the bounded body is in.
        """
        signature = request.headers.get(SIGNATURE_HEADER)
        path, query = request.url.path, request.url.query
        problem = self.signatures.check_before_body(path, query, signature)
        if problem is not None:
            return self._refuse(request, what, 403, "invalid signature", problem)
        try:
            body = await read_body(request, MAX_FORM_BYTES)
        except BodyRefused as exc:
            return self._refuse(request, what, exc.status_code, "body refused", exc.detail)
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            return self._refuse(request, what, 403, "invalid signature", "form is not UTF-8")
        params: dict[str, list[str]] = {}
        for name, value in pairs:
            params.setdefault(name, []).append(value)
        problem = self.signatures.check_webhook(path, query, params, signature)
        if problem is not None:
            return self._refuse(request, what, 403, "invalid signature", problem)
        return params

    def _refuse(self, request: Request, what: str, status: int, text: str, why: str) -> Response:
        self.stats.webhooks_refused += 1
        log.warning("twilio %s refused (%d) from %s: %s", what, status, _peer(request), why)
        # close: whatever of the body is still coming is not read
        return Response(
            f"{text}\n", status_code=status, media_type="text/plain", headers=CLOSE_CONNECTION
        )

    def _url(self, path: str, **query: str) -> str:
        return public_http_url(self.public_url, path, urlencode(query) if query else "")

    def _overflow_for(self, to: str) -> str:
        personas = self.personas
        return personas.overflow(to) if personas is not None else ""

    def _dial(self, step: NextStep, *, is_unanswered_call: bool = False) -> str:
        """``<Dial>`` TwiML for a dial step: the handoff id as whisper query or SIP header."""
        target = step.target
        assert target is not None
        handoff = target.handoff_id
        action = self._url(DIAL_STATUS_PATH, handoff=handoff) if handoff else None
        to = target.to
        whisper = ""
        if target.is_sip:
            to = sip_uri_with_header(to, HANDOFF_HEADER, handoff)
        elif handoff:
            whisper = self._url(WHISPER_PATH, handoff=handoff)
        return dial(
            to,
            action=action or self._url(DIAL_STATUS_PATH),
            timeout_s=self.dial_timeout_s,
            whisper_url=whisper,
            answer_on_bridge=is_unanswered_call,
        )

    def _dial_or_none(
        self, call_sid: str, step: NextStep, *, is_unanswered_call: bool = False
    ) -> str | None:
        try:
            return self._dial(step, is_unanswered_call=is_unanswered_call)
        except ValueError as exc:
            self.next_steps.pop(call_sid)
            log.error("twilio call %s: cannot dial: %s", step.call_id, exc)
            return None

    async def voice(self, request: Request) -> Response:
        """``POST /twilio/voice``: TwiML for an incoming call."""
        self.stats.webhooks += 1
        params = await self._signed_form(request, "voice webhook")
        if isinstance(params, Response):
            return params
        call_sid = _first(params, "CallSid")
        from_, to = _first(params, "From"), _first(params, "To")
        calls, personas = self.calls, self.personas
        call_id = call_sid if _CALL_ID_RE.match(call_sid) else f"tw-{uuid.uuid4().hex}"
        if self.placer is not None and calls is not None and personas is not None:
            placed = await self._place(call_id)
            if placed is not None and not placed.is_self:
                variables = _query_variables(request.url.query)
                twiml = await self._place_remote(placed, call_id, call_sid, from_, to, variables)
                if twiml is not None:
                    return Response(twiml, media_type=TWIML_MEDIA_TYPE)
                placed = None
            is_full = placed is None or self.is_draining or not calls.can_admit()
            if is_full and placed is not None:
                self.placer.release(call_id)  # reserved here, but this pod cannot take it now
        else:
            is_full = self.is_draining or calls is None or not calls.can_admit()
        if is_full or calls is None or personas is None:
            why = "draining" if self.is_draining else "no free slot" if calls else "not started"
            overflow = self._overflow_for(to) if calls is not None else ""
            if overflow and call_sid:
                self.stats.overflow_dials += 1
                self._remember(call_sid, call_id)
                step = NextStep(
                    call_id, DIAL, TransferTarget("overflow", overflow), trigger="overflow"
                )
                self.next_steps.put(call_sid, step)
                log.info(
                    "twilio call %s from %s to %s: %s, dialled to the overflow %s",
                    call_sid,
                    from_,
                    to,
                    why,
                    overflow,
                )
                # the call is not answered yet: the caller keeps hearing ringing until it is
                twiml = self._dial_or_none(call_sid, step, is_unanswered_call=True)
                if twiml is not None:
                    return Response(twiml, media_type=TWIML_MEDIA_TYPE)
            self.stats.rejected_busy += 1
            log.info("twilio call %s from %s to %s rejected busy (%s)", call_sid, from_, to, why)
            return Response(reject("busy"), media_type=TWIML_MEDIA_TYPE)
        persona = personas.route(to)
        self._remember(call_sid, call_id)
        token = self.tokens.issue(CallGrant(call_id, call_sid, persona, from_, to))
        # the voice URL's query (an operator's flow redirects here with ?caller_name=...) rides
        # in <Parameter>s to the stream's start message: the call's own prompt variables
        twiml = connect_stream(
            public_ws_url(self.public_url, MEDIA_PATH),
            {**_query_variables(request.url.query), "persona": persona, "token": token},
            status_callback=public_http_url(self.public_url, STATUS_PATH),
            action=public_http_url(self.public_url, NEXT_PATH),
        )
        log.info("twilio call %s from %s to %s -> persona %s", call_id, from_, to, persona)
        return Response(twiml, media_type=TWIML_MEDIA_TYPE)

    async def _place(self, call_id: str) -> PlacementLike | None:
        """The fleet's choice for a new call; on a Redis failure this pod alone decides."""
        assert self.placer is not None
        try:
            return await self.placer.place(call_id)
        except Exception as exc:
            self.stats.placement_failures += 1
            log.warning("twilio call %s: fleet placement failed (%r): deciding here", call_id, exc)
            return _HERE

    async def _place_remote(
        self,
        placed: PlacementLike,
        call_id: str,
        call_sid: str,
        from_: str,
        to: str,
        variables: dict[str, str],
    ) -> str | None:
        """TwiML sending the call's stream to another pod; None when its grant cannot be stored."""
        assert self.placer is not None and self.personas is not None
        persona = self.personas.route(to)
        token = secrets.token_urlsafe(24)
        grant = {"call_id": call_id, "call_sid": call_sid, "persona": persona}
        grant.update({"from": from_, "to": to})
        try:
            await self.placer.put_grant(token, placed.pod_id, grant)
        except Exception as exc:
            self.stats.placement_failures += 1
            log.warning("twilio call %s: cannot hand to pod %s: %r", call_id, placed.pod_id, exc)
            return None
        self.stats.placed_elsewhere += 1
        log.info(
            "twilio call %s from %s to %s -> persona %s on pod %s",
            call_id,
            from_,
            to,
            persona,
            placed.pod_id,
        )
        return connect_stream(
            public_ws_url(placed.url, MEDIA_PATH),
            {**variables, "persona": persona, "token": token},  # the variables ride along
            status_callback=public_http_url(placed.url, STATUS_PATH),
            action=public_http_url(placed.url, NEXT_PATH),
        )

    async def _fetch_grant(self, token: str) -> None:
        """A stream's token this pod did not issue: a grant another pod stored for this one."""
        if self.placer is None or not token or token in self.tokens:
            return
        try:
            grant = await self.placer.take_grant(token)
        except Exception as exc:
            log.warning("twilio: cannot read a fleet call token: %r", exc)
            return
        if grant is not None:
            self.tokens.adopt(
                token,
                CallGrant(
                    grant.get("call_id", ""),
                    grant.get("call_sid", ""),
                    grant.get("persona", ""),
                    grant.get("from", ""),
                    grant.get("to", ""),
                ),
            )

    async def status(self, request: Request) -> Response:
        """``POST /twilio/status``: a stream status callback, recorded as a ``leg.status`` event."""
        params = await self._signed_form(request, "status callback")
        if isinstance(params, Response):
            return params
        self.stats.status_callbacks += 1
        call_sid = _first(params, "CallSid")
        status = _first(params, "StreamEvent") or "unknown"
        detail = f"stream {_first(params, 'StreamSid')}"
        error = _first(params, "StreamError")
        if error:
            detail += f": {error}"
            log.warning("twilio call %s stream status %s: %s", call_sid, status, error)
        call_id, t0 = self._calls_seen.get(call_sid, ("", 0.0))
        if not call_id and _CALL_ID_RE.match(call_sid):
            call_id = call_sid
        if call_id and self.events is not None:
            t_ms = int((time.monotonic() - t0) * 1000) if t0 else 0
            self.events.leg_status(call_id, "twilio", t_ms, status[:200], detail[:2000])
        return Response(status_code=204)

    async def next_step(self, request: Request) -> Response:
        """``POST /twilio/next``: the ``<Connect action>``; dial what the stream recorded."""
        params = await self._signed_form(request, "connect action")
        if isinstance(params, Response):
            return params
        self.stats.next_requests += 1
        call_sid = _first(params, "CallSid")
        step = self.next_steps.get(call_sid) if call_sid else None
        if step is None or step.kind != DIAL:
            self.next_steps.pop(call_sid)
            log.info(
                "twilio call %s: connect action -> hangup (%s)",
                call_sid or "?",
                step.trigger if step is not None else "no transfer recorded",
            )
            return Response(hangup(), media_type=TWIML_MEDIA_TYPE)
        self.stats.next_dials += 1
        assert step.target is not None
        log.info(
            "twilio call %s: connect action -> dial %s (%s, handoff %s)",
            step.call_id,
            step.target.to,
            step.trigger,
            step.target.handoff_id or "-",
        )
        twiml = self._dial_or_none(call_sid, step)
        return Response(twiml or hangup(), media_type=TWIML_MEDIA_TYPE)

    async def dial_status(self, request: Request) -> Response:
        """``POST /twilio/dial-status``: the ``<Dial action>``, with the dialled call's outcome."""
        params = await self._signed_form(request, "dial action")
        if isinstance(params, Response):
            return params
        self.stats.dial_statuses += 1
        call_sid = _first(params, "CallSid")
        status = _first(params, "DialCallStatus") or "unknown"
        step = self.next_steps.pop(call_sid) if call_sid else None
        is_answered = status in ANSWERED
        if not is_answered:
            self.stats.dial_unanswered += 1
        fallback = "" if is_answered or step is None else step.fallback_say
        result = "answered" if is_answered else status if status in DIAL_STATUSES else "failed"
        detail = f"DialCallStatus {status[:40]}"
        if dial_sid := _first(params, "DialCallSid"):
            detail += f", DialCallSid {dial_sid[:64]}"
        if duration := _first(params, "DialCallDuration"):
            detail += f", {duration[:16]} s"
        if fallback:
            detail += ", said the fallback"
        if step is not None and step.target is not None and self.events is not None:
            t_ms = int((time.monotonic() - step.t0) * 1000) if step.t0 else 0
            self.events.leg_transfer(step.call_id, "twilio", t_ms, step.target, result, detail)
        log.info(
            "twilio call %s: dial action %s -> %s",
            step.call_id if step is not None else call_sid or "?",
            detail,
            "hangup" if not fallback else "fallback, hangup",
        )
        return Response(say(fallback), media_type=TWIML_MEDIA_TYPE)

    async def whisper(self, request: Request) -> Response:
        """``POST /twilio/whisper``: said to the person who answered, before the caller joins."""
        params = await self._signed_form(request, "whisper")
        if isinstance(params, Response):
            return params
        handoff = request.query_params.get("handoff", "")[:128]
        log.info(
            "twilio: transfer answered by %s (handoff %s)", _first(params, "To") or "?", handoff
        )
        return Response(say(WHISPER_SAY, then_hangup=False), media_type=TWIML_MEDIA_TYPE)

    async def media(self, ws: WebSocket) -> None:
        """``WS /twilio/media``: one stream, owned by this task until the call ends."""
        problem = self.signatures.check_upgrade(ws.url.path, ws.headers.get(SIGNATURE_HEADER))
        if problem is not None:
            problem = f"{problem} (from {ws.client.host if ws.client else '?'})"
        if self.calls is None:
            problem = problem or "the gateway is not started"
        stream = TwilioMediaStream(
            ws,
            calls=self.calls or _NoCalls(),
            tokens=self.tokens,
            media_timeout_s=self.media_timeout_s,
            stats=self.stats,
            report_error=self._report_error,
            max_ahead_ms=self.max_ahead_ms,
            send_ms=self.send_ms,
            cushion_ms=self.cushion_ms,
            lateness=self.lateness,
            next_steps=self.next_steps,
            overflow=self._overflow_for,
            fetch_grant=self._fetch_grant if self.placer is not None else None,
        )
        self._streams[id(stream)] = stream
        try:
            await stream.run(problem)
        finally:
            del self._streams[id(stream)]
            if self.placer is not None:
                self.placer.release(stream.call_id)  # its reservation, if a beat missed the call

    def _report_error(
        self, call_id: str, t_ms: int, code: str, message: str, is_fatal: bool
    ) -> None:
        if self.events is not None:
            self.events.leg_error(call_id, "twilio", t_ms, code, message, is_fatal)

    def _remember(self, call_sid: str, call_id: str) -> None:
        seen = self._calls_seen
        seen[call_sid] = (call_id, time.monotonic())
        seen.move_to_end(call_sid)
        while len(seen) > MAX_REMEMBERED_CALLS:
            seen.popitem(last=False)

    def router(self) -> APIRouter:
        """The routes, for ``app.include_router``."""
        router = APIRouter(tags=["twilio"])
        router.add_api_route(VOICE_PATH, self.voice, methods=["POST"], include_in_schema=True)
        router.add_api_route(STATUS_PATH, self.status, methods=["POST"], status_code=204)
        router.add_api_route(NEXT_PATH, self.next_step, methods=["POST"])
        router.add_api_route(DIAL_STATUS_PATH, self.dial_status, methods=["POST"])
        router.add_api_route(WHISPER_PATH, self.whisper, methods=["POST"])
        router.add_api_websocket_route(MEDIA_PATH, self.media)
        return router


class _Here:
    """The placement when the registry cannot answer: this pod, by its own admission."""

    pod_id = ""
    url = ""
    is_self = True


_HERE = _Here()


def _no_lateness() -> float:
    return 0.0


class _NoCalls:
    def can_admit(self) -> bool:
        return False

    def start_call(self, info: CallInfo, leg: LegTransport) -> CallLike:
        raise NoFreeSlot(f"call {info.call_id}: the gateway is not started")


_VARIABLE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_QUERY_VARIABLES = 16
MAX_QUERY_VALUE_CHARS = 500


def _query_variables(query: str) -> dict[str, str]:
    """Prompt variables from the voice webhook URL's query (signed with it by Twilio), bounded;
    control characters dropped (XML cannot carry them)."""
    out: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=False):
        if _VARIABLE_RE.match(name) and name not in ("persona", "token"):
            if len(out) < MAX_QUERY_VARIABLES:
                out[name] = "".join(ch for ch in value[:MAX_QUERY_VALUE_CHARS] if ch >= " ")
    return out


def _first(params: dict[str, list[str]], name: str) -> str:
    values = params.get(name)
    return values[0] if values else ""


def _peer(request: Request) -> str:
    return request.client.host if request.client else "?"
