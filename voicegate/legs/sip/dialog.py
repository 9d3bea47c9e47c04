"""One inbound SIP dialog (RFC 3261 12-15) and the Call's leg for it.

States and the only allowed moves (``_TRANSITIONS``)::

    PROCEEDING --200--> ACCEPTED --ACK--> CONFIRMED --BYE sent--> TERMINATING --> TERMINATED
        |                  |                  |
        +-- 4xx/5xx, CANCEL (487) --> TERMINATED    BYE received, 32 s without ACK, media timeout

An INVITE gets 100 at once (the server sends it), then ``run()`` binds the RTP port, sends 180,
waits ``answer_delay_s`` (ringing; a CANCEL can still arrive), starts the Call (486 when no slot
is free) and sends 200 with the SDP answer, retransmitted on T1 doubling to T2 until the ACK;
after 64*T1 without an ACK the dialog sends BYE and ends the call. Every final response to an
INVITE is retransmitted the same way until its ACK (17.2.1). Retransmitted requests get the
stored response again. Re-INVITEs change codec, address or direction (hold = ``sendonly`` or
``inactive``: we stop sending RTP while the call's clock keeps running).

Busy (no slot free, draining): ``302 Moved Temporarily`` with the overflow destination as the
Contact when the numbers file names one for the called number (``PersonaRouter.overflow``), else
``486 Busy Here``.

Transfer (``LegControl.transfer``, RFC 3515): on a confirmed dialog an in-dialog REFER (new
CSeq, ``Refer-To: <target>`` with ``?X-Handoff-Id=`` when the Call gave a handoff id,
``Referred-By``), retransmitted like any non-INVITE request; its progress comes in NOTIFYs that
get 200 (NOTIFYs for no pending REFER get 481). The outcome (``refer.Refer``, its own state
table) goes to the Call once: HANDED_OFF -> we send BYE (the Call ended as transferred); FAILED
(3xx-6xx to the REFER, a failure sipfrag, no final NOTIFY within ``refer_timeout_s``, the call
ending first) -> the call stays with the agent.

Owns: ``Dialog``, ``DialogState``. Imports the contracts, the pure SIP modules and the RTP
session; never the engine or the events (states are reported through its host).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import uuid
from collections.abc import Callable
from typing import Protocol

from voicegate.contracts import (
    CallInfo,
    CallLike,
    EndReason,
    LegTransport,
    TransferOutcome,
    TransferTarget,
)
from voicegate.errors import (
    CallRefused,
    InvalidStateError,
    NoFreeSlot,
    SdpError,
    SipError,
    SipParseError,
    VoiceGateError,
)
from voicegate.legs.sip.media import RATE_HZ, RtpSession
from voicegate.legs.sip.message import (
    ALLOW,
    SipRequest,
    SipResponse,
    build_request,
    build_response,
    info_dtmf_digit,
    new_branch,
    new_tag,
)
from voicegate.legs.sip.metrics import SipStats
from voicegate.legs.sip.refer import (
    Refer,
    ReferResult,
    ReferState,
    SipFrag,
    parse_sipfrag,
    parse_subscription_state,
)
from voicegate.legs.sip.sdp import MediaPlan, build_answer, negotiate, parse_sdp
from voicegate.legs.sip.transaction import Peer, Retransmission, SipTimers

__all__ = ["Dialog", "DialogHost", "DialogState"]

log = logging.getLogger("voicegate.legs.sip")

MAX_STORED_RESPONSES = 32  # per dialog, to answer retransmitted requests


class DialogState(enum.Enum):
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"  # 200 sent, no ACK yet
    CONFIRMED = "confirmed"
    TERMINATING = "terminating"  # our BYE sent
    TERMINATED = "terminated"


_TRANSITIONS: dict[DialogState, frozenset[DialogState]] = {
    DialogState.PROCEEDING: frozenset({DialogState.ACCEPTED, DialogState.TERMINATED}),
    DialogState.ACCEPTED: frozenset(
        {DialogState.CONFIRMED, DialogState.TERMINATING, DialogState.TERMINATED}
    ),
    DialogState.CONFIRMED: frozenset({DialogState.TERMINATING, DialogState.TERMINATED}),
    DialogState.TERMINATING: frozenset({DialogState.TERMINATED}),
    DialogState.TERMINATED: frozenset(),
}


class SipCall(CallLike, Protocol):
    """The Call as this leg uses it (``voicegate.calls.Call``)."""

    def end(self, reason: EndReason, detail: str = "") -> None: ...


MAX_X_HEADERS = 32
MAX_X_HEADER_CHARS = 1024


def _x_headers(invite: SipRequest) -> dict[str, str]:
    """The INVITE's ``X-`` headers (a persona's ``sip_header`` variables read them), bounded."""
    out: dict[str, str] = {}
    for name in invite.raw.headers.keys():
        if name[:2].lower() == "x-" and len(out) < MAX_X_HEADERS:
            value = invite.raw.headers.get(name)
            if value is not None:
                out[name] = value[:MAX_X_HEADER_CHARS]
    return out


class DialogHost(Protocol):
    """What a dialog needs of its server."""

    stats: SipStats
    timers: SipTimers
    refer_timeout_s: float

    def start_call(self, info: CallInfo, leg: LegTransport) -> SipCall: ...

    def leg_status(self, call_id: str, t_ms: int, status: str, detail: str) -> None:
        """Report a dialog state (a ``leg.status`` event), with or without a Call."""
        ...

    async def open_media(
        self, plan: MediaPlan, on_timeout: Callable[[str], None], *, signalling_host: str = ""
    ) -> RtpSession: ...

    def contact_for(self, peer: Peer, local_host: str) -> str: ...

    def transfer_uri(self, target: TransferTarget, peer: Peer) -> str:
        """The SIP URI for a transfer target (``SipParseError`` when it cannot be made)."""
        ...

    def overflow_uri(self, invite: SipRequest, peer: Peer) -> str:
        """The overflow destination of the called party as a SIP URI, "" when none is set."""
        ...

    def dialog_ended(self, dialog: Dialog) -> None: ...


class Dialog:
    """The UAS side of one INVITE dialog; also the Call's ``LegTransport``."""

    def __init__(
        self,
        invite: SipRequest,
        peer: Peer,
        host: DialogHost,
        *,
        persona: str,
        local_host: str,
        answer_delay_s: float = 0.0,
    ) -> None:
        self.invite = invite
        self.peer = peer
        self._host = host
        self._stats = host.stats
        self._timers = host.timers
        self.persona = persona
        self.local_host = local_host
        self._answer_delay_s = answer_delay_s
        self.local_tag = new_tag()
        self.call_id = f"sip-{uuid.uuid4().hex}"
        self.state = DialogState.PROCEEDING
        self.session: RtpSession | None = None
        self.call: SipCall | None = None
        self.plan: MediaPlan | None = None
        self.end_reason: EndReason | None = None
        self.is_hold = False
        self._session_id = int.from_bytes(os.urandom(4), "big")
        self._sdp_version = 0
        self._remote_cseq = invite.cseq
        self._local_cseq = 0
        self._remote_target = str(invite.contact.uri) if invite.contact else str(invite.from_.uri)
        self._routes = invite.record_route
        self._responses: dict[tuple[str, int], bytes] = {}
        self._invite_tx: Retransmission | None = None
        self._reinvite_tx: Retransmission | None = None
        self._bye_tx: Retransmission | None = None
        self._refer: Refer | None = None  # the latest transfer (a failed one may be retried)
        self._refer_tx: Retransmission | None = None
        self._refer_timer: asyncio.TimerHandle | None = None
        self._reinvite_cseq: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._is_binding = False
        self._is_closed = False
        self._linger: asyncio.TimerHandle | None = None
        self._contact = host.contact_for(peer, local_host)
        self.history: list[DialogState] = [self.state]

    # -- state ---------------------------------------------------------------------------------

    def _set_state(self, state: DialogState) -> None:
        if state not in _TRANSITIONS[self.state]:
            raise InvalidStateError(
                f"dialog {self.invite.call_id[:16]}: cannot go from {self.state.name} to {state.name}"
            )
        self.state = state
        self.history.append(state)
        if self.call is not None:  # once the call exists, its events show the dialog too
            self._emit_status(
                f"dialog-{state.value}", self.end_reason.value if self.end_reason else ""
            )
        if state is DialogState.TERMINATED:
            self._terminated()

    @property
    def is_reliable(self) -> bool:
        return self.peer.transport != "UDP"

    # -- LegTransport ----------------------------------------------------------------------

    @property
    def rate_hz(self) -> int:
        return RATE_HZ

    def clear_playout(self) -> None:
        """RTP is sent at real time: nothing is queued on the far side to drop."""

    def request_hangup(self, reason: EndReason) -> None:
        """End the call from our side: BYE once the dialog exists, 480 before. Idempotent."""
        if self.end_reason is None:
            self.end_reason = reason
        if self.state in (DialogState.ACCEPTED, DialogState.CONFIRMED):
            self._send_bye()
        elif self.state is DialogState.PROCEEDING:
            self.reject(487 if reason is EndReason.DRAIN else 500)

    # -- LegControl: cold transfer by REFER ------------------------------------------------

    def transfer(self, target: TransferTarget) -> None:
        """Send a REFER to ``target``; the outcome reaches the Call later (``on_transfer_result``)."""
        call = self.call
        if call is None:
            return
        if self._refer is not None and not self._refer.is_done:
            call.on_transfer_result(target, TransferOutcome.FAILED, "a transfer is in progress")
            return
        if self.state is not DialogState.CONFIRMED:
            call.on_transfer_result(
                target, TransferOutcome.FAILED, f"the dialog is {self.state.value}, not confirmed"
            )
            return
        try:
            uri = self._host.transfer_uri(target, self.peer)
        except SipParseError as exc:
            call.on_transfer_result(target, TransferOutcome.FAILED, str(exc))
            return
        data, cseq = self._request(
            "REFER", headers=[("Refer-To", f"<{uri}>"), ("Referred-By", self._contact)]
        )
        self._refer = Refer(target, cseq, uri)
        self._stats.refers_sent += 1
        log.info("sip call %s: REFER to %s (%s)", self.call_id, uri, target.destination)
        self._emit_status("refer-sent", uri)
        self._refer_tx = Retransmission(
            self._send,
            data,
            self._timers,
            self._stats,
            self._refer_gave_up,
            is_reliable=self.is_reliable,
        )
        self._refer_timer = asyncio.get_running_loop().call_later(
            self._host.refer_timeout_s, self._refer_timed_out
        )

    def _refer_gave_up(self) -> None:
        self._refer_tx = None
        refer = self._refer
        if refer is not None and refer.state is ReferState.SENT:
            why = f"no answer to the REFER within {self._timers.timeout_s:.0f} s"
            self._refer_done(refer.abandon(why))

    def _refer_timed_out(self) -> None:
        self._refer_timer = None
        if self._refer is not None:
            self._refer_done(self._refer.on_timeout(self._host.refer_timeout_s))

    def _stop_refer_timers(self) -> None:
        if self._refer_tx is not None:
            self._refer_tx.stop()
            self._refer_tx = None
        if self._refer_timer is not None:
            self._refer_timer.cancel()
            self._refer_timer = None

    def _refer_done(self, result: ReferResult | None) -> None:
        """Tell the Call what became of the transfer; after a hand-off, hang up our side."""
        refer = self._refer
        if result is None or refer is None:
            return
        self._stop_refer_timers()
        call = self.call
        if result.outcome is TransferOutcome.HANDED_OFF:
            self._stats.transfers_handed_off += 1
            log.info("sip call %s: transferred to %s: %s", self.call_id, refer.uri, result.detail)
            if call is not None:  # the Call ends itself (transferred); it does not hang us up
                call.on_transfer_result(refer.target, result.outcome, result.detail)
            if self.end_reason is None:  # the Call's reason: transferred, or overflow for a fault
                reason = getattr(call, "end_reason", None)
                self.end_reason = reason if isinstance(reason, EndReason) else EndReason.TRANSFERRED
            self._send_bye()
            return
        self._stats.transfers_failed += 1
        log.info("sip call %s: transfer to %s failed: %s", self.call_id, refer.uri, result.detail)
        if self.state in (DialogState.ACCEPTED, DialogState.CONFIRMED):
            self._emit_status("refer-failed", result.detail)
        if call is not None:
            call.on_transfer_result(refer.target, result.outcome, result.detail)

    def _abandon_refer(self, why: str) -> None:
        refer = self._refer
        if refer is not None and not refer.is_done:
            self._refer_done(refer.abandon(why))

    # -- the INVITE ------------------------------------------------------------------------

    def start(self) -> None:
        """Run the INVITE transaction (the server already sent 100 Trying)."""
        self._store(self.invite, build_response(self.invite, 100, source=self._source))
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"sip-invite-{self.call_id}"
        )

    @property
    def _source(self) -> tuple[str, int] | None:
        return (self.peer.host, self.peer.port) if self.peer.transport == "UDP" else None

    async def _run(self) -> None:
        try:
            await self._answer()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sip dialog %s: answering failed", self.call_id)
            if self.state is DialogState.PROCEEDING:
                self.reject(500)

    async def _answer(self) -> None:
        invite = self.invite
        try:
            offer = parse_sdp(invite.body) if invite.body else None
            if offer is None:
                raise SdpError("INVITE without an SDP offer (delayed offer is not supported)")
            plan = negotiate(offer)
        except SdpError as exc:
            log.info("sip call %s: 488: %s", invite.call_id, exc)
            self._stats.invites_not_acceptable += 1
            self.reject(488, [("Warning", '304 VoiceGate "media type not available"')])
            return
        self.plan = plan
        # not cancelled while binding: a cancelled bind can leave its socket open (uvloop)
        self._is_binding = True
        try:
            session = await self._host.open_media(
                plan, self._on_media_timeout, signalling_host=self.peer.host
            )
        except SipError as exc:
            log.error("sip call %s: %s", invite.call_id, exc)
            self.reject(503, [("Retry-After", "5")])
            return
        finally:
            self._is_binding = False
        if self.state is not DialogState.PROCEEDING or self._is_closed:  # CANCEL while binding
            session.close_nowait()
            return
        self.session = session
        self._respond(invite, 180, headers=self._dialog_headers())
        if self._answer_delay_s > 0:
            await asyncio.sleep(self._answer_delay_s)
            if self.state is not DialogState.PROCEEDING:
                return
        info = CallInfo(
            call_id=self.call_id,
            leg="sip",
            persona=self.persona,
            from_=_user_or_uri(invite.from_.uri),
            to=_user_or_uri(invite.to.uri),
            leg_call_ref=invite.call_id[:128],
            call_data=_x_headers(invite),
        )
        prepare = getattr(self._host, "prepare_call", None)  # the call-start webhook
        try:
            if prepare is not None:
                info = await prepare(info)
                if self.state is not DialogState.PROCEEDING or self._is_closed:  # CANCEL
                    session.close_nowait()
                    return
            call = self._host.start_call(info, self)
        except CallRefused as exc:
            log.info("sip call %s: 603: %s", invite.call_id, exc)
            self._stats.invites_busy += 1
            self.reject(603)
            return
        except NoFreeSlot as exc:
            log.info("sip call %s: busy: %s", invite.call_id, exc)
            self.refuse_busy()
            return
        except VoiceGateError as exc:
            log.error("sip call %s could not start: %s", invite.call_id, exc)
            self.reject(500)
            return
        self.call = call
        session.attach(call)
        session.start()
        self.is_hold = plan.is_hold
        body = self._answer_sdp(plan)
        data = build_response(
            invite,
            200,
            to_tag=self.local_tag,
            body=body,
            headers=self._dialog_headers(),
            source=self._source,
        )
        self._set_state(DialogState.ACCEPTED)
        self._store(invite, data)
        self._invite_tx = Retransmission(
            self._send,
            data,
            self._timers,
            self._stats,
            self._on_no_ack,
            is_reliable=self.is_reliable,
        )
        log.info(
            "sip call %s (%s) answered: persona %s, %s pt %d, dtmf pt %s, rtp %d <-> %s:%d",
            self.call_id,
            invite.call_id,
            self.persona,
            plan.codec,
            plan.codec_pt,
            plan.dtmf_pt,
            session.local_port,
            plan.remote_host,
            plan.remote_port,
        )

    def _answer_sdp(self, plan: MediaPlan) -> bytes:
        assert self.session is not None
        self._sdp_version += 1
        return build_answer(
            plan,
            local_host=self.local_host,
            local_port=self.session.local_port,
            session_id=self._session_id,
            version=self._sdp_version,
        )

    def _dialog_headers(self) -> list[tuple[str, str]]:
        headers = [("Contact", self._contact), ("Allow", ALLOW)]
        headers.extend(("Record-Route", r) for r in self._routes)
        return headers

    def reject(self, code: int, headers: list[tuple[str, str]] | None = None) -> None:
        if self.state is not DialogState.PROCEEDING:
            return
        data = build_response(
            self.invite, code, to_tag=self.local_tag, headers=headers or [], source=self._source
        )
        self._store(self.invite, data)
        self._set_state(DialogState.TERMINATED)
        self._invite_tx = Retransmission(
            self._send, data, self._timers, self._stats, None, is_reliable=self.is_reliable
        )

    def refuse_busy(self) -> None:
        """No slot, or draining: 302 to the overflow destination when one is set, else 486."""
        try:
            overflow = self._host.overflow_uri(self.invite, self.peer)
        except Exception:
            log.exception("sip call %s: overflow lookup failed", self.invite.call_id)
            overflow = ""
        if overflow:
            self._stats.invites_redirected += 1
            log.info("sip call %s: 302 to the overflow %s", self.invite.call_id, overflow)
            self.reject(302, [("Contact", f"<{overflow}>")])
        else:
            self._stats.invites_busy += 1
            self.reject(486)

    def _on_no_ack(self) -> None:
        if self.state is DialogState.ACCEPTED:
            log.warning(
                "sip call %s: no ACK within %.0f s, hanging up",
                self.call_id,
                self._timers.timeout_s,
            )
            self._stats.no_ack_hangups += 1
            self._end_call(EndReason.MEDIA_TIMEOUT, "no ACK for the 200 OK", send_bye=True)

    def _on_media_timeout(self, detail: str) -> None:
        log.warning("sip call %s: media timeout: %s", self.call_id, detail)
        self._end_call(EndReason.MEDIA_TIMEOUT, detail, send_bye=True)

    def _end_call(self, reason: EndReason, detail: str, *, send_bye: bool) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        if send_bye and self.state in (DialogState.ACCEPTED, DialogState.CONFIRMED):
            self._send_bye()
        call = self.call
        if call is None:
            return
        if send_bye:
            call.end(reason, detail)
        else:
            call.on_leg_closed(reason)

    # -- in-dialog requests ----------------------------------------------------------------

    def on_request(self, request: SipRequest, peer: Peer) -> None:
        """A request with this dialog's Call-ID (the server checked the tags)."""
        stored = self._responses.get((request.method, request.cseq))
        if stored is not None and request.method != "ACK":
            self._stats.retransmissions_absorbed += 1
            peer.send(stored)
            return
        method = request.method
        if method == "ACK":
            self._on_ack(request)
        elif method == "BYE":
            self._on_bye(request, peer)
        elif method == "CANCEL":
            self._on_cancel(request, peer)
        elif method == "INVITE":
            if request.cseq == self.invite.cseq and request.branch == self.invite.branch:
                self._stats.retransmissions_absorbed += 1  # answered by the stored 100 above
                return
            self._on_reinvite(request, peer)
        elif method in ("OPTIONS", "INFO", "UPDATE"):
            self._on_simple(request, peer)
        elif method == "NOTIFY":
            self._on_notify(request, peer)
        else:
            peer.send(build_response(request, 405, headers=[("Allow", ALLOW)]))

    def _on_ack(self, request: SipRequest) -> None:
        if request.cseq == self.invite.cseq:
            if self._invite_tx is not None:
                self._invite_tx.stop()
                self._invite_tx = None
            if self.state is DialogState.ACCEPTED:
                self._set_state(DialogState.CONFIRMED)
        elif request.cseq == self._reinvite_cseq and self._reinvite_tx is not None:
            self._reinvite_tx.stop()
            self._reinvite_tx = None
            self._reinvite_cseq = None

    def _on_bye(self, request: SipRequest, peer: Peer) -> None:
        self._respond(request, 200, peer=peer)
        if self.state in (DialogState.ACCEPTED, DialogState.CONFIRMED, DialogState.TERMINATING):
            if self._invite_tx is not None:
                self._invite_tx.stop()
            self._set_state(DialogState.TERMINATED)
            self._abandon_refer("the caller's side hung up before the transfer's outcome")
            if self.call is not None:
                self.call.on_leg_closed(self.end_reason or EndReason.CALLER_HANGUP)

    def _on_cancel(self, request: SipRequest, peer: Peer) -> None:
        if request.cseq != self.invite.cseq or (
            request.branch and request.branch != self.invite.branch
        ):
            peer.send(build_response(request, 481, source=self._source))
            return
        self._respond(request, 200, peer=peer)
        if self.state is DialogState.PROCEEDING:
            self._stats.invites_cancelled += 1
            log.info("sip call %s: cancelled before answer", self.invite.call_id)
            self.reject(487)

    def _on_reinvite(self, request: SipRequest, peer: Peer) -> None:
        self._stats.reinvites += 1
        if request.cseq < self._remote_cseq:
            peer.send(build_response(request, 500, source=self._source))
            return
        if self.state is not DialogState.CONFIRMED or self._reinvite_tx is not None:
            self._respond(request, 491, peer=peer)
            return
        self._remote_cseq = request.cseq
        plan = self.plan
        assert plan is not None and self.session is not None
        if request.body:
            try:
                plan = negotiate(parse_sdp(request.body))
            except SdpError as exc:
                log.info("sip call %s: re-INVITE refused (488): %s", self.call_id, exc)
                self._respond(request, 488, peer=peer)
                return
            self._apply_plan(plan)
        body = self._answer_sdp(plan)
        data = build_response(
            request,
            200,
            to_tag=self.local_tag,
            body=body,
            headers=self._dialog_headers(),
            source=self._source,
        )
        self._store(request, data)
        self._reinvite_cseq = request.cseq
        self._reinvite_tx = Retransmission(
            peer.send,
            data,
            self._timers,
            self._stats,
            self._reinvite_gave_up,
            is_reliable=self.is_reliable,
        )

    def _reinvite_gave_up(self) -> None:
        self._reinvite_tx = None
        self._reinvite_cseq = None

    def _apply_plan(self, plan: MediaPlan) -> None:
        assert self.session is not None
        was_hold = self.is_hold
        old = self.plan
        self.plan = plan
        self.session.update(plan)
        self.is_hold = plan.is_hold
        if was_hold != self.is_hold:
            status = "hold" if self.is_hold else "unhold"
        elif old is not None and (old.remote_host, old.remote_port) != (
            plan.remote_host,
            plan.remote_port,
        ):
            status = "media-moved"
        else:
            status = "media-updated"
        detail = f"{plan.remote_direction.value} {plan.remote_host}:{plan.remote_port} {plan.codec}"
        log.info("sip call %s: re-INVITE: %s (%s)", self.call_id, status, detail)
        self._emit_status(status, detail)

    def _on_simple(self, request: SipRequest, peer: Peer) -> None:
        if request.method == "INFO" and self.call is not None:
            digit = info_dtmf_digit(request)
            if digit is not None:
                self._stats.dtmf_digits += 1
                self.call.on_dtmf(digit)
        if request.method == "UPDATE" and request.body and self.session is not None:
            try:
                plan = negotiate(parse_sdp(request.body))
            except SdpError:
                self._respond(request, 488, peer=peer)
                return
            self._apply_plan(plan)
            self._respond(request, 200, peer=peer, body=self._answer_sdp(plan))
            return
        self._respond(request, 200, peer=peer, headers=[("Allow", ALLOW)])

    def _on_notify(self, request: SipRequest, peer: Peer) -> None:
        """Progress of our REFER (RFC 3515 2.4.4): 200, then the outcome if it is final."""
        refer = self._refer
        event = (request.header("Event") or request.header("o") or "").strip()
        package, _, params = event.partition(";")
        event_id = ""
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "id":
                event_id = value.strip()
        if package.strip().lower() != "refer":
            self._respond(request, 489, peer=peer, headers=[("Allow-Events", "refer")])
            return
        if (
            refer is None
            or refer.is_done
            or self.state is not DialogState.CONFIRMED
            or (event_id and event_id != str(refer.cseq))
        ):
            self._stats.unknown_dialog += 1
            self._respond(request, 481, peer=peer)  # no such subscription (any more)
            return
        if request.cseq < self._remote_cseq:
            self._respond(request, 500, peer=peer)
            return
        self._remote_cseq = request.cseq
        try:
            sub = parse_subscription_state(request.header("Subscription-State"))
            frag: SipFrag | None = None
            if request.body.strip():
                if request.content_type != "message/sipfrag":
                    raise SipParseError(f"NOTIFY body of type {request.content_type!r}")
                frag = parse_sipfrag(request.body)
        except SipParseError as exc:
            log.info("sip call %s: bad NOTIFY (400): %s", self.call_id, exc)
            warning = f'399 VoiceGate "{str(exc)[:120]}"'
            self._respond(request, 400, peer=peer, headers=[("Warning", warning)])
            return
        self._respond(request, 200, peer=peer)
        self._stats.refer_notifies += 1
        if frag is not None:
            self._emit_status("refer-progress", f"{frag} ({sub.state})")
        self._refer_done(refer.on_notify(frag, sub))

    def on_response(self, response: SipResponse) -> None:
        """A response to our BYE ends the dialog; one to our REFER moves the transfer on."""
        if response.cseq_method == "REFER":
            self._on_refer_response(response)
            return
        if response.cseq_method == "BYE" and response.code >= 200 and self._bye_tx is not None:
            self._bye_tx.stop()
            self._bye_tx = None
            if self.state is DialogState.TERMINATING:
                self._set_state(DialogState.TERMINATED)

    def _on_refer_response(self, response: SipResponse) -> None:
        refer = self._refer
        if refer is None or response.cseq != refer.cseq or response.code < 200:
            return
        if self._refer_tx is not None:
            self._refer_tx.stop()
            self._refer_tx = None
        if response.code >= 300:
            self._stats.refers_refused += 1
        refer_sub = (response.raw.headers.get("Refer-Sub") or "true").strip().lower() != "false"
        self._refer_done(refer.on_response(response.code, response.phrase, refer_sub=refer_sub))

    # -- our requests ----------------------------------------------------------------------

    def _request(
        self, method: str, headers: list[tuple[str, str]] | None = None
    ) -> tuple[bytes, int]:
        """An in-dialog request of ours with the next CSeq: (bytes, cseq)."""
        self._local_cseq += 1
        invite = self.invite
        via = f"SIP/2.0/{self.peer.transport} {self._via_host()};branch={new_branch()};rport"
        data = build_request(
            method,
            self._remote_target,
            via=via,
            from_=f"{invite.raw.headers['To']};tag={self.local_tag}",
            to=invite.raw.headers["From"],
            call_id=invite.call_id,
            cseq=self._local_cseq,
            contact=self._contact,
            routes=self._routes,
            headers=headers or [],
        )
        return data, self._local_cseq

    def _send_bye(self) -> None:
        if self.state not in (DialogState.ACCEPTED, DialogState.CONFIRMED):
            return
        if self._invite_tx is not None:
            self._invite_tx.stop()
            self._invite_tx = None
        data, _ = self._request("BYE")
        self._set_state(DialogState.TERMINATING)
        reason = self.end_reason.value if self.end_reason else "hang-up"
        self._abandon_refer(f"the call ended ({reason}) before the transfer's outcome")
        if self.session is not None:
            self.session.close_nowait()
        self._bye_tx = Retransmission(
            self._send,
            data,
            self._timers,
            self._stats,
            self._bye_gave_up,
            is_reliable=self.is_reliable,
        )

    def _via_host(self) -> str:
        return self._contact.split("@", 1)[-1].split(";", 1)[0].rstrip(">")

    def _bye_gave_up(self) -> None:
        self._bye_tx = None
        if self.state is DialogState.TERMINATING:
            self._set_state(DialogState.TERMINATED)

    # -- plumbing --------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        try:
            self.peer.send(data)
        except Exception:  # a closed TCP connection: the retransmission timer gives up later
            log.debug("sip dialog %s: send failed", self.call_id)

    def _respond(
        self,
        request: SipRequest,
        code: int,
        *,
        peer: Peer | None = None,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        data = build_response(
            request,
            code,
            to_tag=self.local_tag,
            body=body,
            headers=headers or [],
            source=self._source,
        )
        if code >= 200 or request.method == "INVITE":
            self._store(request, data)
        (peer.send if peer is not None else self._send)(data)

    def _store(self, request: SipRequest, data: bytes) -> None:
        responses = self._responses
        responses[(request.method, request.cseq)] = data
        if len(responses) > MAX_STORED_RESPONSES:  # a chatty peer: keep the INVITE's and the latest
            for key in list(responses)[1 : -MAX_STORED_RESPONSES // 2]:
                del responses[key]

    def _emit_status(self, status: str, detail: str) -> None:
        call = self.call
        t_ms = int(getattr(call, "now_ms", 0)) if call is not None else 0
        try:
            self._host.leg_status(self.call_id, max(0, t_ms), status, detail)
        except Exception:
            log.exception("sip call %s: status event failed", self.call_id)

    def _terminated(self) -> None:
        self._stop_refer_timers()
        if self.session is not None:
            self.session.close_nowait()
        if self._reinvite_tx is not None:
            self._reinvite_tx.stop()
            self._reinvite_tx = None
        self._cancel_task()
        # linger for 64*T1 to absorb retransmissions and the ACK of a final response
        loop = asyncio.get_running_loop()
        self._linger = loop.call_later(self._timers.timeout_s, self._forget)
        self._host.dialog_ended(self)

    def _forget(self) -> None:
        self._linger = None
        if self._invite_tx is not None:
            self._invite_tx.stop()
            self._invite_tx = None
        if self._bye_tx is not None:
            self._bye_tx.stop()
            self._bye_tx = None
        forget = getattr(self._host, "forget", None)
        if callable(forget):
            forget(self)

    def close(self) -> None:
        """Drop every timer and task (server shutdown)."""
        for tx in (self._invite_tx, self._reinvite_tx, self._bye_tx):
            if tx is not None:
                tx.stop()
        self._stop_refer_timers()
        self._is_closed = True
        if self._linger is not None:
            self._linger.cancel()
        self._cancel_task()
        if self.session is not None:
            self.session.close_nowait()

    def _cancel_task(self) -> None:
        task = self._task
        if task is None or task.done() or task is asyncio.current_task() or self._is_binding:
            return  # a binding task sees the new state when the bind returns
        task.cancel()


def _user_or_uri(uri: object) -> str:
    user = getattr(uri, "user", None)
    return str(user) if user else str(uri)
